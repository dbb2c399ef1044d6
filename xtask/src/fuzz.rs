//! `cargo xtask fuzz`: run each cargo-fuzz target in `fuzz/` for a while,
//! seeded from the test fixtures. Stable Rust, no sanitizer (the address
//! sanitizer needs nightly: `cargo +nightly fuzz run <target>`).
//!
//! `--sanitizer none` is what makes stable enough: cargo-fuzz then passes
//! only stable codegen options (`-Cpasses=sancov-module`, `-Cllvm-args=...`,
//! `--cfg fuzzing`); `-Zsanitizer` and `-Zbuild-std` come only with a
//! sanitizer or `--build-std`. No `RUSTC_BOOTSTRAP` is involved.
//!
//! `cargo xtask test` runs every target briefly through [`run_step`]: one
//! debug build of all targets (`--dev`: overflow checks and debug assertions
//! on, and a cold build in less than half the time of the release one), then
//! each target for a few seconds; a crash fails that target's test, and the
//! executions are reported. Long runs (`cargo xtask fuzz`) use the release
//! build, several times more executions a second.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{run, workspace_root};

/// The targets in fuzz/Cargo.toml, each with the fixture files that seed it.
pub const TARGETS: [(&str, &[&str]); 5] = [
    ("kernel_log", &["tests/fixtures/logs"]),
    ("gfp_format", &["tests/fixtures/format"]),
    ("proc_memory", &["tests/fixtures/proc"]),
    ("rules", &["tracer/src/classify/builtin-rules.txt"]),
    ("report_csv", &[]),
];

/// An input that runs longer than this is reported as a hang (libFuzzer's
/// `-timeout`): no parser should need seconds for 256 KiB.
const INPUT_TIMEOUT_SECS: u64 = 10;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Only this target (default: all).
    #[arg(long)]
    pub target: Option<String>,
    /// Debug build (`cargo fuzz --dev`): overflow checks and debug
    /// assertions on, quicker to build, several times fewer executions.
    #[arg(long)]
    pub dev: bool,
}

/// The outcome of running one target.
#[derive(Debug, Clone)]
pub struct TargetRun {
    pub target: &'static str,
    /// libFuzzer exited 0: no crash, leak, hang or out-of-memory input.
    pub ok: bool,
    /// Inputs executed (`stat::number_of_executed_units`, else the last `#N`).
    pub executions: Option<u64>,
    pub seconds: f64,
    /// For a failure: the reason and where libFuzzer left the input.
    pub detail: String,
}

/// What [`run_step`] did.
#[derive(Debug, Clone)]
pub struct Step {
    /// Seconds spent building the targets (cold: minutes; warm: about one).
    pub build_seconds: f64,
    pub runs: Vec<TargetRun>,
}

fn corpus_dir(target: &str) -> PathBuf {
    workspace_root().join("target/fuzz-corpus").join(target)
}

/// Files under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Seed a target's corpus: fixture files as they are (the proc parser
/// picks its file by the first byte, so each proc fixture goes in once per
/// parser), plus a few hand-written inputs.
fn seed(target: &str, sources: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = corpus_dir(target);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = workspace_root();
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for src in sources {
        let mut found = Vec::new();
        let src = root.join(src);
        if src.is_file() {
            found.push(src);
        } else {
            files(&src, &mut found);
        }
        for f in found {
            let data = fs::read(&f)?;
            if target == "proc_memory" {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let which = match name {
                    "buddyinfo" => 0u8,
                    "zoneinfo" => 1,
                    "pagetypeinfo" => 2,
                    "vmstat" => 3,
                    "min_free_kbytes" => 4,
                    _ => continue,
                };
                inputs.push([&[which][..], &data].concat());
            } else {
                inputs.push(data);
            }
        }
    }
    if target == "report_csv" {
        inputs.push(
            b"window_start,window_end,host,kernel,comm,pid,cgroup,context,path,order,gfp,gfp_flags,atomic,failures,warned,first_seen,last_seen,top_stack\n\
2026-11-22T03:00:00Z,2026-11-22T03:00:05Z,h,6.1.0,nginx,42,/,softirq,tcp,3,0x820,GFP_ATOMIC,true,7,0,2026-11-22T03:00:01Z,2026-11-22T03:00:02Z,net_rx_action;tcp_v4_rcv\n"
                .to_vec(),
        );
    }
    for (i, data) in inputs.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:03}")), data)?;
    }
    Ok(dir)
}

