//! whittle-squash
