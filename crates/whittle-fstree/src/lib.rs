//! The merged file system view of an image.
//!
//! Layers are applied bottom to top with the OCI layer rules (whiteouts, opaque whiteouts, a
//! non-directory replacing a directory's whole subtree, hardlinks keeping the content they had
//! when created). The result is an [`FsTree`]: path → [`Node`] with metadata and a
//! [`Content`] reference to where a regular file's bytes sit in its layer. Bytes are never held
//! in memory; [`ContentStore`] reads them back on demand from the layer blobs (or from a spool
//! of the decompressed stream when a blob is compressed).

mod content;
mod entry;
mod error;
mod extract;
mod flatten;
mod hostdir;
mod path;
mod tree;

pub use content::ContentStore;
pub use entry::{parse_layer, Entry, EntryKind, LayerEntries};
pub use error::{Error, Result};
pub use extract::{extract, ExtractOptions, ExtractSummary};
pub use flatten::{flatten, flatten_with, FlattenOptions, Flattened, Progress};
pub use path::{display_path, normalize, parent_of};
pub use tree::{Content, FsTree, Meta, Node, NodeKind};
