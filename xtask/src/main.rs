//! Project tasks: `cargo xtask setup | build | run | test | bench | dist | fuzz | vm-test | vm-capture | vm-smoke`.

mod bench;
mod dist;
mod fuzz;
mod setup;
mod soak;
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
    /// Run every test tier: unit, kernel (root, serial), then the VM tier
    /// (Debian 5.10, 6.1, 6.12 guests with real atomic network-path failures).
    Test {
        /// Leave out the VM tier (quick local runs).
        #[arg(long)]
        skip_vm: bool,
    },
    /// Static x86_64 binary, man pages, completions, deploy files and README
    /// in target/dist/pagefail-<version>-x86_64.tar.gz, and a .deb.
    Dist(dist::DistArgs),
    /// Run the cargo-fuzz targets in fuzz/ (log, format file, /proc, rules,
    /// CSV parsers), seeded from tests/fixtures.
    ///
    /// Example: cargo xtask fuzz --seconds 3600 --target kernel_log
    Fuzz(fuzz::FuzzArgs),
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
    /// Benchmarks against the goals, side by side with bpftrace and perf:
    /// hotpath, progtime, storm, startup, collector. Writes BENCHMARKS.md.
    ///
    /// Example: cargo xtask bench hotpath --rounds 10
    Bench(bench::BenchArgs),
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
        Task::Test { skip_vm } => test(skip_vm),
        Task::Dist(args) => dist::run_dist(&args),
        Task::Fuzz(args) => fuzz::run_fuzz(&args),
        Task::VmCapture(args) => vm::capture::run(&args),
        Task::VmSmoke(args) => vm::smoke::run(&args),
        Task::VmTest(args) => vm::test::run(&args),
        Task::Bench(args) => bench::run_bench(&args),
    }
}

/// Totals of cargo's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    /// Add the counts of one `test result: ok. 4 passed; 0 failed; 1 ignored; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Run a `cargo test` command, echoing its output and adding up its results.
fn run_tests(mut cmd: Command, totals: &mut TestTotals) -> anyhow::Result<bool> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
    }
    Ok(child.wait()?.success())
}

fn test(skip_vm: bool) -> anyhow::Result<()> {
    setup::ensure_toolchain()?;
    let mut totals = TestTotals::default();
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
    let unit_ok = run_tests(c, &mut totals)?;
    // Kernel tier: loads the real program; serial, since tests share kernel state.
    let bin = build_release()?;
    let mut c = cargo();
    c.args([
        "test",
        "-p",
        "pagefail-tests",
        "--tests",
        "--",
        "--test-threads=1",
    ])
    .env("PAGEFAIL_BIN", &bin);
    if std::env::var_os("CI").is_some() {
        // In CI a missing capability is a failure, not a skip.
        c.env("PAGEFAIL_REQUIRE_BPF", "1");
    }
    let kernel_ok = run_tests(c, &mut totals)?;
    let vm_ok = if skip_vm {
        eprintln!("xtask: VM tier skipped (--skip-vm)");
        true
    } else {
        vm_tier(&mut totals)?
    };
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !(unit_ok && kernel_ok && vm_ok) || totals.failed > 0 {
        bail!("test failures");
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The VM tier: every Debian kernel, each run counted as one test.
fn vm_tier(totals: &mut TestTotals) -> anyhow::Result<bool> {
    let report = vm::test::run_all(&["5.10", "6.1", "6.12"], "atomic-net")?;
    let md = report.markdown();
    println!("{md}");
    let path = vm::vm_dir().join("report.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    for row in &report.rows {
        let ok = row.ok();
        println!(
            "test vm::{} ... {}",
            row.kernel,
            if ok { "ok" } else { "FAILED" }
        );
        if ok {
            totals.passed += 1;
        } else {
            totals.failed += 1;
        }
    }
    Ok(report.ok())
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn adds_up_cargo_result_lines() {
        let mut t = TestTotals::default();
        t.add_line(
            "test result: ok. 63 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 4 tests");
        assert_eq!(
            t,
            TestTotals {
                passed: 66,
                failed: 2,
                ignored: 1
            }
        );
    }
}
