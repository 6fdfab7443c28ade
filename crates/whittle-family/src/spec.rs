//! FAMILY.toml: the fixed format other tools write.
//!
//! ```toml
//! base = "docker-archive:fat/debian-base.tar"   # optional
//! lock = "family.lock"                          # optional, default FAMILY.lock beside the file
//! [[member]]
//! name = "web"
//! source = "docker-archive:fat/nginx.tar"
//! dest = "docker-archive:out/web.tar:shop/web:1.4"
//! args = ["--http-probe", "80/"]
//! debug = true
//! ```
//!
//! Relative paths are relative to the file's directory, so a family builds the same from any
//! working directory. Unknown keys are errors: a misspelt `debgu = true` silently ignored
//! would ship an image without its debug variant.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use whittle_image::{ImageRef, Transport};

use crate::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFamily {
    base: Option<String>,
    lock: Option<String>,
    #[serde(default)]
    member: Vec<RawMember>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: String,
    source: String,
    dest: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    debug: bool,
}

/// A parsed, checked family file.
#[derive(Debug, Clone)]
pub struct FamilySpec {
    pub path: PathBuf,
    pub base: Option<ImageRef>,
    pub lock: PathBuf,
    pub members: Vec<MemberSpec>,
}

#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub name: String,
    pub source: ImageRef,
    pub dest: ImageRef,
    /// Flags of `whittle build`, exactly as written (the CLI parses them).
    pub args: Vec<String>,
    pub debug: bool,
}

impl FamilySpec {
    /// Reads and checks `path`. Every error names the file (and the member).
    pub fn load(path: &Path) -> Result<FamilySpec, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
        FamilySpec::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<FamilySpec, Error> {
        let raw: RawFamily = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().to_string();
            Error::file(
                path,
                match line {
                    Some(l) => format!("line {l}: {msg}"),
                    None => msg,
                },
            )
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if raw.member.is_empty() {
            return Err(Error::file(
                path,
                "no [[member]]: a family needs at least one",
            ));
        }
        let base = raw
            .base
            .as_deref()
            .map(|b| image_ref(b, &dir).map_err(|m| Error::file(path, format!("base: {m}"))))
            .transpose()?;
        let lock = match &raw.lock {
            Some(l) if l.trim().is_empty() => return Err(Error::file(path, "lock: empty")),
            Some(l) => dir.join(l),
            None => path.with_extension("lock"),
        };
        let mut names = BTreeSet::new();
        let mut dests = BTreeSet::new();
        let mut members = Vec::new();
        for m in raw.member {
            let at = |what: String| Error::file(path, format!("member {:?}: {what}", m.name));
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(at("name: use letters, digits, '-', '_' and '.'".into()));
            }
            if !names.insert(m.name.clone()) {
                return Err(at("duplicate member name".into()));
            }
            let source = image_ref(&m.source, &dir).map_err(|e| at(format!("source: {e}")))?;
            if source.transport != Transport::DockerDaemon && !source.path.exists() {
                return Err(at(format!("source {}: no such file or directory", source)));
            }
            let dest = image_ref(&m.dest, &dir).map_err(|e| at(format!("dest: {e}")))?;
            if !dests.insert(dest.to_string()) {
                return Err(at(format!("dest {dest}: another member writes there too")));
            }
            members.push(MemberSpec {
                name: m.name,
                source,
                dest,
                args: m.args,
                debug: m.debug,
            });
        }
        Ok(FamilySpec {
            path: path.to_path_buf(),
            base,
            lock,
            members,
        })
    }
}

/// Parses a reference, a relative path taken relative to the family file's directory.
fn image_ref(s: &str, dir: &Path) -> Result<ImageRef, String> {
    let known = [
        "docker-archive",
        "oci",
        "oci-archive",
        "docker-daemon",
        "rootfs",
    ];
    let has_transport = s.split_once(':').is_some_and(|(t, _)| known.contains(&t));
    if !has_transport {
        let p = dir.join(s);
        return ImageRef::parse(&p.to_string_lossy()).map_err(|e| e.to_string());
    }
    let mut r = ImageRef::parse(s).map_err(|e| e.to_string())?;
    if r.transport != Transport::DockerDaemon && r.path.is_relative() {
        r.path = dir.join(&r.path);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FamilySpec, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tar"), b"").unwrap();
        let p = dir.path().join("f.toml");
        FamilySpec::parse(&p, text).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
    }

    const OK: &str = r#"
lock = "x.lock"
[[member]]
name = "web"
source = "docker-archive:a.tar"
dest = "docker-archive:out/web.tar:shop/web:1.4"
args = ["--http-probe", "80/"]
debug = true
"#;

    #[test]
    fn relative_paths_are_the_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tar"), b"").unwrap();
        let f = FamilySpec::parse(&dir.path().join("f.toml"), OK).unwrap();
        assert_eq!(f.lock, dir.path().join("x.lock"));
        let m = &f.members[0];
        assert_eq!(m.source.path, dir.path().join("a.tar"));
        assert_eq!(m.dest.path, dir.path().join("out/web.tar"));
        assert_eq!(m.dest.name.as_deref(), Some("shop/web:1.4"));
        assert!(m.debug);
        assert_eq!(m.args, ["--http-probe", "80/"]);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = parse(&OK.replace("debug = true", "debgu = true")).unwrap_err();
        assert!(
            e.starts_with("DIR/f.toml: line 8: unknown field `debgu`"),
            "{e}"
        );
        let e = parse(&format!("{OK}{}", OK.replace("lock = \"x.lock\"", ""))).unwrap_err();
        assert!(e.contains("member \"web\": duplicate member name"), "{e}");
        let e = parse(&OK.replace("a.tar", "missing.tar")).unwrap_err();
        assert!(
            e.contains("member \"web\": source docker-archive:DIR/missing.tar: no such"),
            "{e}"
        );
        let e = parse("base = 3").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = parse("").unwrap_err();
        assert!(e.contains("no [[member]]"), "{e}");
    }
}
