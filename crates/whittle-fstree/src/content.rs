//! Reading file content back after flattening, by position, without re-parsing any tar.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::tree::{Content, Node, NodeKind};

/// Where each layer's uncompressed bytes can be read at random offsets: the blob itself when
/// it is stored uncompressed, else a spool file written while the layer was first read.
///
/// Cloning is cheap and shares the open files: a slim tree selected from a flattened image
/// reads its content from the same layers as the fat tree.
#[derive(Debug, Default, Clone)]
pub struct ContentStore {
    layers: Vec<Option<Arc<LayerBytes>>>,
}

#[derive(Debug)]
struct LayerBytes {
    file: File,
    base: u64,
    display: PathBuf,
    /// Keeps a spool file alive (and deleted on drop).
    _spool: Option<tempfile::NamedTempFile>,
}

impl ContentStore {
    pub(crate) fn set_window(&mut self, layer: usize, file: File, base: u64, display: PathBuf) {
        self.ensure(layer);
        self.layers[layer] = Some(Arc::new(LayerBytes {
            file,
            base,
            display,
            _spool: None,
        }));
    }

    pub(crate) fn set_spool(
        &mut self,
        layer: usize,
        spool: tempfile::NamedTempFile,
        display: PathBuf,
    ) -> io::Result<()> {
        self.ensure(layer);
        let file = spool.reopen()?;
        self.layers[layer] = Some(Arc::new(LayerBytes {
            file,
            base: 0,
            display,
            _spool: Some(spool),
        }));
        Ok(())
    }

    fn ensure(&mut self, layer: usize) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
    }

    /// A reader of a regular file node's content.
    pub fn open(&self, node: &Node) -> io::Result<Box<dyn Read + '_>> {
        let NodeKind::File { size, content } = &node.kind else {
            return Err(io::Error::other("not a regular file"));
        };
        match content {
            Content::Layer { layer, offset } => {
                let lb = self
                    .layers
                    .get(*layer as usize)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| {
                        io::Error::other(format!("layer {} content was not kept", layer + 1))
                    })?;
                Ok(Box::new(AtReader {
                    lb,
                    pos: lb.base + offset,
                    end: lb.base + offset + size,
                }))
            }
            Content::Host(path) => Ok(Box::new(
                File::open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
                    .take(*size),
            )),
        }
    }

    /// Reads up to `len` bytes at `offset` of a file node (for ELF headers, shebangs).
    pub fn read_at(&self, node: &Node, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let NodeKind::File { size, content } = &node.kind else {
            return Err(io::Error::other("not a regular file"));
        };
        if offset >= *size {
            return Ok(0);
        }
        let want = buf.len().min((*size - offset) as usize);
        match content {
            Content::Layer {
                layer,
                offset: start,
            } => {
                let lb = self
                    .layers
                    .get(*layer as usize)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| io::Error::other("layer content was not kept"))?;
                lb.file.read_at(&mut buf[..want], lb.base + start + offset)
            }
            Content::Host(path) => File::open(path)?.read_at(&mut buf[..want], offset),
        }
    }
}

/// Positional reads: many readers can share one file handle without seeking.
struct AtReader<'a> {
    lb: &'a LayerBytes,
    pos: u64,
    end: u64,
}

impl Read for AtReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.lb.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: content ends early", self.lb.display.display()),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}
