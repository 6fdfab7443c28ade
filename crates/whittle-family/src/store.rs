//! What a family keeps between builds: the lock (the base layer, fixed until `--rebase`) and
//! the per-member cache (what a member's trace and verification found), both JSON.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use whittle_fstree::display_path;

use crate::Error;

pub const LOCK_SCHEMA: &str = "whittle.family-lock/v1";
pub const CACHE_SCHEMA: &str = "whittle.family-cache/v1";

/// The lock: the shared base layer's diff_id and file list, and the base layers it was cut
/// from (a lock made for another base is refused, not silently applied).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lock {
    pub schema: String,
    /// diff_ids of the base image's layers the base layer was made from.
    pub source_layers: Vec<String>,
    /// diff_id of the slim base layer.
    pub diff_id: String,
    /// Absolute paths in the slim base layer, sorted (directories on the way included).
    pub files: Vec<String>,
}

impl Lock {
    pub fn read(path: &Path) -> Result<Option<Lock>, Error> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::file(path, e.to_string())),
        };
        let lock: Lock = serde_json::from_slice(&bytes)
            .map_err(|e| Error::file(path, format!("not a family lock: {e}")))?;
        if lock.schema != LOCK_SCHEMA {
            return Err(Error::file(
                path,
                format!("schema {:?}, expected {LOCK_SCHEMA:?}", lock.schema),
            ));
        }
        Ok(Some(lock))
    }

    /// Tree keys (no leading `/`).
    pub fn keys(&self) -> BTreeSet<Vec<u8>> {
        self.files
            .iter()
            .map(|f| f.trim_start_matches('/').as_bytes().to_vec())
            .collect()
    }

    pub fn new(source_layers: Vec<String>, diff_id: String, keys: &BTreeSet<Vec<u8>>) -> Lock {
        Lock {
            schema: LOCK_SCHEMA.into(),
            source_layers,
            diff_id,
            files: keys.iter().map(|k| display_path(k)).collect(),
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("serializable");
        bytes.push(b'\n');
        whittle_image::write::write_file(path, &bytes)?;
        Ok(())
    }
}

/// One member's cached result, keyed by (source config digest, args, whittle version).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub schema: String,
    pub source_config_digest: String,
    pub args: Vec<String>,
    pub version: String,
    /// The member's own selection (hex tree keys): what a base is computed from.
    pub own: Vec<String>,
    /// The selection as verified on the base below (own + the base paths it shares).
    pub composed: Vec<String>,
    /// The base layer `composed` was verified on.
    pub base_diff_id: String,
    /// `passed` or `skipped` (a failed member is not cached).
    pub verification: String,
}

impl CacheEntry {
    pub fn keys(list: &[String]) -> BTreeSet<Vec<u8>> {
        list.iter().filter_map(|h| hex::decode(h).ok()).collect()
    }

    pub fn hex<'a>(keys: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<String> {
        keys.into_iter().map(hex::encode).collect()
    }
}

/// The per-member cache directory: `WHITTLE_CACHE_DIR`, else `$XDG_CACHE_HOME/whittle`, else
/// `~/.cache/whittle`; entries under `family/`.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new() -> Cache {
        let root = std::env::var_os("WHITTLE_CACHE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .filter(|d| !d.is_empty())
                    .map(|d| PathBuf::from(d).join("whittle"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/whittle")))
            .unwrap_or_else(|| std::env::temp_dir().join("whittle-cache"));
        Cache {
            dir: root.join("family"),
        }
    }

    pub fn key(source_config_digest: &str, args: &[String]) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let k = serde_json::json!([source_config_digest, args, env!("CARGO_PKG_VERSION")]);
        h.update(k.to_string().as_bytes());
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The entry for `key`, if there is a readable one of this version (anything else is a
    /// miss: the cache only ever saves work).
    pub fn get(&self, key: &str) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let e: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        (e.schema == CACHE_SCHEMA && e.version == env!("CARGO_PKG_VERSION")).then_some(e)
    }

    pub fn put(&self, key: &str, e: &CacheEntry) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|err| Error::file(&self.dir, err.to_string()))?;
        let bytes = serde_json::to_vec(e).expect("serializable");
        whittle_image::write::write_file(&self.path(key), &bytes)?;
        Ok(())
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new()
    }
}
