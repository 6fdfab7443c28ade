//! whittle-rules
