pub mod audit;
pub mod build;
pub mod debug;
pub mod deps;
pub mod family;
pub mod harden;
pub mod inspect;
pub mod logs;
pub mod metrics;
pub mod ps;
pub mod route;
pub mod squash;
pub mod top;
pub mod trace;

// Image references are parsed by each command, not by clap, so a bad one is an ordinary
// error (one line, exit 1) rather than a usage error.
