//! Driving the flattening: read each layer once (verifying digests in the same pass), apply
//! the layers in order to the tree, and keep a way to read content back.
//!
//! Reading a layer (decompressing, hashing, parsing) is the expensive part and layers are
//! independent, so two worker threads read layers ahead while the caller's thread applies
//! them strictly in order; applying is cheap.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use whittle_image::compression::Compression;
use whittle_image::{Image, Layer, LayerSource};

use crate::entry::{parse_layer, LayerEntries};
use crate::{ContentStore, Error, FsTree, Result};

/// Byte counter for progress display; called from reader threads.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

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

#[derive(Debug, Clone)]
pub struct Flattened {
    pub tree: FsTree,
    pub store: ContentStore,
}

/// Where a read layer's bytes can be read again.
enum Kept {
    Window { file: File, base: u64 },
    Spool(tempfile::NamedTempFile),
}

/// Reads and verifies one layer; with `keep_content`, also returns where its bytes stay.
fn read_layer(
    layer: &Layer,
    keep_content: bool,
    progress: Option<Progress<'_>>,
) -> Result<(LayerEntries, Option<Kept>)> {
    let display = layer.display();
    let window = match &layer.source {
        LayerSource::Directory(dir) => {
            let entries = crate::hostdir::read_dir_layer(dir)?;
            return Ok((
                LayerEntries {
                    entries,
                    tar_size: 0,
                    digests: None,
                },
                None,
            ));
        }
        LayerSource::Blob(w) => w,
    };
    let mut stream = layer.open_tar()?;
    let spool = if keep_content && stream.compression != Compression::None {
        Some(
            tempfile::Builder::new()
                .prefix("whittle-spool-")
                .tempfile()
                .map_err(|e| Error::io(std::env::temp_dir(), e))?,
        )
    } else {
        None
    };
    let parsed = {
        let mut tee = Tee {
            inner: &mut stream,
            copy: match &spool {
                Some(f) => Some(io::BufWriter::with_capacity(
                    1 << 20,
                    f.reopen().map_err(|e| Error::io(f.path(), e))?,
                )),
                None => None,
            },
            progress,
        };
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
        Err((path, message)) => {
            // A digest failure explains a parse failure better than the parse error does
            // (the bytes are not what the image claims).
            if let Err(d @ whittle_image::Error::DigestMismatch { .. }) = stream.finish() {
                return Err(d.into());
            }
            return Err(Error::Entry {
                at: display,
                layer: layer.index + 1,
                path,
                message,
            });
        }
    };
    let digests = stream.finish()?;
    entries.tar_size = digests.size;
    entries.digests = Some(digests);
    let kept = match (keep_content, spool) {
        (false, _) => None,
        (true, Some(f)) => Some(Kept::Spool(f)),
        (true, None) => Some(Kept::Window {
            file: File::open(&window.file).map_err(|e| Error::io(&window.file, e))?,
            base: window.offset,
        }),
    };
    Ok((entries, kept))
}

/// Flattens `image.layers[from_layer..]`.
pub fn flatten(
    image: &Image,
    opts: FlattenOptions,
    progress: Option<Progress<'_>>,
) -> Result<Flattened> {
    flatten_with(image, opts, progress, |_, _, _| {})
}

/// Like [`flatten`], calling `before_apply(layer, entries, tree_so_far)` for each layer in
/// order, just before it is applied (inspect looks at what each layer hides).
pub fn flatten_with(
    image: &Image,
    opts: FlattenOptions,
    progress: Option<Progress<'_>>,
    mut before_apply: impl FnMut(&Layer, &LayerEntries, &FsTree),
) -> Result<Flattened> {
    let layers: Vec<&Layer> = image.layers.iter().skip(opts.from_layer).collect();
    let mut tree = FsTree::new(opts.from_layer > 0);
    let mut store = ContentStore::default();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2)
        .min(layers.len().max(1));
    std::thread::scope(|s| -> Result<()> {
        // Bounded so a fast reader cannot race far ahead of the applying thread.
        let (tx, rx) = mpsc::sync_channel::<(usize, Result<(LayerEntries, Option<Kept>)>)>(2);
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, layers) = (&next, &layers);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(layer) = layers.get(i) else { break };
                let r = read_layer(layer, opts.keep_content, progress);
                let failed = r.is_err();
                if tx.send((i, r)).is_err() || failed {
                    // Stop handing out work after a failure; the receiver reports it.
                    next.store(layers.len(), Ordering::SeqCst);
                    break;
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Result<(LayerEntries, Option<Kept>)>> = BTreeMap::new();
        for want in 0..layers.len() {
            let result = loop {
                if let Some(r) = pending.remove(&want) {
                    break r;
                }
                match rx.recv() {
                    Ok((i, r)) => {
                        pending.insert(i, r);
                    }
                    Err(_) => {
                        // Workers stopped early: the first failure (in layer order) is in
                        // `pending`.
                        let first = pending.into_values().find(|r| r.is_err());
                        return Err(first.and_then(|r| r.err()).unwrap_or_else(|| {
                            Error::io(PathBuf::from("layers"), io::Error::other("reader stopped"))
                        }));
                    }
                }
            };
            let layer = layers[want];
            let (entries, kept) = result.inspect_err(|_| {
                next.store(layers.len(), Ordering::SeqCst);
            })?;
            match kept {
                Some(Kept::Window { file, base }) => {
                    store.set_window(layer.index, file, base, layer.display())
                }
                Some(Kept::Spool(f)) => store
                    .set_spool(layer.index, f, layer.display())
                    .map_err(|e| Error::io(layer.display(), e))?,
                None => {}
            }
            before_apply(layer, &entries, &tree);
            tree.apply(layer.index as u32, &entries.entries)
                .map_err(|(path, message)| Error::Entry {
                    at: layer.display(),
                    layer: layer.index + 1,
                    path,
                    message,
                })?;
        }
        Ok(())
    })?;
    Ok(Flattened { tree, store })
}

struct Tee<'a, R> {
    inner: &'a mut R,
    copy: Option<io::BufWriter<File>>,
    progress: Option<Progress<'a>>,
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
