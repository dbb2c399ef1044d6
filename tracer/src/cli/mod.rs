//! The `pagefail` command line: one file per subcommand.

pub mod check;
pub mod common;
pub mod docs;
pub mod logs;
pub mod record;
pub mod report;
pub mod sample;
pub mod watch;
