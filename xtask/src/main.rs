//! Developer tasks for pagefail: `cargo xtask <command>`.

mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "pagefail developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot Debian kernels under qemu and capture test fixtures
    /// (tracepoint format, /proc memory state, kernel facts) into tests/fixtures.
    VmCapture(vm::capture::CaptureArgs),
    /// Boot Debian kernels with modules and host binaries in the initramfs,
    /// to check the VM runner works.
    VmSmoke(vm::smoke::SmokeArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::VmCapture(args) => vm::capture::run(&args),
        Command::VmSmoke(args) => vm::smoke::run(&args),
    }
}
