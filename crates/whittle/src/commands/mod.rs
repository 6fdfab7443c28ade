pub mod deps;
pub mod inspect;
pub mod squash;

use whittle_image::ImageRef;

/// Parses an image reference argument for clap.
pub fn image_ref(s: &str) -> Result<ImageRef, String> {
    ImageRef::parse(s).map_err(|e| e.to_string())
}
