//! whittle-fstree
