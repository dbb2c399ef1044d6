//! The `pagefail` command line: one file per subcommand.

pub mod check;
pub mod sample;
pub mod watch;
