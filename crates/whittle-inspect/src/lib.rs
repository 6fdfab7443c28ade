//! whittle-inspect
