//! A real rsyslogd for the log tests: its own config, work directory, pid file and loopback
//! ports (imrelp and imtcp), writing every message to a file with a template the tests parse.
//! It never touches /dev/log (no imuxsock) and is stopped by its pid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::runtime::{free_port, wait_for, Daemon};
use crate::os;

pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// One rsyslogd and the file it writes.
#[derive(Debug)]
pub struct Rsyslog {
    pub dir: PathBuf,
    pub relp_port: u16,
    pub tcp_port: u16,
    /// Every message: `MSGID APP-NAME SD-or-dash TIMEREPORTED MSG` (one line each).
    pub out: PathBuf,
    daemon: Option<Daemon>,
    starts: u32,
}

impl Rsyslog {
    /// Writes the config into `dir` and starts rsyslogd (unless `start` is false: then the ports
    /// are reserved and nothing listens yet).
    pub fn new(dir: &Path, start: bool) -> Rsyslog {
        super::require(RSYSLOGD);
        assert!(
            Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so").exists(),
            "these tests need rsyslog's RELP input: install it with `apt-get install rsyslog-relp`"
        );
        let work = dir.join("work");
        std::fs::create_dir_all(&work).expect("rsyslog work dir");
        let relp_port = free_port();
        let tcp_port = free_port();
        let out = dir.join("received.log");
        // Direct queues: imrelp acknowledges a message only once omfile has written it, so a
        // stopped rsyslog loses nothing it acknowledged. Control characters are kept as they
        // came and messages may be up to 1 MiB.
        let conf = format!(
            r#"global(workDirectory="{work}" maxMessageSize="1100k" parser.escapeControlCharactersOnReceive="off")
main_queue(queue.type="Direct")
module(load="imrelp")
module(load="imtcp" maxSessions="200")
input(type="imrelp" port="{relp_port}" address="127.0.0.1" maxDataSize="1100k")
input(type="imtcp" port="{tcp_port}" address="127.0.0.1")
template(name="whittle_test" type="string" string="%msgid% %app-name% %structured-data% %timereported:::date-rfc3339% %msg%\n")
action(type="omfile" file="{out}" template="whittle_test" flushOnTXEnd="on" asyncWriting="off")
"#,
            work = work.display(),
            out = out.display(),
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).expect("rsyslog.conf");
        let mut r = Rsyslog {
            dir: dir.to_path_buf(),
            relp_port,
            tcp_port,
            out,
            daemon: None,
            starts: 0,
        };
        if start {
            r.start();
        }
        r
    }

    /// Starts rsyslogd (again) with the same config and ports; waits until RELP listens.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "rsyslogd is already running");
        self.starts += 1;
        let conf = self.dir.join("rsyslog.conf");
        let pid = self.dir.join("rsyslogd.pid");
        let log = self.dir.join(format!("rsyslogd-{}.log", self.starts));
        let d = Daemon::start(
            "rsyslogd",
            RSYSLOGD,
            &os!["-n", "-f", conf, "-i", pid],
            &[],
            &log,
        );
        self.daemon = Some(d);
        let port = self.relp_port;
        wait_for(
            "rsyslogd listening for RELP",
            Duration::from_secs(20),
            || {
                if let Some(d) = self.daemon.as_mut() {
                    d.assert_running();
                }
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            },
        );
    }

    /// Stops rsyslogd with SIGTERM (an outage; what it acknowledged is in the file).
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop_with(libc::SIGTERM, Duration::from_secs(15));
        }
    }

    pub fn relp_url(&self) -> String {
        format!("relp://127.0.0.1:{}", self.relp_port)
    }

    pub fn tcp_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.tcp_port)
    }

    /// The received lines, split (messages never contain a newline in these tests).
    pub fn lines(&self) -> Vec<Vec<u8>> {
        let b = std::fs::read(&self.out).unwrap_or_default();
        b.split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One line of the file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub msgid: String,
    pub app: String,
    /// SD params of `whittle@32473`.
    pub sd: std::collections::BTreeMap<String, String>,
    pub timereported: String,
    pub msg: Vec<u8>,
}

/// Parses `MSGID APP [SD] TIME MSG`.
pub fn parse_line(l: &[u8]) -> Option<Received> {
    let sp = |b: &[u8]| b.iter().position(|&c| c == b' ');
    let i = sp(l)?;
    let msgid = String::from_utf8_lossy(&l[..i]).into_owned();
    let l = &l[i + 1..];
    let i = sp(l)?;
    let app = String::from_utf8_lossy(&l[..i]).into_owned();
    let mut l = &l[i + 1..];
    let mut sd = std::collections::BTreeMap::new();
    if l.first() == Some(&b'[') {
        // Params are key="value" with \" \\ \] escapes; the element ends at an unescaped ].
        let mut j = 1;
        let mut key = String::new();
        let mut val = Vec::new();
        let mut in_val = false;
        let mut esc = false;
        let mut reading_key = false;
        while j < l.len() {
            let c = l[j];
            if in_val {
                if esc {
                    val.push(c);
                    esc = false;
                } else if c == b'\\' {
                    esc = true;
                } else if c == b'"' {
                    in_val = false;
                    sd.insert(
                        std::mem::take(&mut key),
                        String::from_utf8_lossy(&std::mem::take(&mut val)).into_owned(),
                    );
                } else {
                    val.push(c);
                }
            } else if c == b']' {
                break;
            } else if c == b' ' {
                reading_key = true;
                key.clear();
            } else if c == b'=' {
                reading_key = false;
            } else if c == b'"' {
                in_val = true;
            } else if reading_key {
                key.push(c as char);
            }
            j += 1;
        }
        l = &l[(j + 2).min(l.len())..];
    } else {
        let i = sp(l)?;
        l = &l[i + 1..];
    }
    let i = sp(l).unwrap_or(l.len());
    let timereported = String::from_utf8_lossy(&l[..i]).into_owned();
    let msg = l.get(i + 1..).unwrap_or_default().to_vec();
    Some(Received {
        msgid,
        app,
        sd,
        timereported,
        msg,
    })
}
