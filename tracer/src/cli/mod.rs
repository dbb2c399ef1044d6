//! The `pagefail` command line: one file per subcommand.

pub mod watch;
