//! whittle-layer
