//! pagefail's userspace: load and attach the kernel program, collect failure
//! records, attribute and aggregate them, export them.

pub mod classify;
pub mod cli;
pub mod export;
pub mod gfp;
pub mod logs;