/// Install cargo-fuzz when `cargo fuzz` is missing (`cargo install`, ~40 s).
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let found = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let mut c = Command::new("cargo");
        c.args(["install", "cargo-fuzz", "--locked"]);
        run(c)?;
    }
    Ok(())
}

/// `cargo fuzz <sub> --sanitizer none`, with `--dev` for a debug build.
fn cargo_fuzz(sub: &str, dev: bool) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(workspace_root())
        .args(["fuzz", sub, "--sanitizer", "none"]);
    if dev {
        c.arg("--dev");
    }
    c
}

/// Build every target once (one cargo invocation shares the dependencies).
fn build_all(dev: bool) -> anyhow::Result<f64> {
    let start = Instant::now();
    let c = cargo_fuzz("build", dev);
    run(c).context("building the fuzz targets failed (see the cargo output above)")?;
    Ok(start.elapsed().as_secs_f64())
}

/// The number of inputs a libFuzzer run executed, from its output:
/// `stat::number_of_executed_units: N` (printed with `-print_final_stats=1`),
/// else the last status line `#N ...`.
fn executions(output: &str) -> Option<u64> {
    let from_stats = output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    });
    from_stats.or_else(|| {
        output.lines().rev().find_map(|l| {
            let rest = l.strip_prefix('#')?;
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            n.parse().ok()
        })
    })
}

/// Why a libFuzzer run of `target` failed and where it left the input, from
/// its output: the panic (with its message, printed on the next line) or
/// libFuzzer's error line, and the artifact's path.
fn failure_detail(target: &str, output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let reason = lines
        .iter()
        .position(|l| l.contains("panicked at"))
        .map(|i| {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            format!("{} {next}", lines[i].trim()).trim_end().to_owned()
        })
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.contains("ERROR: libFuzzer:"))
                .map(|l| l.trim().to_owned())
        });
    let artifact = lines
        .iter()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()));
    match (reason, artifact) {
        (Some(r), Some(a)) => {
            format!("{r}; input: {a} (reproduce: cargo fuzz run --sanitizer none {target} {a})")
        }
        (Some(r), None) => r,
        (None, Some(a)) => format!("input: {a}"),
        (None, None) => "libFuzzer failed; see its output above".to_owned(),
    }
}

/// Run one (already built) target for `seconds`, echoing libFuzzer's output
/// to stderr. The run is killed if it outlives `seconds` by far (a build or
/// an input that hangs beyond libFuzzer's own timeout).
fn run_target(
    target: &'static str,
    sources: &[&str],
    seconds: u64,
    dev: bool,
) -> anyhow::Result<TargetRun> {
    let corpus = seed(target, sources)?;
    let mut c = cargo_fuzz("run", dev);
    c.arg(target)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-max_len=262144")
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::piped())
        // Its own process group, so a run past the limit is killed with
        // the fuzzer cargo started.
        .process_group(0);
    eprintln!("xtask: {c:?}");
    let start = Instant::now();
    let mut child = c.spawn().with_context(|| format!("cannot run {c:?}"))?;
    let stderr = child.stderr.take().context("no stderr from cargo fuzz")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let limit = Duration::from_secs(seconds.saturating_mul(3) + 120);
    let mut output = String::new();
    let mut killed = false;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                eprintln!("{line}");
                output.push_str(&line);
                output.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break child.wait()?,
        }
        if start.elapsed() > limit && !killed {
            let pgid = i32::try_from(child.id()).context("pid out of range")?;
            // SAFETY: kill(2) on the process group of our own child.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            killed = true;
        }
    };
    let _ = reader.join();
    let seconds_taken = start.elapsed().as_secs_f64();
    let ok = status.success() && !killed;
    let detail = if killed {
        format!(
            "killed after {:.0} s (limit {} s)",
            seconds_taken,
            limit.as_secs()
        )
    } else if ok {
        String::new()
    } else {
        failure_detail(target, &output)
    };
    Ok(TargetRun {
        target,
        ok,
        executions: executions(&output),
        seconds: seconds_taken,
        detail,
    })
}

