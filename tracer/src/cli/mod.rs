//! The `pagefail` command line: one file per subcommand.

pub mod common;
pub mod report;
pub mod watch;
