//! Image references in the transport syntax skopeo and podman users already know.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

/// Which kind of store an image lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    DockerArchive,
    Oci,
    OciArchive,
    DockerDaemon,
    Rootfs,
}

/// Where an image is, e.g. `docker-archive:/tmp/x.tar:nginx:latest` or `oci:dir:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub transport: Transport,
    /// File or directory for every transport but the daemon.
    pub path: PathBuf,
    /// `NAME:TAG` for docker-archive and the daemon, a tag for the OCI layouts.
    pub name: Option<String>,
}

impl ImageRef {
    /// Parses a reference. A bare path (no known transport prefix) is auto-detected by
    /// looking at what is there: see [`ImageRef::detect`].
    pub fn parse(s: &str) -> Result<Self, Error> {
        let (transport, rest) = match s.split_once(':') {
            Some(("docker-archive", rest)) => (Transport::DockerArchive, rest),
            Some(("oci", rest)) => (Transport::Oci, rest),
            Some(("oci-archive", rest)) => (Transport::OciArchive, rest),
            Some(("docker-daemon", rest)) => (Transport::DockerDaemon, rest),
            Some(("rootfs", rest)) => (Transport::Rootfs, rest),
            Some((t, _)) if is_transport_like(t) && !Path::new(s).exists() => {
                return Err(Error::Reference(format!(
                    "{s}: unknown transport {t:?} (known: docker-archive, oci, oci-archive, \
                     docker-daemon, rootfs)"
                )))
            }
            _ => return ImageRef::detect(Path::new(s)),
        };
        if rest.is_empty() {
            return Err(Error::Reference(format!(
                "{s}: missing path or name after {:?}",
                transport
            )));
        }
        Ok(match transport {
            Transport::DockerDaemon => {
                let name = normalize_name(rest);
                ImageRef {
                    transport,
                    path: PathBuf::new(),
                    name: Some(name),
                }
            }
            Transport::Rootfs => ImageRef {
                transport,
                path: PathBuf::from(rest),
                name: None,
            },
            _ => {
                let (path, name) = match rest.split_once(':') {
                    Some((p, n)) if !n.is_empty() => (p, Some(n.to_string())),
                    Some((p, _)) => (p, None),
                    None => (rest, None),
                };
                if transport == Transport::DockerArchive {
                    if let Some(n) = &name {
                        if !n.contains(':') && !n.starts_with('@') {
                            return Err(Error::Reference(format!(
                                "{s}: docker-archive names are NAME:TAG, got {n:?}"
                            )));
                        }
                    }
                }
                ImageRef {
                    transport,
                    path: PathBuf::from(path),
                    name,
                }
            }
        })
    }

    /// Decides the transport of a bare path from its contents: a directory with `oci-layout` is
    /// an OCI layout, any other directory a root file system; a tar with `manifest.json` is a
    /// docker-archive, one with `oci-layout` an oci-archive, any other tar a root file system.
    pub fn detect(path: &Path) -> Result<Self, Error> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Reference(format!(
                "{}: No such file or directory (to write a new image, name its transport, e.g. \
                 docker-archive:{})",
                path.display(),
                path.display()
            )),
            _ => Error::io(path, e),
        })?;
        let transport = if meta.is_dir() {
            if path.join("oci-layout").exists() {
                Transport::Oci
            } else {
                Transport::Rootfs
            }
        } else {
            let index = crate::TarIndex::scan_for_detection(path)?;
            if index.contains("manifest.json") {
                Transport::DockerArchive
            } else if index.contains("oci-layout") {
                Transport::OciArchive
            } else {
                Transport::Rootfs
            }
        };
        Ok(ImageRef {
            transport,
            path: path.to_path_buf(),
            name: None,
        })
    }
}

fn is_transport_like(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

/// `nginx` means `nginx:latest`, as in the Docker CLI.
pub(crate) fn normalize_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::DockerArchive => "docker-archive",
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::DockerDaemon => "docker-daemon",
            Transport::Rootfs => "rootfs",
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.transport, &self.name) {
            (Transport::DockerDaemon, Some(n)) => write!(f, "docker-daemon:{n}"),
            (t, Some(n)) => write!(f, "{t}:{}:{n}", self.path.display()),
            (t, None) => write!(f, "{t}:{}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        let r = ImageRef::parse("docker-archive:/tmp/a.tar:nginx:1.2").unwrap();
        assert_eq!(r.transport, Transport::DockerArchive);
        assert_eq!(r.path, PathBuf::from("/tmp/a.tar"));
        assert_eq!(r.name.as_deref(), Some("nginx:1.2"));
        let r = ImageRef::parse("oci:/tmp/l:v1").unwrap();
        assert_eq!(
            (r.transport, r.name.as_deref()),
            (Transport::Oci, Some("v1"))
        );
        let r = ImageRef::parse("docker-daemon:nginx").unwrap();
        assert_eq!(r.name.as_deref(), Some("nginx:latest"));
        let r = ImageRef::parse("docker-daemon:localhost:5000/x").unwrap();
        assert_eq!(r.name.as_deref(), Some("localhost:5000/x:latest"));
        let r = ImageRef::parse("rootfs:/a:b").unwrap();
        assert_eq!(r.path, PathBuf::from("/a:b"));
        assert_eq!(r.to_string(), "rootfs:/a:b");
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        let e = ImageRef::parse("foo:bar").unwrap_err().to_string();
        assert!(e.contains("unknown transport \"foo\""), "{e}");
        let e = ImageRef::parse("docker-archive:").unwrap_err().to_string();
        assert!(e.contains("missing path"), "{e}");
        let e = ImageRef::parse("docker-archive:/x.tar:notag")
            .unwrap_err()
            .to_string();
        assert!(e.contains("NAME:TAG"), "{e}");
        let e = ImageRef::parse("/definitely/not/here")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/definitely/not/here: "), "{e}");
    }
}
