//! The parts of an image's configuration that decide what a container runs and as whom,
//! and the lookups the engine does with them before the first instruction executes.
//!
//! Why here and not in the image crate: these are inputs to the closure, and the
//! lookups (`PATH` search relative to `WorkingDir`, `User` through `/etc/passwd`) must happen
//! inside the image view exactly as runc/containerd do them, which is this crate's business.

use serde::{Deserialize, Serialize};

/// The engine's `PATH` when the image's `Env` has none (moby `oci.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image configuration fields the closure depends on (OCI image config `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageConfig {
    /// `Env`, as `NAME=value` strings.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir` (empty means `/`).
    pub working_dir: String,
    /// `User`: `name`, `uid`, `name:group` or `uid:gid` (empty means root).
    pub user: String,
}

impl ImageConfig {
    /// The value of an environment variable in `Env` (the last assignment wins, as in
    /// the engine's merge).
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// `PATH` as the container's first process sees it.
    pub fn path_var(&self) -> &str {
        self.env_var("PATH").unwrap_or(DEFAULT_PATH)
    }

    /// The working directory, absolute (`/` when unset).
    pub fn cwd(&self) -> String {
        if self.working_dir.is_empty() {
            "/".to_owned()
        } else {
            crate::resolve::absolutize(&self.working_dir, "/")
        }
    }

    /// The process arguments: `Entrypoint` followed by `Cmd`.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint
            .iter()
            .chain(self.cmd.iter())
            .cloned()
            .collect()
    }
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// Parses `/etc/passwd` (malformed lines are skipped, as libc's parser does).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
            })
        })
        .collect()
}

/// `(name, gid)` pairs of `/etc/group`.
pub fn parse_group(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some((f[0].to_owned(), f[2].parse().ok()?))
        })
        .collect()
}

/// The `User` field split into its user and optional group parts.
pub fn split_user(user: &str) -> (&str, Option<&str>) {
    match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_defaults() {
        let c = ImageConfig {
            env: vec!["A=1".into(), "PATH=/x:/y".into(), "A=2".into()],
            working_dir: "app/".into(),
            ..Default::default()
        };
        assert_eq!(c.env_var("A"), Some("2"));
        assert_eq!(c.path_var(), "/x:/y");
        assert_eq!(c.cwd(), "/app");
        assert_eq!(ImageConfig::default().path_var(), DEFAULT_PATH);
        assert_eq!(ImageConfig::default().cwd(), "/");
    }

    #[test]
    fn config_json_uses_oci_field_names() {
        let c: ImageConfig = serde_json::from_str(
            r#"{"Env":["PATH=/bin"],"Entrypoint":["/e"],"Cmd":["c"],"WorkingDir":"/w","User":"1:2"}"#,
        )
        .unwrap();
        assert_eq!(c.argv(), vec!["/e", "c"]);
        assert_eq!(split_user(&c.user), ("1", Some("2")));
    }

    #[test]
    fn passwd_parsing_skips_garbage() {
        let p = parse_passwd(
            "root:x:0:0:root:/root:/bin/sh\nbad line\nwww:x:33:33::/var/www:/usr/sbin/nologin\n",
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].home, "/var/www");
        assert_eq!(
            parse_group("root:x:0:\nwww:x:33:a,b\n")[1],
            ("www".into(), 33)
        );
    }
}
