//! Project tasks: `cargo xtask setup | build | run | test | vm-capture | vm-smoke`.

mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "pagefail's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the build needs (Debian/Ubuntu, as root), or print the commands.
    Setup,
    /// Build the release binary (kernel program embedded): target/release/pagefail.
    Build,
    /// Build and run `pagefail <ARGS>` as root (through sudo when not root).
    ///
    /// Example: cargo xtask run -- watch --all --duration 5
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test tier: unit, then kernel (root, serial).
    Test,
    /// Boot Debian kernels under qemu and capture test fixtures
    /// (tracepoint format, /proc memory state, kernel facts) into tests/fixtures.
    VmCapture(vm::capture::CaptureArgs),
    /// Boot Debian kernels with modules and host binaries in the initramfs,
    /// to check the VM runner works.
    VmSmoke(vm::smoke::SmokeArgs),
    /// Real atomic failures in Debian kernels under qemu: pagefail against tracefs.
    ///
    /// Example: cargo xtask vm-test --kernel 6.1
    VmTest(vm::test::TestArgs),
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    c.current_dir(workspace_root());
    c
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            == Some("0")
    })
}

fn build_release() -> anyhow::Result<PathBuf> {
    setup::ensure_toolchain()?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "tracer", "--bin", "pagefail"]);
    run(c)?;
    Ok(workspace_root().join("target/release/pagefail"))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ensure_toolchain(),
        Task::Build => build_release().map(|p| eprintln!("xtask: built {}", p.display())),
        Task::Run { args } => {
            let bin = build_release()?;
            let mut c = if is_root() {
                Command::new(&bin)
            } else {
                let mut s = Command::new("sudo");
                s.arg(&bin);
                s
            };
            c.args(&args);
            let status = c
                .status()
                .with_context(|| format!("cannot run {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test => test(),
        Task::VmCapture(args) => vm::capture::run(&args),
        Task::VmSmoke(args) => vm::smoke::run(&args),
        Task::VmTest(args) => vm::test::run(&args),
    }
}

fn test() -> anyhow::Result<()> {
    setup::ensure_toolchain()?;
    // Unit tier: no root needed.
    let mut c = cargo();
    c.args([
        "test",
        "-p",
        "tracer",
        "-p",
        "tracer-common",
        "-p",
        "xtask",
        "--lib",
        "--bins",
    ]);
    run(c)?;
    // Kernel tier: loads the real program; serial, since tests share kernel state.
    let bin = build_release()?;
    let mut c = cargo();
    c.args(["test", "-p", "pagefail-tests", "--", "--test-threads=1"])
        .env("PAGEFAIL_BIN", &bin);
    if std::env::var_os("CI").is_some() {
        // In CI a missing capability is a failure, not a skip.
        c.env("PAGEFAIL_REQUIRE_BPF", "1");
    }
    run(c)
}
