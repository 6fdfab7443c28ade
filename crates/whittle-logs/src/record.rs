//! One log record as it is spooled, and how each sink writes it.
//!
//! RFC 5424 allows six fractional digits in TIMESTAMP (and rsyslog mangles more), so the header
//! carries microseconds and the structured data the engine's full nanoseconds, the container and
//! a per-stream sequence number: what a central side needs to drop the duplicates at-least-once
//! delivery can produce (key: `id`, `stream`, `seq`).

use std::time::{Duration, UNIX_EPOCH};

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Stdout,
    Stderr,
    /// A datagram on the `/dev/log` socket of `logs devlog`.
    Devlog,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Devlog => "devlog",
        }
    }
}

/// A record in the spool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Full container id (empty when a devlog sender could not be matched to a container).
    pub id: String,
    pub name: String,
    pub image: String,
    pub service: Option<String>,
    pub task: Option<String>,
    pub source: Source,
    /// The sender's own PRI (devlog); stdout is user.info, stderr user.err.
    pub pri: Option<u8>,
    /// The engine's timestamp (devlog: the receive time), nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Per (container, stream) sequence number, from 1, stable across restarts.
    pub seq: u64,
    /// 0 for a whole line, 1.. for the parts of a line longer than the record limit.
    pub part: u32,
    /// More parts of the same line follow.
    pub more: bool,
    /// The line ended without a newline.
    pub no_newline: bool,
    /// devlog: the sender's pid.
    pub pid: Option<u32>,
    /// As bytes, not a sequence of u8: serde would otherwise encode and decode it one byte at a
    /// time (postcard's encoding is the same either way: a length, then the bytes).
    #[serde(with = "serde_bytes")]
    pub msg: Vec<u8>,
}

/// The private enterprise number RFC 5612 reserves for documentation: the SD-ID is
/// `whittle@32473`.
pub const SD_ID: &str = "whittle@32473";

fn system_time(ts_ns: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ts_ns)
}

/// RFC 3339 with nanoseconds, as the engine prints it.
pub fn ts_nanos(ts_ns: u64) -> String {
    humantime::format_rfc3339_nanos(system_time(ts_ns)).to_string()
}

fn ts_micros(ts_ns: u64) -> String {
    humantime::format_rfc3339_micros(system_time(ts_ns)).to_string()
}

/// An RFC 5424 PARAM-VALUE: `"`, `\` and `]` escaped.
fn sd_escape(out: &mut Vec<u8>, v: &str) {
    for b in v.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// 1*N PRINTUSASCII, `-` when empty.
fn header_field(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

impl Record {
    /// user.info for stdout, user.err for stderr, the sender's own for devlog.
    pub fn pri(&self) -> u8 {
        self.pri.unwrap_or(match self.source {
            Source::Stderr => 8 + 3,
            _ => 8 + 6,
        })
    }

    /// The RFC 5424 message (no framing, no trailing newline).
    pub fn rfc5424(&self, hostname: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.msg.len() + 320);
        let head = format!(
            "<{}>1 {} {} {} {} {} ",
            self.pri(),
            ts_micros(self.ts_ns),
            header_field(hostname, 255),
            header_field(&self.name, 48),
            header_field(&self.id[..self.id.len().min(12)], 128),
            self.source.as_str(),
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(b"[");
        out.extend_from_slice(SD_ID.as_bytes());
        let mut param = |k: &str, v: &str| {
            out.extend_from_slice(format!(" {k}=\"").as_bytes());
            sd_escape(&mut out, v);
            out.push(b'"');
        };
        param("id", &self.id);
        param("image", &self.image);
        param("ts", &ts_nanos(self.ts_ns));
        param("seq", &self.seq.to_string());
        if let Some(s) = &self.service {
            param("service", s);
        }
        if let Some(t) = &self.task {
            param("task", t);
        }
        if let Some(p) = self.pid {
            param("pid", &p.to_string());
        }
        if self.part > 0 {
            param("part", &self.part.to_string());
            param("more", if self.more { "1" } else { "0" });
        }
        if self.no_newline {
            param("newline", "0");
        }
        out.extend_from_slice(b"] ");
        out.extend_from_slice(&self.msg);
        out
    }

    /// One JSON line for the file sink (with its newline). Valid UTF-8 goes in `msg`; anything
    /// else in `msg_hex`, so the bytes survive exactly.
    pub fn json_line(&self) -> Vec<u8> {
        let mut v = serde_json::json!({
            "ts": ts_nanos(self.ts_ns),
            "id": self.id,
            "name": self.name,
            "image": self.image,
            "stream": self.source.as_str(),
            "seq": self.seq,
        });
        let m = v.as_object_mut().expect("an object");
        if let Some(s) = &self.service {
            m.insert("service".into(), s.clone().into());
        }
        if let Some(t) = &self.task {
            m.insert("task".into(), t.clone().into());
        }
        if let Some(p) = self.pid {
            m.insert("pid".into(), p.into());
        }
        if self.part > 0 {
            m.insert("part".into(), self.part.into());
            m.insert("more".into(), self.more.into());
        }
        if self.no_newline {
            m.insert("newline".into(), false.into());
        }
        match std::str::from_utf8(&self.msg) {
            Ok(s) => m.insert("msg".into(), s.into()),
            Err(_) => m.insert("msg_hex".into(), hex(&self.msg).into()),
        };
        let mut line = serde_json::to_vec(&v).expect("JSON of plain values");
        line.push(b'\n');
        line
    }
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[usize::from(x >> 4)] as char);
        s.push(D[usize::from(x & 15)] as char);
    }
    s
}

/// This host's name for the HOSTNAME field.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            id: "0123456789abcdef0123".into(),
            name: "web".into(),
            image: "img:1".into(),
            service: None,
            task: None,
            source: Source::Stderr,
            pri: None,
            ts_ns: 1_796_407_200_123_456_789,
            seq: 7,
            part: 0,
            more: false,
            no_newline: false,
            pid: None,
            msg: b"a \"q\" ]".to_vec(),
        }
    }

    #[test]
    fn rfc5424_header_and_structured_data() {
        let s = String::from_utf8(rec().rfc5424("h")).unwrap();
        assert_eq!(
            s,
            "<11>1 2026-12-04T18:00:00.123456Z h web 0123456789ab stderr [whittle@32473 \
             id=\"0123456789abcdef0123\" image=\"img:1\" ts=\"2026-12-04T18:00:00.123456789Z\" \
             seq=\"7\"] a \"q\" ]"
        );
    }

    #[test]
    fn json_keeps_non_utf8_bytes() {
        let mut r = rec();
        r.msg = vec![0xff, 0, b'a'];
        let v: serde_json::Value = serde_json::from_slice(&r.json_line()).unwrap();
        assert_eq!(v["msg_hex"], "ff0061");
        assert_eq!(v["seq"], 7);
    }
}
