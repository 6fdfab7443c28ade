//! Images in and out of whittle.
//!
//! Every later stage (flattening, evidence, the slim build) sees an image only through this
//! crate: an [`ImageRef`] names where it lives, [`open`] turns that into an [`Image`] whose layer
//! blobs are windows into files on disk (so content can be read again at random offsets without
//! holding it in memory), and [`write`] produces any of the supported transports. Digests are
//! verified while bytes stream past, never trusted.

mod config;
mod digest;
mod error;
mod hashio;
mod reference;
mod tarindex;

pub mod compression;
pub mod read;
pub mod units;
pub mod write;

pub use config::{source_date_epoch, ConfigView, ImageConfig};
pub use digest::Digest;
pub use error::{Error, Result};
pub use hashio::{HashingReader, HashingWriter, VerifyingReader};
pub use read::{open, BlobWindow, Image, Layer, LayerDigests, LayerSource};
pub use reference::{ImageRef, Transport};
pub use tarindex::{tar_error, TarIndex};
pub use write::{write, LayerOut, NewImage, WriteSummary};

/// Largest JSON document (manifest, index, config) whittle will read. Real configs are a few
/// KiB; a bound keeps a lying size field from turning into an allocation.
pub const MAX_JSON_BYTES: u64 = 32 << 20;
