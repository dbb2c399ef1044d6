//! Project tasks: `cargo xtask setup | build | run | lint | test | bench | dist | fuzz | vm-test | vm-capture | vm-smoke`.

mod arch;
mod bench;
mod cross;
mod deploy;
mod dist;
mod elf;
mod fuzz;
mod lint;
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
    /// rustfmt --check and clippy -D warnings on every crate, the kernel
    /// program included (the first step of `test`).
    Lint,
    /// Run the lint step, then every test tier: unit, kernel (root, serial), dist (static binary,
    /// .deb installed and removed with dpkg in a scratch root), fuzz (each
    /// target a few seconds), then the VM tier (Debian 5.10, 6.1, 6.12 guests
    /// with real atomic network-path failures, and the static binary alone in
    /// a bare initramfs).
    Test(TestArgs),
    /// Static `x86_64` binary, man pages, completions, deploy files and README
    /// in target/dist/pagefail-<version>-`x86_64.tar.gz`, and a .deb; with
    /// `--arch arm64` the same for aarch64, cross-built.
    ///
    /// Example: cargo xtask dist --arch arm64
    Dist(dist::DistArgs),
    /// Run the cargo-fuzz targets in fuzz/ (log, format file, /proc, rules,
    /// CSV parsers), seeded from tests/fixtures.
    ///
    /// Example: cargo xtask fuzz --seconds 3600 --target `kernel_log`
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
    ///
    /// Example: cargo xtask vm-test --arch arm64 --kernel 6.1
    VmTest(vm::test::TestArgs),
    /// Benchmarks against the goals, side by side with bpftrace and perf:
    /// hotpath, progtime, storm, startup, collector. Writes BENCHMARKS.md.
    ///
    /// Example: cargo xtask bench hotpath --rounds 10
    Bench(bench::BenchArgs),
}

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "clap flags: each bool is one --skip-* option"
)]
struct TestArgs {
    /// Leave out the lint step (rustfmt and clippy).
    #[arg(long)]
    skip_lint: bool,
    /// Leave out the VM tier (quick local runs).
    #[arg(long)]
    skip_vm: bool,
    /// Leave out the fuzz step.
    #[arg(long)]
    skip_fuzz: bool,
    /// Leave out the arm64 parts (cross-built dist, logs comparison, arm64
    /// guests).
    #[arg(long)]
    skip_arm64: bool,
    /// Seconds each fuzz target runs in the fuzz step.
    #[arg(long, default_value_t = 5)]
    fuzz_seconds: u64,
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
        Task::Lint => lint::run_lint(),
        Task::Test(args) => test(&args),
        Task::Dist(args) => dist::run_dist(&args),
        Task::Fuzz(args) => fuzz::run_fuzz(&args),
        Task::VmCapture(args) => vm::capture::run(&args),
        Task::VmSmoke(args) => vm::smoke::run(&args),
        Task::VmTest(args) => vm::test::run(&args),
        Task::Bench(args) => bench::run_bench(&args),
    }
}

/// Totals of cargo's `test result:` lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Why each failed test xtask ran itself failed, repeated at the end
    /// of the run so the last lines of a CI log name the failing checks.
    why: Vec<String>,
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

    /// Count one test of a tier xtask runs itself, printed as cargo does.
    fn record(&mut self, name: &str, ok: bool, note: &str) {
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" ({note})")
        };
        println!("test {name} ... {}{note}", if ok { "ok" } else { "FAILED" });
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Count a VM run: a failure also keeps the checks that failed (or the
    /// error that stopped the run) for the recap at the end.
    fn record_checks(
        &mut self,
        name: &str,
        ok: bool,
        note: &str,
        error: Option<&str>,
        checks: &[vm::test::Check],
    ) {
        self.record(name, ok, note);
        if ok {
            return;
        }
        if let Some(e) = error {
            self.why.push(format!("{name}: {}", one_line(e)));
        }
        for c in checks.iter().filter(|c| !c.pass) {
            self.why
                .push(format!("{name}: [ ] {}: {}", c.name, one_line(&c.detail)));
        }
        if error.is_none() && checks.is_empty() {
            // Failed with nothing to show: say so rather than print no reason.
            self.why.push(format!(
                "{name}: no check was made (no result from the guest): see its console log under target/vm/logs"
            ));
        }
    }
}

