//! The image configuration, kept as the exact JSON the source had.
//!
//! whittle rewrites only `rootfs.diff_ids` and `history`; everything else (including fields the
//! OCI spec does not define, like Docker's `Healthcheck`) must survive a round trip untouched,
//! so the document is held as a JSON value and typed access goes through [`ConfigView`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{Digest, Error, Result};

/// `SOURCE_DATE_EPOCH` as an RFC 3339 time, when set: the only clock whittle's outputs use
/// besides the source's own `created`.
pub fn source_date_epoch() -> Option<String> {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub value: Value,
}

/// The runtime part of a config (`.config`), with the fields whittle reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConfigView {
    #[serde(rename = "User")]
    pub user: Option<String>,
    #[serde(rename = "Env")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    pub working_dir: Option<String>,
    #[serde(rename = "ExposedPorts")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(rename = "Volumes")]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "StopSignal")]
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::format(path, format!("malformed image config JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::format(path, "image config is not a JSON object"));
        }
        let config = ImageConfig { value };
        // Validate the parts whittle relies on now, so a broken config fails at open time
        // with its path rather than later with none.
        config
            .diff_ids()
            .map_err(|m| Error::format(path, format!("image config: {m}")))?;
        serde_json::from_value::<ConfigView>(
            config.value.get("config").cloned().unwrap_or(json!({})),
        )
        .map_err(|e| Error::format(path, format!("image config: .config: {e}")))?;
        Ok(config)
    }

    /// A config for an image that has none (a bare root file system).
    pub fn empty() -> Self {
        ImageConfig {
            value: json!({
                "architecture": host_arch(),
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }),
        }
    }

    pub fn diff_ids(&self) -> std::result::Result<Vec<Digest>, String> {
        let Some(rootfs) = self.value.get("rootfs") else {
            return Ok(Vec::new());
        };
        let Some(ids) = rootfs.get("diff_ids") else {
            return Ok(Vec::new());
        };
        let ids = ids.as_array().ok_or("rootfs.diff_ids is not an array")?;
        ids.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| "rootfs.diff_ids has a non-string entry".to_string())?
                    .parse::<Digest>()
                    .map_err(|e| format!("rootfs.diff_ids: {e}"))
            })
            .collect()
    }

    pub fn set_diff_ids(&mut self, ids: &[Digest]) {
        let ids: Vec<Value> = ids.iter().map(|d| Value::String(d.to_string())).collect();
        let obj = self.value.as_object_mut().expect("validated as object");
        obj.insert("rootfs".into(), json!({"type": "layers", "diff_ids": ids}));
    }

    pub fn view(&self) -> ConfigView {
        self.value
            .get("config")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    pub fn history(&self) -> Vec<Value> {
        self.value
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// For each layer (by index), the `created_by` of its history entry, if the history lines up
    /// with the layers (entries with `empty_layer: true` have no layer).
    pub fn layer_history(&self) -> Vec<Option<String>> {
        self.history()
            .iter()
            .filter(|h| {
                !h.get("empty_layer")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            })
            .map(|h| {
                h.get("created_by")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }

    pub fn created(&self) -> Option<String> {
        self.value
            .get("created")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn architecture(&self) -> String {
        self.value
            .get("architecture")
            .and_then(Value::as_str)
            .unwrap_or("amd64")
            .to_string()
    }

    pub fn os(&self) -> String {
        self.value
            .get("os")
            .and_then(Value::as_str)
            .unwrap_or("linux")
            .to_string()
    }

    /// The canonical serialized form written to disk: compact, key order as read (the
    /// `preserve_order` feature), so identical input gives identical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.value).expect("a JSON value always serializes")
    }
}

/// Go's GOARCH name of the machine we run on, which is what image configs use.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_and_rejects_bad_diff_ids() {
        let raw = br#"{"config":{"Healthcheck":{"Test":["CMD","true"]},"Cmd":["a"]},"rootfs":{"type":"layers","diff_ids":[]},"zz":1}"#;
        let mut c = ImageConfig::parse(raw, Path::new("c.json")).unwrap();
        c.set_diff_ids(&[Digest::of(b"x")]);
        let out = String::from_utf8(c.to_bytes()).unwrap();
        assert!(
            out.contains("Healthcheck") && out.contains("\"zz\":1"),
            "{out}"
        );
        assert_eq!(c.view().cmd, Some(vec!["a".to_string()]));

        let bad = br#"{"rootfs":{"diff_ids":["md5:00"]}}"#;
        let e = ImageConfig::parse(bad, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.json: image config: rootfs.diff_ids"),
            "{e}"
        );
        let e = ImageConfig::parse(b"{", Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed image config JSON"), "{e}");
    }

    /// Caught by the `image_json` fuzz target: serde_json's default float parser is not
    /// correctly rounded, so a number in a config could change in its last digit each time
    /// the config was read and written again (squashing a squashed image, for one).
    #[test]
    fn numbers_keep_their_value_when_read_and_written_again() {
        let big = "6".repeat(84) + "2";
        let texts = [
            big.as_str(),
            "6.6666666666666667e+84",
            "0.30000000000000004",
        ];
        let raw = format!("{{\"n\":[{}]}}", texts.join(","));
        let once = ImageConfig::parse(raw.as_bytes(), Path::new("c.json")).unwrap();
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(
                once.value["n"][i].as_f64(),
                text.parse::<f64>().ok(),
                "{text}"
            );
        }
        let bytes = once.to_bytes();
        let twice = ImageConfig::parse(&bytes, Path::new("c.json")).unwrap();
        assert_eq!(
            String::from_utf8(twice.to_bytes()).unwrap(),
            String::from_utf8(bytes).unwrap()
        );
    }
}
