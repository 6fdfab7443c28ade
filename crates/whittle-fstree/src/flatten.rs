//! Driving the flattening: read each layer once (verifying digests in the same pass), apply
//! it to the tree, and keep a way to read content back.

use std::fs::File;
use std::io::{self, Read, Write};

use whittle_image::compression::Compression;
use whittle_image::{Image, Layer, LayerSource};

use crate::entry::{parse_layer, LayerEntries};
use crate::{ContentStore, Error, FsTree, Result};

#[derive(Debug, Clone, Copy)]
pub struct FlattenOptions {
    /// Flatten layers `from_layer..`; below that, whiteouts are kept as nodes so the result
    /// can be stacked on the untouched lower layers.
    pub from_layer: usize,
    /// Keep content readable afterwards (spooling compressed layers to disk). Reports that
    /// need only metadata turn it off.
    pub keep_content: bool,
}

impl Default for FlattenOptions {
    fn default() -> Self {
        FlattenOptions {
            from_layer: 0,
            keep_content: true,
        }
    }
}

#[derive(Debug)]
pub struct Flattened {
    pub tree: FsTree,
    pub store: ContentStore,
}

/// Step-by-step flattening, for callers that look at each layer on the way (inspect).
pub struct Flattener<'p> {
    tree: FsTree,
    store: ContentStore,
    keep_content: bool,
    progress: Option<&'p dyn Fn(u64)>,
}

impl std::fmt::Debug for Flattener<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flattener")
            .field("nodes", &self.tree.len())
            .finish()
    }
}

impl<'p> Flattener<'p> {
    pub fn new(track_whiteouts: bool, keep_content: bool) -> Self {
        Flattener {
            tree: FsTree::new(track_whiteouts),
            store: ContentStore::default(),
            keep_content,
            progress: None,
        }
    }

    /// Called with the number of uncompressed bytes read, as they are read.
    pub fn with_progress(mut self, f: &'p dyn Fn(u64)) -> Self {
        self.progress = Some(f);
        self
    }

    pub fn tree(&self) -> &FsTree {
        &self.tree
    }

    /// Reads and verifies one layer.
    pub fn read(&mut self, layer: &Layer) -> Result<LayerEntries> {
        let display = layer.display();
        let at_entry = |(path, message): (String, String)| Error::Entry {
            at: display.clone(),
            layer: layer.index + 1,
            path,
            message,
        };
        match &layer.source {
            LayerSource::Directory(dir) => {
                let entries = crate::hostdir::read_dir_layer(dir)?;
                Ok(LayerEntries {
                    entries,
                    tar_size: 0,
                    digests: None,
                })
            }
            LayerSource::Blob(window) => {
                let mut stream = layer.open_tar()?;
                let spool = if self.keep_content && stream.compression != Compression::None {
                    let f = tempfile::Builder::new()
                        .prefix("whittle-spool-")
                        .tempfile()
                        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
                    Some(f)
                } else {
                    None
                };
                let parsed = {
                    let tee = Tee {
                        inner: &mut stream,
                        copy: match &spool {
                            Some(f) => Some(io::BufWriter::with_capacity(
                                1 << 20,
                                f.reopen().map_err(|e| Error::io(f.path(), e))?,
                            )),
                            None => None,
                        },
                        progress: self.progress,
                    };
                    let mut tee = tee;
                    let parsed = parse_layer(&mut tee);
                    // Spool and verify everything after the tar's end blocks too.
                    if parsed.is_ok() {
                        io::copy(&mut tee, &mut io::sink()).map_err(|e| Error::io(&display, e))?;
                    }
                    if let Some(mut c) = tee.copy.take() {
                        c.flush().map_err(|e| Error::io(std::env::temp_dir(), e))?;
                    }
                    parsed
                };
                let mut entries = match parsed {
                    Ok(e) => e,
                    Err(e) => {
                        // A digest failure explains a parse failure better than the parse
                        // error does (the bytes are not what the image claims).
                        if let Err(d) = stream.finish() {
                            if matches!(d, whittle_image::Error::DigestMismatch { .. }) {
                                return Err(d.into());
                            }
                        }
                        return Err(at_entry(e));
                    }
                };
                let digests = stream.finish()?;
                entries.tar_size = digests.size;
                entries.digests = Some(digests);
                if self.keep_content {
                    match spool {
                        Some(f) => self
                            .store
                            .set_spool(layer.index, f, display.clone())
                            .map_err(|e| Error::io(&display, e))?,
                        None => {
                            let file =
                                File::open(&window.file).map_err(|e| Error::io(&window.file, e))?;
                            self.store.set_window(
                                layer.index,
                                file,
                                window.offset,
                                display.clone(),
                            );
                        }
                    }
                }
                Ok(entries)
            }
        }
    }

    pub fn apply(&mut self, layer: &Layer, entries: &LayerEntries) -> Result<()> {
        self.tree
            .apply(layer.index as u32, &entries.entries)
            .map_err(|(path, message)| Error::Entry {
                at: layer.display(),
                layer: layer.index + 1,
                path,
                message,
            })
    }

    pub fn finish(self) -> Flattened {
        Flattened {
            tree: self.tree,
            store: self.store,
        }
    }
}

/// Flattens `image.layers[from_layer..]`.
pub fn flatten(
    image: &Image,
    opts: FlattenOptions,
    progress: Option<&dyn Fn(u64)>,
) -> Result<Flattened> {
    let mut f = Flattener::new(opts.from_layer > 0, opts.keep_content);
    f.progress = progress;
    for layer in image.layers.iter().skip(opts.from_layer) {
        let entries = f.read(layer)?;
        f.apply(layer, &entries)?;
    }
    Ok(f.finish())
}

struct Tee<'a, R> {
    inner: &'a mut R,
    copy: Option<io::BufWriter<File>>,
    progress: Option<&'a dyn Fn(u64)>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = &mut self.copy {
            c.write_all(&buf[..n])?;
        }
        if let Some(p) = self.progress {
            p(n as u64);
        }
        Ok(n)
    }
}
