//! Writing images. Every destination is first written under a temporary name beside it and
//! renamed into place only when complete, so a failure (or Ctrl-C) never leaves a partial
//! image under the destination's name.

mod sink;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::compression::Compression;
use crate::read::daemon as daemon_support;
use crate::{Digest, Error, HashingWriter, ImageConfig, ImageRef, Layer, Result, Transport};
use sink::{BlobSink, DirSink, TarSink};

/// A function that writes one uncompressed layer tar into the sink it is given.
pub type LayerFn<'a> = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + 'a>;

/// One layer of an image being written.
pub enum LayerOut<'a> {
    /// The source layer's stored blob, copied byte for byte (and verified while copied).
    Copy(Layer),
    /// A new layer, produced by a function writing an uncompressed tar.
    New(LayerFn<'a>),
}

impl std::fmt::Debug for LayerOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerOut::Copy(l) => write!(f, "Copy({})", l.index),
            LayerOut::New(_) => f.write_str("New"),
        }
    }
}

#[derive(Debug)]
pub struct NewImage<'a> {
    /// Written as is except `rootfs.diff_ids`, which the writer fills in.
    pub config: ImageConfig,
    pub layers: Vec<LayerOut<'a>>,
    /// `NAME:TAG` for docker-archive and the daemon, a tag for OCI layouts.
    pub tag: Option<String>,
    /// Compression for new layers (copied layers keep theirs). docker-archive and the daemon
    /// take any; whittle defaults to none, the fastest to write and to load.
    pub compression: Compression,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerSummary {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub compression: Compression,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WriteSummary {
    pub destination: String,
    pub config_digest: Digest,
    pub layers: Vec<LayerSummary>,
}

/// A destination checked for writability before any expensive work starts.
#[derive(Debug)]
pub struct Destination {
    r: ImageRef,
}

impl Destination {
    /// Fails early if the destination cannot be written: a missing or read-only parent
    /// directory, an existing non-empty OCI directory, or an unreachable Docker Engine.
    pub fn prepare(r: &ImageRef) -> Result<Self> {
        match r.transport {
            Transport::DockerDaemon => {
                daemon_support::ping()?;
            }
            Transport::Rootfs if r.path.is_dir() => {
                return Err(Error::format(
                    &r.path,
                    "writing a root file system to a directory is not supported; name a .tar file",
                ));
            }
            Transport::Oci => {
                if let Ok(mut it) = std::fs::read_dir(&r.path) {
                    if it.next().is_some() {
                        return Err(Error::format(
                            &r.path,
                            "destination directory exists and is not empty; whittle does not \
                             add to existing layouts",
                        ));
                    }
                }
                check_parent_writable(&r.path)?;
            }
            _ => check_file_destination(&r.path)?,
        }
        Ok(Destination { r: r.clone() })
    }

    pub fn reference(&self) -> &ImageRef {
        &self.r
    }

    pub fn write(self, image: NewImage<'_>) -> Result<WriteSummary> {
        let r = &self.r;
        match r.transport {
            Transport::DockerArchive => {
                let mut sink = TarSink::create(&r.path)?;
                let summary = write_docker_archive(&mut sink, image, &r.path)?;
                sink.commit()?;
                Ok(summary.at(r.to_string()))
            }
            Transport::Oci => {
                let mut sink = DirSink::create(&r.path)?;
                let summary = write_oci(&mut sink, image, &r.path)?;
                sink.commit()?;
                Ok(summary.at(r.to_string()))
            }
            Transport::OciArchive => {
                let mut sink = TarSink::create(&r.path)?;
                let summary = write_oci(&mut sink, image, &r.path)?;
                sink.commit()?;
                Ok(summary.at(r.to_string()))
            }
            Transport::DockerDaemon => {
                let dir = tempfile::Builder::new()
                    .prefix("whittle-load-")
                    .tempdir()
                    .map_err(|e| Error::io(std::env::temp_dir(), e))?;
                let path = dir.path().join("image.tar");
                let mut sink = TarSink::create(&path)?;
                let mut image = image;
                if image.tag.is_none() {
                    image.tag.clone_from(&r.name);
                }
                let summary = write_docker_archive(&mut sink, image, &path)?;
                sink.commit()?;
                daemon_support::load(&path)?;
                Ok(summary.at(r.to_string()))
            }
            Transport::Rootfs => {
                let mut image = image;
                if image.layers.len() != 1 {
                    return Err(Error::format(
                        &r.path,
                        format!(
                            "a root file system is one layer; this image has {}",
                            image.layers.len()
                        ),
                    ));
                }
                let mut sink = TarSink::create_raw(&r.path)?;
                let layer = image.layers.pop().expect("one layer");
                let summary = sink.raw(|w| copy_or_write_tar(layer, w, &r.path))?;
                sink.commit()?;
                Ok(WriteSummary {
                    destination: r.to_string(),
                    config_digest: Digest::of(&image.config.to_bytes()),
                    layers: vec![summary],
                })
            }
        }
    }
}

/// Convenience: prepare and write in one call.
pub fn write(dest: &ImageRef, image: NewImage<'_>) -> Result<WriteSummary> {
    Destination::prepare(dest)?.write(image)
}

/// Refuses a destination that is the source: writing it would destroy the input.
pub fn check_not_source(src: &ImageRef, dest: &ImageRef) -> Result<()> {
    if src.transport == Transport::DockerDaemon || dest.transport == Transport::DockerDaemon {
        if src.transport == dest.transport && src.name == dest.name {
            return Err(Error::Reference(format!(
                "{dest}: destination is the source; use another tag"
            )));
        }
        return Ok(());
    }
    if let (Ok(a), Ok(b)) = (
        std::fs::canonicalize(&src.path),
        std::fs::canonicalize(&dest.path),
    ) {
        if a == b {
            return Err(Error::format(
                &dest.path,
                "destination is the source; write somewhere else",
            ));
        }
    }
    Ok(())
}

/// A file destination (an archive, a report) can be written: it is not a directory and its
/// directory takes a new file. Checked before any expensive work.
pub fn check_file_destination(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::format(
            path,
            "destination is a directory; name a file",
        ));
    }
    check_parent_writable(path)
}

