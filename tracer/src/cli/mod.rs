//! The `pagefail` subcommands, one file each.

pub mod logs;
