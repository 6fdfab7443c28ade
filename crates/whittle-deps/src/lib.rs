//! whittle-deps