/// Writes a small file (a report) the way images are written: under a temporary name beside
/// `path`, mode 0644 minus the umask, renamed into place only when complete.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut sink = TarSink::create_raw(path)?;
    sink.raw(|w| w.write_all(bytes).map_err(|e| Error::io(path, e)))?;
    sink.commit()
}

fn check_parent_writable(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = std::fs::metadata(&parent).map_err(|e| Error::io(&parent, e))?;
    if !meta.is_dir() {
        return Err(Error::format(&parent, "not a directory"));
    }
    // Probe with a real file: permission bits alone miss read-only mounts.
    tempfile::Builder::new()
        .prefix(".whittle-probe-")
        .tempfile_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    Ok(())
}

struct Partial {
    config_digest: Digest,
    layers: Vec<LayerSummary>,
}

impl Partial {
    fn at(self, destination: String) -> WriteSummary {
        WriteSummary {
            destination,
            config_digest: self.config_digest,
            layers: self.layers,
        }
    }
}

/// Writes a layer's uncompressed tar (copied layers are decompressed) into `w`.
fn copy_or_write_tar(layer: LayerOut<'_>, w: &mut dyn Write, dest: &Path) -> Result<LayerSummary> {
    let mut hw = HashingWriter::new(w);
    match layer {
        LayerOut::Copy(l) => {
            let mut stream = l.open_tar()?;
            io::copy(&mut stream, &mut hw).map_err(|e| Error::io(l.display(), e))?;
            stream.finish()?;
        }
        LayerOut::New(f) => f(&mut hw).map_err(|e| Error::io(dest, e))?,
    }
    let (_, digest, size) = hw.finish();
    Ok(LayerSummary {
        digest,
        diff_id: digest,
        size,
        compression: Compression::None,
    })
}

/// Writes one layer into a blob sink: copied layers verbatim, new ones through the encoder.
fn put_layer(
    sink: &mut dyn BlobSink,
    layer: LayerOut<'_>,
    compression: Compression,
    name: &dyn Fn(&Digest, &Digest) -> String,
    dest: &Path,
) -> Result<LayerSummary> {
    match layer {
        LayerOut::Copy(l) => {
            let stored_compression = l.compression()?;
            // Without a declared blob digest (classic docker-archive) nothing vouches for a
            // compressed layer's content but its diff_id, so it is decompressed and checked.
            if l.digest.is_none() && stored_compression != Compression::None {
                l.open_tar()?.finish()?;
            }
            let diff_id = match (stored_compression, l.diff_id) {
                (Compression::None, _) => None,
                (_, Some(id)) => Some(id),
                (_, None) => {
                    return Err(Error::format(
                        l.display(),
                        "compressed layer without a diff_id",
                    ))
                }
            };
            // An uncompressed layer's bytes are its diff_id: check it while copying.
            let expect = match stored_compression {
                Compression::None => l.digest.or(l.diff_id),
                _ => l.digest,
            };
            // The sink hashes what it writes; that one hash checks the source.
            let mut src = match &l.source {
                crate::LayerSource::Blob(w) => w.open()?,
                crate::LayerSource::Directory(d) => {
                    return Err(Error::format(
                        d,
                        "a directory layer cannot be copied as a blob",
                    ))
                }
            };
            let (digest, size) = sink
                .put_stream(
                    &mut |w| {
                        io::copy(&mut src, w)?;
                        Ok(diff_id)
                    },
                    name,
                )
                .map_err(|e| Error::io(l.display(), e))?;
            if let Some(expected) = expect.filter(|e| *e != digest) {
                return Err(Error::DigestMismatch {
                    path: l.display(),
                    what: format!("layer {}", l.index + 1),
                    expected: expected.to_string(),
                    actual: digest.to_string(),
                });
            }
            Ok(LayerSummary {
                digest,
                diff_id: diff_id.unwrap_or(digest),
                size,
                compression: stored_compression,
            })
        }
        LayerOut::New(f) => {
            let mut f = Some(f);
            let mut diff_id = None;
            let (digest, size) = sink
                .put_stream(
                    &mut |w| {
                        let f = f.take().expect("a layer is produced once");
                        let d = encode(w, compression, f)?;
                        diff_id = d;
                        Ok(d)
                    },
                    name,
                )
                .map_err(|e| Error::io(dest, e))?;
            Ok(LayerSummary {
                digest,
                diff_id: diff_id.unwrap_or(digest),
                size,
                compression,
            })
        }
    }
}

