//! Opening images: every transport ends up as an [`Image`] whose layers are windows into files.

pub(crate) mod daemon;
mod docker_archive;
mod oci;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::compression::{self, Compression};
use crate::{Digest, Error, ImageConfig, ImageRef, Result, Transport, VerifyingReader};

/// A byte range of a file: a blob file in an OCI layout, or a member of an archive.
#[derive(Debug, Clone)]
pub struct BlobWindow {
    pub file: PathBuf,
    pub offset: u64,
    pub len: u64,
    /// How to name this blob in messages, e.g. `img.tar:blobs/sha256/ab…`.
    pub display: PathBuf,
}

impl BlobWindow {
    pub fn whole_file(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        Ok(BlobWindow {
            file: path.to_path_buf(),
            offset: 0,
            len,
            display: path.to_path_buf(),
        })
    }

    pub fn open(&self) -> Result<io::Take<File>> {
        let mut f = File::open(&self.file).map_err(|e| Error::io(&self.file, e))?;
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| Error::io(&self.file, e))?;
        Ok(f.take(self.len))
    }

    /// Reads a small JSON document in full, verifying its digest when one is expected.
    pub fn read_json_bytes(&self, expected: Option<Digest>) -> Result<Vec<u8>> {
        if self.len > crate::MAX_JSON_BYTES {
            return Err(Error::format(
                &self.display,
                format!("{} bytes is too large for an image JSON document", self.len),
            ));
        }
        let mut r = VerifyingReader::new(
            self.open()?,
            expected,
            None,
            self.display.clone(),
            "document".into(),
        );
        let mut buf = Vec::with_capacity(self.len as usize);
        r.read_to_end(&mut buf)
            .map_err(|e| Error::io(&self.display, e))?;
        Ok(buf)
    }
}

/// Where a layer's content comes from.
#[derive(Debug, Clone)]
pub enum LayerSource {
    /// A (possibly compressed) tar blob.
    Blob(BlobWindow),
    /// A directory that is a whole root file system (the `rootfs:DIR` transport).
    Directory(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub index: usize,
    pub source: LayerSource,
    /// Expected digest of the stored (possibly compressed) bytes, when the source declares one.
    pub digest: Option<Digest>,
    /// Expected digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Option<Digest>,
    pub media_type: Option<String>,
}

impl Layer {
    pub fn stored_size(&self) -> u64 {
        match &self.source {
            LayerSource::Blob(w) => w.len,
            LayerSource::Directory(_) => 0,
        }
    }

    pub fn display(&self) -> PathBuf {
        match &self.source {
            LayerSource::Blob(w) => w.display.clone(),
            LayerSource::Directory(d) => d.clone(),
        }
    }

    fn window(&self) -> Result<&BlobWindow> {
        match &self.source {
            LayerSource::Blob(w) => Ok(w),
            LayerSource::Directory(d) => Err(Error::format(d, "a directory has no layer blob")),
        }
    }

    /// The stored bytes, verified against the declared digest at end of stream.
    pub fn open_stored(&self) -> Result<VerifyingReader<io::Take<File>>> {
        let w = self.window()?;
        Ok(VerifyingReader::new(
            w.open()?,
            self.digest,
            Some(w.len),
            w.display.clone(),
            format!("layer {}", self.index + 1),
        ))
    }

    /// The uncompressed tar stream; both the stored digest and the diff_id are verified by
    /// [`LayerStream::finish`] (and at end of stream).
    pub fn open_tar(&self) -> Result<LayerStream> {
        let w = self.window()?;
        let what = format!("layer {}", self.index + 1);
        if self.compression()? == Compression::None {
            // The stored bytes are the tar: one hash serves as both digest and diff_id.
            if let (Some(d), Some(id)) = (self.digest, self.diff_id) {
                if d != id {
                    return Err(Error::DigestMismatch {
                        path: w.display.clone(),
                        what: format!("{what} (uncompressed, so its diff_id)"),
                        expected: id.to_string(),
                        actual: d.to_string(),
                    });
                }
            }
            let inner = VerifyingReader::new(
                Box::new(w.open()?) as Box<dyn Read + Send>,
                self.digest.or(self.diff_id),
                Some(w.len),
                w.display.clone(),
                what,
            );
            return Ok(LayerStream {
                inner,
                stored: None,
                compression: Compression::None,
                display: w.display.clone(),
            });
        }
        let stored = Arc::new(Mutex::new(self.open_stored()?));
        let (compression, decoded) = compression::decompress(SharedReader(stored.clone()))
            .map_err(|e| Error::io(&w.display, e))?;
        let inner = VerifyingReader::new(
            decoded,
            self.diff_id,
            None,
            w.display.clone(),
            format!("{what} (uncompressed, diff_id)"),
        );
        Ok(LayerStream {
            inner,
            stored: Some(stored),
            compression,
            display: w.display.clone(),
        })
    }