/// A detail on one line, cut to a length a CI log's tail keeps readable.
fn one_line(s: &str) -> String {
    const MAX: usize = 400;
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &flat[..i]),
        None => flat,
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
    // A panic's location line; the message follows on the next line.
    let mut panicked: Option<String> = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
        if let Some(at) = panicked.take() {
            totals.why.push(one_line(&format!("{at}: {line}")));
        }
        if line.starts_with("thread '") && line.contains("panicked at") {
            panicked = Some(line);
        }
    }
    Ok(child.wait()?.success())
}

fn test(args: &TestArgs) -> anyhow::Result<()> {
    setup::ensure_toolchain()?;
    let mut totals = TestTotals::default();
    let lint_ok = if args.skip_lint {
        eprintln!("xtask: lint step skipped (--skip-lint)");
        true
    } else {
        lint_step(&mut totals)
    };
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
        "--no-fail-fast",
    ]);
    let unit_ok = run_tests(c, &mut totals)?;
    // Deployment files: rules and their unit tests, the dashboard. promtool
    // and prometheus (the kernel tier scrapes pagefail with it) come from
    // Debian's `prometheus` package.
    deploy_step(&mut totals);
    // Kernel tier: loads the real program; serial, since tests share kernel state.
    // It runs the static binary `dist` ships, as the dist and VM tiers do, so a
    // test run builds pagefail in release once.
    let bin = dist::build_static()?;
    let mut c = cargo();
    c.args([
        "test",
        "-p",
        "pagefail-tests",
        "--tests",
        // Every test file runs even when an earlier one fails.
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ])
    .env("PAGEFAIL_BIN", &bin);
    if std::env::var_os("CI").is_some() {
        // In CI a missing capability is a failure, not a skip.
        c.env("PAGEFAIL_REQUIRE_BPF", "1");
    }
    let kernel_ok = run_tests(c, &mut totals)?;
    dist_tier(&mut totals);
    if args.skip_arm64 {
        eprintln!("xtask: arm64 parts skipped (--skip-arm64)");
    } else {
        dist_arm64_tier(&mut totals);
    }
    let fuzz_summary = if args.skip_fuzz {
        eprintln!("xtask: fuzz step skipped (--skip-fuzz)");
        None
    } else {
        Some(fuzz_tier(args.fuzz_seconds, &mut totals))
    };
    let vm_ok = if args.skip_vm {
        eprintln!("xtask: VM tier skipped (--skip-vm)");
        true
    } else {
        vm_tier(&mut totals, !args.skip_arm64)?
    };
    if let Some(s) = fuzz_summary {
        println!("{s}");
    }
    if !totals.why.is_empty() {
        println!("why the runs above failed:");
        for w in &totals.why {
            println!("  {w}");
        }
    }
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !lint_ok {
        bail!("lint step failed: see `lint::` above, or run `cargo xtask lint`");
    }
    if !(unit_ok && kernel_ok && vm_ok) || totals.failed > 0 {
        bail!("test failures");
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The deployment checks, each a test; installs `prometheus` when missing.
fn deploy_step(totals: &mut TestTotals) {
    if let Err(e) = setup::ensure_packages(&["prometheus"]) {
        totals.record("deploy::tools", false, &format!("{e:#}"));
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for c in deploy::run_checks(&root) {
        match c.result {
            Ok(note) => totals.record(c.name, true, note.lines().last().unwrap_or("").trim()),
            Err(e) => {
                eprintln!("{e:#}");
                totals.record(c.name, false, "see above");
            }
        }
    }
}

/// The lint step: each check (rustfmt, clippy, clippy on the kernel program)
/// a test. Whether all passed.
fn lint_step(totals: &mut TestTotals) -> bool {
    match lint::run_checks() {
        Ok(checks) => {
            for c in &checks {
                totals.record(c.name, c.ok, "");
                if !c.ok {
                    eprintln!("xtask: {} failed: {}", c.name, c.hint);
                }
            }
            checks.iter().all(|c| c.ok)
        }
        Err(e) => {
            eprintln!("xtask: lint step failed: {e:#}");
            totals.record("lint::tools", false, "not run");
            false
        }
    }
}

/// The arm64 part of the dist tier: the cross-built static aarch64 binary,
/// its tarball and .deb, and its `logs` output against the `x86_64` binary's
/// on every log fixture (under qemu user mode); three tests.
fn dist_arm64_tier(totals: &mut TestTotals) {
    let arch = arch::Arch::Arm64;
    let start = std::time::Instant::now();
    let bin = match dist::build_tarball_for(arch) {
        Ok((bin, tarball)) => {
            let size = std::fs::metadata(&bin).map_or(0, |m| m.len());
            totals.record(
                "dist::arm64_static_binary_and_tarball",
                true,
                &format!(
                    "{}; {size} bytes unstripped; {:.0} s",
                    tarball.display(),
                    start.elapsed().as_secs_f64()
                ),
            );
            Some(bin)
        }
        Err(e) => {
            eprintln!("xtask: arm64 dist failed: {e:#}");
            totals.record("dist::arm64_static_binary_and_tarball", false, "");
            None
        }
    };
    match bin.as_ref().map(|_| dist::build_deb_for(arch)) {
        Some(Ok(c)) => totals.record(
            "dist::arm64_deb_installs_and_removes",
            true,
            &format!("{} files, {}", c.files, c.installed_version),
        ),
        Some(Err(e)) => {
            eprintln!("xtask: arm64 .deb check failed: {e:#}");
            totals.record("dist::arm64_deb_installs_and_removes", false, "");
        }
        None => totals.record("dist::arm64_deb_installs_and_removes", false, "no binary"),
    }
    let compared =
        bin.map(|bin| dist::build_static().and_then(|host| dist::compare_logs(&host, &bin, arch)));
    match compared {
        Some(Ok(n)) => totals.record(
            "dist::arm64_logs_output_equals_x86_64",
            true,
            &format!("{n} runs byte for byte"),
        ),
        Some(Err(e)) => {
            eprintln!("xtask: arm64 logs comparison failed: {e:#}");
            totals.record("dist::arm64_logs_output_equals_x86_64", false, "");
        }
        None => totals.record("dist::arm64_logs_output_equals_x86_64", false, "no binary"),
    }
}

/// The dist tier: the static binary and tarball, then the .deb installed and
/// removed with dpkg in a scratch root; two tests.
fn dist_tier(totals: &mut TestTotals) {
    match dist::build_tarball() {
        Ok((_, tarball)) => totals.record(
            "dist::static_binary_and_tarball",
            true,
            &tarball.display().to_string(),
        ),
        Err(e) => {
            eprintln!("xtask: dist failed: {e:#}");
            totals.record("dist::static_binary_and_tarball", false, "");
            totals.record(
                "dist::deb_installs_and_removes",
                false,
                "no binary to package",
            );
            return;
        }
    }
    match dist::build_deb() {
        Ok(c) => totals.record(
            "dist::deb_installs_and_removes",
            true,
            &format!("{} files, {}", c.files, c.installed_version),
        ),
        Err(e) => {
            eprintln!("xtask: .deb check failed: {e:#}");
            totals.record("dist::deb_installs_and_removes", false, "");
        }
    }
}

/// The fuzz step: every target for `seconds`, each a test. Returns the line
/// that reports the executions, printed again next to the final summary.
fn fuzz_tier(seconds: u64, totals: &mut TestTotals) -> String {
    let start = std::time::Instant::now();
    // A debug build: cold it builds in less than half the time of the
    // release one, and overflow checks and debug assertions are on.
    match fuzz::run_step(seconds, None, true) {
        Ok(step) => {
            let mut execs = Vec::new();
            for r in &step.runs {
                let n = r
                    .executions
                    .map_or_else(|| "?".to_owned(), |n| n.to_string());
                let note = if r.ok {
                    format!("{n} executions in {:.1} s", r.seconds)
                } else {
                    format!("{n} executions; {}", r.detail)
                };
                totals.record(&format!("fuzz::{}", r.target), r.ok, &note);
                execs.push(format!("{} {n}", r.target));
            }
            format!(
                "fuzz: {} s per target (debug build), executions: {}; step {:.0} s (build {:.0} s)",
                seconds,
                execs.join(", "),
                start.elapsed().as_secs_f64(),
                step.build_seconds
            )
        }
        Err(e) => {
            eprintln!("xtask: fuzz step failed: {e:#}");
            for (target, _) in fuzz::TARGETS {
                totals.record(&format!("fuzz::{target}"), false, "not run");
            }
            format!("fuzz: not run: {e:#}")
        }
    }
}

/// The VM tier: every Debian kernel, each run counted as one test, then the
/// bare-initramfs check of the static binary and the "under pressure"
/// scenario (one more test each).
fn vm_tier(totals: &mut TestTotals, arm64: bool) -> anyhow::Result<bool> {
    let mut report = vm::test::run_all(&["5.10", "6.1", "6.12"], "atomic-net")?;
    let arm = arch::Arch::Arm64;
    if arm64 {
        // One arm64 kernel: cross-built binaries in Debian's cloud-arm64
        // kernel. A run that cannot be made is a failed row, not an abort.
        match vm::test::run_matrix_for(arm, &[vm::bare::KERNEL], "atomic-net", None) {
            Ok(r) => report.rows.extend(r.rows),
            Err(e) => report.rows.push(vm::test::Row {
                kernel: vm::test::kernel_label(vm::bare::KERNEL, arm),
                error: Some(format!("{e:#}")),
                ..vm::test::Row::default()
            }),
        }
    }
    let mut md = report.markdown();
    let bare = vm::bare::run(vm::bare::KERNEL);
    md.push_str(&bare.markdown());
    let bare_arm64 = arm64.then(|| vm::bare::run_for(vm::bare::KERNEL, arm));
    if let Some(b) = &bare_arm64 {
        md.push_str(&b.markdown());
    }
    let pressure = vm::pressure::run(vm::pressure::KERNEL);
    md.push_str(&pressure.markdown());
    println!("{md}");
    let path = vm::vm_dir().join("report.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    for row in &report.rows {
        totals.record_checks(
            &format!("vm::{}", row.kernel.replace(' ', "_")),
            row.ok(),
            &format!("{:.0} s", row.seconds),
            row.error.as_deref(),
            &row.checks,
        );
    }
    for b in std::iter::once(&bare).chain(&bare_arm64) {
        totals.record_checks(
            &format!("vm::bare_initramfs_{}", b.kernel.replace(' ', "_")),
            b.ok(),
            &format!("{:.0} s", b.seconds),
            b.error.as_deref(),
            &b.checks,
        );
    }
    totals.record_checks(
        &format!("vm::under_pressure_{}", pressure.kernel),
        pressure.ok(),
        &format!("{:.0} s", pressure.seconds),
        pressure.error.as_deref(),
        &pressure.checks,
    );
    Ok(report.ok()
        && bare.ok()
        && bare_arm64.as_ref().is_none_or(vm::bare::Outcome::ok)
        && pressure.ok())
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
                ignored: 1,
                why: Vec::new(),
            }
        );
        // Tests xtask runs itself (dist, fuzz targets, VM runs) count too.
        t.record("fuzz::rules", true, "1000 executions in 5.0 s");
        t.record("fuzz::kernel_log", false, "");
        assert_eq!((t.passed, t.failed, t.ignored), (67, 3, 1));
        // A failed VM run keeps its failed checks for the recap, not the passed ones.
        let check = |name, pass| crate::vm::test::Check {
            name,
            pass,
            detail: "pagefail 9\n  tracefs 10".into(),
        };
        t.record_checks("vm::6.1", true, "", None, &[check("count", true)]);
        assert!(t.why.is_empty());
        t.record_checks(
            "vm::6.1",
            false,
            "",
            Some("boot\ntimed out"),
            &[check("count", false), check("paths", true)],
        );
        assert_eq!(
            t.why,
            [
                "vm::6.1: boot timed out",
                "vm::6.1: [ ] count: pagefail 9 tracefs 10"
            ]
        );
        assert_eq!(t.failed, 4);
        // A failed run with neither an error nor a check still says something.
        t.record_checks("vm::5.10", false, "", None, &[]);
        assert_eq!(t.why.len(), 3);
        assert!(
            t.why[2].starts_with("vm::5.10: no check was made"),
            "{:?}",
            t.why
        );
    }
}