/// Runs `produce` writing uncompressed bytes through the chosen encoder into `w`; returns the
/// digest of the uncompressed stream (the diff_id).
fn encode(
    w: &mut dyn Write,
    compression: Compression,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Option<Digest>> {
    match compression {
        Compression::None => {
            produce(w)?;
            Ok(None)
        }
        Compression::Gzip => {
            let enc = flate2::write::GzEncoder::new(w, flate2::Compression::new(6));
            let mut hw = HashingWriter::new(enc);
            produce(&mut hw)?;
            let (enc, d, _) = hw.finish();
            enc.finish()?;
            Ok(Some(d))
        }
        Compression::Zstd => {
            let enc = zstd::stream::write::Encoder::new(w, 3)?;
            let mut hw = HashingWriter::new(enc);
            produce(&mut hw)?;
            let (enc, d, _) = hw.finish();
            enc.finish()?;
            Ok(Some(d))
        }
    }
}

fn write_docker_archive(sink: &mut TarSink, image: NewImage<'_>, dest: &Path) -> Result<Partial> {
    let mut layers = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for layer in image.layers {
        let s = put_layer(
            sink,
            layer,
            image.compression,
            &|_, diff| format!("{}.tar", diff.hex()),
            dest,
        )?;
        names.push(format!("{}.tar", s.diff_id.hex()));
        layers.push(s);
    }
    let mut config = image.config;
    config.set_diff_ids(&layers.iter().map(|l| l.diff_id).collect::<Vec<_>>());
    let config_bytes = config.to_bytes();
    let config_digest = Digest::of(&config_bytes);
    let config_name = format!("{}.json", config_digest.hex());
    sink.put_file(&config_name, &config_bytes)
        .map_err(|e| Error::io(dest, e))?;
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": image.tag.iter().map(|t| crate::reference::normalize_name(t)).collect::<Vec<_>>(),
        "Layers": names,
    }]);
    sink.put_file(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    )
    .map_err(|e| Error::io(dest, e))?;
    Ok(Partial {
        config_digest,
        layers,
    })
}

fn write_oci(sink: &mut dyn BlobSink, image: NewImage<'_>, dest: &Path) -> Result<Partial> {
    for dir in ["blobs/", "blobs/sha256/"] {
        sink.mkdir(dir).map_err(|e| Error::io(dest, e))?;
    }
    let mut layers = Vec::new();
    for layer in image.layers {
        let s = put_layer(
            sink,
            layer,
            image.compression,
            &|stored, _| format!("blobs/sha256/{}", stored.hex()),
            dest,
        )?;
        layers.push(s);
    }
    let mut config = image.config;
    config.set_diff_ids(&layers.iter().map(|l| l.diff_id).collect::<Vec<_>>());
    let config_bytes = config.to_bytes();
    let config_digest = Digest::of(&config_bytes);
    put_blob(sink, &config_bytes, dest)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.compression.oci_layer_media_type(),
            "digest": l.digest.to_string(),
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
    let manifest_digest = put_blob(sink, &manifest_bytes, dest)?;
    let mut desc = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest.to_string(),
        "size": manifest_bytes.len(),
    });
    if let Some(tag) = &image.tag {
        desc["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    }
    let index = json!({"schemaVersion": 2, "manifests": [desc]});
    sink.put_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| Error::io(dest, e))?;
    sink.put_file("index.json", &serde_json::to_vec(&index).expect("json"))
        .map_err(|e| Error::io(dest, e))?;
    Ok(Partial {
        config_digest,
        layers,
    })
}

fn put_blob(sink: &mut dyn BlobSink, bytes: &[u8], dest: &Path) -> Result<Digest> {
    let d = Digest::of(bytes);
    sink.put_file(&format!("blobs/sha256/{}", d.hex()), bytes)
        .map_err(|e| Error::io(dest, e))?;
    Ok(d)
}