    pub fn compression(&self) -> Result<Compression> {
        let w = self.window()?;
        let mut head = [0u8; 8];
        let mut r = w.open()?;
        let mut n = 0;
        while n < head.len() {
            let k = r
                .read(&mut head[n..])
                .map_err(|e| Error::io(&w.display, e))?;
            if k == 0 {
                break;
            }
            n += k;
        }
        Compression::detect(&head[..n]).map_err(|e| Error::io(&w.display, e))
    }
}

/// Lets the decoder and [`LayerStream`] share the stored-bytes reader, so the stored digest can
/// be completed after the decoder stops.
struct SharedReader<R>(Arc<Mutex<R>>);

impl<R: Read> Read for SharedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.lock().expect("not poisoned").read(buf)
    }
}

/// What reading a layer measured: digests and sizes of the stored blob and of the tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigests {
    pub digest: Digest,
    pub diff_id: Digest,
    pub stored_size: u64,
    pub size: u64,
}

/// An uncompressed layer tar being read.
pub struct LayerStream {
    inner: VerifyingReader<Box<dyn Read + Send>>,
    /// The compressed stream's own verifier; `None` when the blob is stored uncompressed.
    stored: Option<Arc<Mutex<VerifyingReader<io::Take<File>>>>>,
    pub compression: Compression,
    display: PathBuf,
}

impl std::fmt::Debug for LayerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStream")
            .field("display", &self.display)
            .finish()
    }
}

impl LayerStream {
    /// Reads what the tar parser left, verifies both digests and returns what was measured.
    pub fn finish(self) -> Result<LayerDigests> {
        let (diff_id, size) = self
            .inner
            .drain_counted()
            .map_err(|e| Error::io(&self.display, e))?;
        let (digest, stored_size) = match self.stored {
            None => (diff_id, size),
            Some(stored) => {
                let mut stored = SharedReader(stored);
                io::copy(&mut stored, &mut io::sink()).map_err(|e| Error::io(&self.display, e))?;
                let d = stored.0.lock().expect("not poisoned").digest_so_far();
                d
            }
        };
        Ok(LayerDigests {
            digest,
            diff_id,
            stored_size,
            size,
        })
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// An opened image. Temporary spool files (a daemon export) live as long as it does.
#[derive(Debug, Clone)]
pub struct Image {
    pub reference: ImageRef,
    pub config: ImageConfig,
    /// Digest of the config as stored (the image ID in Docker's terms).
    pub config_digest: Digest,
    pub layers: Vec<Layer>,
    pub repo_tags: Vec<String>,
    pub(crate) _spool: Option<Arc<tempfile::TempDir>>,
}

impl Image {
    /// Checks that the layers and the config's `rootfs.diff_ids` agree, as `docker load` does.
    fn check_layer_count(&self, path: &Path) -> Result<Vec<Digest>> {
        let ids = self
            .config
            .diff_ids()
            .map_err(|m| Error::format(path, format!("image config: {m}")))?;
        if ids.len() != self.layers.len() {
            return Err(Error::format(
                path,
                format!(
                    "image has {} layers but its config lists {} diff_ids",
                    self.layers.len(),
                    ids.len()
                ),
            ));
        }
        Ok(ids)
    }
}

/// Opens the image `r` names, reading only the metadata (manifest, index, config) now.
pub fn open(r: &ImageRef) -> Result<Image> {
    match r.transport {
        Transport::DockerArchive => docker_archive::open(r, None),
        Transport::Oci => oci::open_dir(r),
        Transport::OciArchive => oci::open_archive(r),
        Transport::DockerDaemon => daemon::open(r),
        Transport::Rootfs => open_rootfs(r),
    }
}

fn open_rootfs(r: &ImageRef) -> Result<Image> {
    let meta = std::fs::metadata(&r.path).map_err(|e| Error::io(&r.path, e))?;
    let source = if meta.is_dir() {
        LayerSource::Directory(r.path.clone())
    } else {
        LayerSource::Blob(BlobWindow::whole_file(&r.path)?)
    };
    let config = ImageConfig::empty();
    Ok(Image {
        reference: r.clone(),
        config_digest: Digest::of(&config.to_bytes()),
        config,
        layers: vec![Layer {
            index: 0,
            source,
            digest: None,
            diff_id: None,
            media_type: None,
        }],
        repo_tags: Vec::new(),
        _spool: None,
    })
}
