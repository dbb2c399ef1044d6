//! `cargo xtask bench [NAME]`: pagefail's cost against its goals, side by
//! side with bpftrace and perf in the same run.
//!
//! Benchmarks, not tests: nothing here passes or fails on wall-clock numbers;
//! the figures go to `target/bench/results.json` and `BENCHMARKS.md`. Every
//! figure that compares tools is a ratio of paired runs taken in one
//! invocation, because other work on the machine makes absolute times noisy.

mod report;
mod tools;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::{build_release, cargo, run, workspace_root};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// One benchmark: hotpath, net, progtime, storm, startup, collector
    /// (default: all of these), or soak (`pagefail record`'s RSS over
    /// minutes).
    pub name: Option<String>,
    /// Paired rounds of the hot-path and start-up benchmarks.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Minutes of the `soak` benchmark (not part of `all`).
    #[arg(long, default_value_t = 5)]
    pub minutes: u64,
    /// Synthetic failures per second fed to the recorder during `soak`.
    #[arg(long, default_value_t = 20_000)]
    pub storm_rate: u64,
}

const NAMES: [&str; 6] = [
    "hotpath",
    "net",
    "progtime",
    "storm",
    "startup",
    "collector",
];

/// Run the benchmarks asked for, merge their results into
/// `target/bench/results.json` and regenerate `BENCHMARKS.md`.
///
/// # Errors
/// When a tool cannot be built, installed or run.
pub fn run_bench(args: &BenchArgs) -> anyhow::Result<()> {
    if args.name.as_deref() == Some("soak") {
        let md = crate::soak::run(args.minutes, args.storm_rate)?;
        let path = workspace_root().join("target/bench/soak.md");
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
        println!("{md}");
        eprintln!("xtask bench: wrote {}", path.display());
        return Ok(());
    }
    let names: Vec<&str> = match args.name.as_deref() {
        None | Some("all") => NAMES.to_vec(),
        Some(n) if NAMES.contains(&n) => vec![n],
        Some(n) => bail!("unknown benchmark `{n}`: use one of {}", NAMES.join(", ")),
    };
    if !crate::is_root() {
        bail!("the benchmarks load BPF programs: run as root");
    }
    let bins = Bins::build()?;
    let path = results_path();
    let mut results: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| json!({}));
    for name in names {
        eprintln!("xtask bench: {name}");
        let r = match name {
            "hotpath" => tools::hotpath(&bins, args.rounds)?,
            "net" => tools::net(&bins, args.rounds)?,
            "progtime" => tools::progtime(&bins)?,
            "storm" => tools::storm(&bins)?,
            "startup" => tools::startup(&bins, args.rounds)?,
            _ => tools::collector()?,
        };
        results[name] = r;
        results["machine"] = report::machine();
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let md_path = workspace_root().join("BENCHMARKS.md");
    let notes = std::fs::read_to_string(&md_path)
        .ok()
        .and_then(|s| s.split_once(report::NOTES_MARK).map(|(_, n)| n.to_owned()));
    let md = report::markdown(&results, notes.as_deref());
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    eprintln!(
        "xtask bench: wrote {} and {}",
        md_path.display(),
        path.display()
    );
    Ok(())
}

fn results_path() -> PathBuf {
    workspace_root().join("target/bench/results.json")
}

/// The binaries the benchmarks run.
pub struct Bins {
    pub pagefail: PathBuf,
    pub helper: PathBuf,
}

impl Bins {
    fn build() -> anyhow::Result<Self> {
        let pagefail = build_release()?;
        let mut c = cargo();
        c.args([
            "build",
            "--release",
            "-p",
            "pagefail-tests",
            "--bin",
            "pf-bench",
        ]);
        run(c)?;
        Ok(Self {
            pagefail,
            helper: workspace_root().join("target/release/pf-bench"),
        })
    }
}

/// A child process whose output lines arrive on a channel, stopped with
/// SIGINT (then SIGKILL) when dropped.
pub struct Tool {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub started: Instant,
}

impl Tool {
    /// Start `cmd` with stdout and stderr read line by line.
    pub fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {cmd:?}"))?;
        let (tx, lines) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            child,
            lines,
            started,
        })
    }

    /// Wait for a line containing `needle`; returns the line and the time
    /// since the start.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> anyhow::Result<(String, Duration)> {
        let deadline = self.started + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok((line, self.started.elapsed())),
                Ok(_) => {}
                Err(_) => bail!("no `{needle}` line within {limit:?}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then wait (at most 20 s) and reap; the time to exit.
    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        signal(self.child.id(), libc::SIGINT);
        let limit = Instant::now() + Duration::from_secs(20);
        while Instant::now() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        t.elapsed()
    }

    /// Wait (at most `limit`) for the process to exit by itself.
    pub fn wait_exit(mut self, limit: Duration) -> anyhow::Result<Duration> {
        let deadline = self.started + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("exited with {status}");
                }
                return Ok(self.started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("did not exit within {limit:?}")
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: signalling a child this process started and has not reaped.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Median of a list (upper median for even lengths); 0 when empty.
#[must_use]
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Run a command to completion and return its stdout.
fn output(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 3.0).abs() < f64::EPSILON);
        assert!(median(&[]).abs() < f64::EPSILON);
    }
}