/// The targets `only` selects (all when `None`).
fn selected(only: Option<&str>) -> anyhow::Result<Vec<(&'static str, &'static [&'static str])>> {
    let t: Vec<_> = TARGETS
        .iter()
        .copied()
        .filter(|(name, _)| only.is_none_or(|o| o == *name))
        .collect();
    if t.is_empty() {
        let names: Vec<_> = TARGETS.iter().map(|(n, _)| *n).collect();
        bail!(
            "no fuzz target named {only:?}: use one of {}",
            names.join(", ")
        );
    }
    Ok(t)
}

/// Build, then run each selected target for `seconds`.
///
/// # Errors
/// When cargo-fuzz cannot be installed, the targets do not build, or a run
/// cannot be started. A crash is a failed [`TargetRun`], not an `Err`.
pub fn run_step(seconds: u64, only: Option<&str>, dev: bool) -> anyhow::Result<Step> {
    let targets = selected(only)?;
    ensure_cargo_fuzz()?;
    let build_seconds = build_all(dev)?;
    eprintln!("xtask: fuzz targets built in {build_seconds:.0} s");
    let mut runs = Vec::new();
    for (target, sources) in targets {
        let r = run_target(target, sources, seconds, dev)?;
        eprintln!(
            "xtask: fuzz {target}: {} executions in {:.1} s{}",
            r.executions
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            r.seconds,
            if r.ok {
                String::new()
            } else {
                format!(": FAILED: {}", r.detail)
            }
        );
        runs.push(r);
    }
    Ok(Step {
        build_seconds,
        runs,
    })
}

/// Run `cargo xtask fuzz`.
///
/// # Errors
/// A target that crashes (its input is left in fuzz/artifacts/<target>/), or
/// a build failure.
pub fn run_fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    let step = run_step(args.seconds, args.target.as_deref(), args.dev)?;
    let failed: Vec<_> = step
        .runs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.target, r.detail))
        .collect();
    if !failed.is_empty() {
        bail!("fuzzing found problems:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_come_from_the_final_stats() {
        let out = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #65536\tpulse  cov: 900 ft: 2000 corp: 80/4Kb exec/s: 21845 rss: 60Mb\n\
                   #98765\tDONE   cov: 910 ft: 2010 corp: 81/4Kb lim: 4096 exec/s: 19753 rss: 61Mb\n\
                   Done 98765 runs in 5 second(s)\n\
                   stat::number_of_executed_units: 98766\nstat::average_exec_per_sec:     19753\n";
        assert_eq!(executions(out), Some(98766));
        // Without -print_final_stats the last status line counts.
        let short: String = out.lines().take(4).flat_map(|l| [l, "\n"]).collect();
        assert_eq!(executions(&short), Some(98765));
        assert_eq!(executions("error: no such target\n"), None);
    }

    #[test]
    fn a_crash_names_its_input() {
        let out = "#123\tNEW cov: 1\nthread '<unnamed>' panicked at fuzz_targets/rules.rs:9:5:\n\
                   injected crash\n==77== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='/w/fuzz/artifacts/rules/'; Test unit written to /w/fuzz/artifacts/rules/crash-abc\n";
        let d = failure_detail("rules", out);
        assert!(
            d.contains("panicked at fuzz_targets/rules.rs:9:5: injected crash"),
            "{d}"
        );
        assert!(
            d.contains("cargo fuzz run --sanitizer none rules /w/fuzz/artifacts/rules/crash-abc"),
            "{d}"
        );
        let oom = "==9== ERROR: libFuzzer: out-of-memory (used: 2100Mb; exceeds: 2048Mb)\n";
        assert!(failure_detail("rules", oom).starts_with("==9== ERROR: libFuzzer: out-of-memory"));
        assert!(selected(Some("nope")).is_err());
        assert_eq!(selected(None).map(|t| t.len()).ok(), Some(TARGETS.len()));
    }
}
