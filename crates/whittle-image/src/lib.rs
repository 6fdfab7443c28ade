//! whittle-image
