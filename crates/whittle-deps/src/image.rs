//! The merged view of an image's layers as a [`RootFs`], so the closure is computed on exactly
//! what a container would see, reading ELF headers straight from the layer blobs.

use std::sync::Arc;

use whittle_fstree::{flatten, ContentStore, FlattenOptions, FsTree, Node, NodeKind as TreeKind};
use whittle_image::ImageRef;

use crate::rootfs::{NodeKind, ReadAt, RootFs};
use crate::{Analyzer, Closure, FsError, ImageConfig, Request};

/// A flattened image seen as a root file system.
#[derive(Debug)]
pub struct ImageRootFs<'a> {
    pub tree: &'a FsTree,
    pub store: &'a ContentStore,
}

fn key(path: &str) -> Result<&[u8], FsError> {
    path.strip_prefix('/')
        .map(str::as_bytes)
        .ok_or_else(|| FsError::InvalidPath {
            path: path.to_owned(),
            why: "not absolute",
        })
}

impl ImageRootFs<'_> {
    fn node(&self, path: &str) -> Result<Option<&Node>, FsError> {
        Ok(self.tree.get(key(path)?))
    }
}

impl RootFs for ImageRootFs<'_> {
    fn lstat(&self, path: &str) -> Result<Option<NodeKind>, FsError> {
        let Some(node) = self.node(path)? else {
            return Ok(None);
        };
        let mode = node.meta.mode;
        Ok(Some(match &node.kind {
            TreeKind::File { size, .. } => NodeKind::File { size: *size, mode },
            TreeKind::Dir { .. } => NodeKind::Dir { mode },
            TreeKind::Symlink(t) => NodeKind::Symlink {
                target: String::from_utf8(t.clone()).map_err(|_| FsError::NotUtf8 {
                    path: path.to_owned(),
                })?,
            },
            TreeKind::Whiteout => return Ok(None),
            _ => NodeKind::Other { mode },
        }))
    }

    fn read_dir(&self, path: &str) -> Result<Vec<String>, FsError> {
        let k = key(path)?;
        match self.tree.get(k) {
            Some(n) if n.is_dir() => {}
            Some(_) => {
                return Err(FsError::WrongKind {
                    path: path.to_owned(),
                    why: "not a directory",
                })
            }
            None => {
                return Err(FsError::NotFound {
                    path: path.to_owned(),
                    missing: path.to_owned(),
                })
            }
        }
        let skip = if k.is_empty() { 0 } else { k.len() + 1 };
        Ok(self
            .tree
            .children(k)
            .into_iter()
            .filter(|(_, n)| n.kind != TreeKind::Whiteout)
            .filter_map(|(p, _)| String::from_utf8(p[skip..].to_vec()).ok())
            .collect())
    }

    fn open(&self, path: &str) -> Result<Box<dyn ReadAt + '_>, FsError> {
        match self.node(path)? {
            Some(n) if matches!(n.kind, TreeKind::File { .. }) => Ok(Box::new(NodeReader {
                node: n,
                store: self.store,
                path: path.to_owned(),
            })),
            Some(_) => Err(FsError::WrongKind {
                path: path.to_owned(),
                why: "not a regular file",
            }),
            None => Err(FsError::NotFound {
                path: path.to_owned(),
                missing: path.to_owned(),
            }),
        }
    }
}

struct NodeReader<'a> {
    node: &'a Node,
    store: &'a ContentStore,
    path: String,
}

impl ReadAt for NodeReader<'_> {
    fn size(&self) -> u64 {
        self.node.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .store
                .read_at(self.node, offset + done as u64, &mut buf[done..])
                .map_err(|e| FsError::Io {
                    path: self.path.clone(),
                    source: Arc::new(e),
                })?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

/// The config fields the closure needs, taken from an image config.
pub fn config_of(view: &whittle_image::ConfigView) -> ImageConfig {
    ImageConfig {
        env: view.env.clone().unwrap_or_default(),
        entrypoint: view.entrypoint.clone().unwrap_or_default(),
        cmd: view.cmd.clone().unwrap_or_default(),
        working_dir: view.working_dir.clone().unwrap_or_default(),
        user: view.user.clone().unwrap_or_default(),
    }
}

/// Expands arguments with glob characters (`/usr/bin/*`) to the executable regular files of
/// the image that match; other arguments pass through unchanged.
fn expand_globs(tree: &FsTree, paths: Vec<String>) -> Result<Vec<String>, whittle_fstree::Error> {
    let mut out = Vec::new();
    for p in paths {
        if !p.contains(['*', '?', '[']) {
            out.push(p);
            continue;
        }
        let glob = globset::GlobBuilder::new(&p)
            .literal_separator(true)
            .build()
            .map_err(|e| whittle_fstree::Error::Io {
                path: p.clone().into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
            })?
            .compile_matcher();
        out.extend(
            tree.iter()
                .filter(|(_, n)| {
                    matches!(n.kind, TreeKind::File { .. }) && n.meta.mode & 0o111 != 0
                })
                .map(|(k, _)| whittle_fstree::display_path(k))
                .filter(|d| glob.is_match(d)),
        );
    }
    Ok(out)
}

/// Opens and flattens `r`, then computes the closure of `paths` (or of the entrypoint).
pub fn image_closure(
    r: &ImageRef,
    paths: Vec<String>,
    progress: Option<whittle_fstree::Progress<'_>>,
) -> Result<Closure, whittle_fstree::Error> {
    let image = whittle_image::open(r)?;
    let flat = flatten(&image, FlattenOptions::default(), progress)?;
    let fs = ImageRootFs {
        tree: &flat.tree,
        store: &flat.store,
    };
    let paths = expand_globs(&flat.tree, paths)?;
    let req = Request {
        config: config_of(&image.config.view()),
        paths,
    };
    Ok(Analyzer::new(&fs).closure(&req))
}
