//! Soak benchmark of `pagefail record`: RSS over time while real failures
//! from ever new processes (new pids, new rows every interval) keep coming.
//!
//! Runs `pagefail record --all --interval 1s` into a temporary directory for
//! the given minutes, causes real memory-cgroup charge failures from a fresh
//! process each time (the `memcg-trigger` program of the tests), samples the
//! recorder's VmRSS every 10 s, and prints the samples, the files written
//! and the failures counted. A benchmark, not a test: nothing passes or
//! fails on the numbers; it fails only when the recorder dies.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

fn rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Run the soak for `minutes` minutes; returns the markdown report.
///
/// # Errors
/// When the binaries cannot be built or the recorder exits early.
pub fn run(minutes: u64) -> anyhow::Result<String> {
    let pagefail = crate::build_release()?;
    let mut c = crate::cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "pagefail-tests",
        "--bin",
        "memcg-trigger",
    ]);
    crate::run(c)?;
    let trigger = crate::workspace_root().join("target/release/memcg-trigger");
    let memcg = Path::new("/sys/fs/cgroup/memory");
    if !memcg.join("memory.limit_in_bytes").exists() {
        bail!("the soak needs the cgroup v1 memory controller at /sys/fs/cgroup/memory");
    }
    let dir = std::env::temp_dir().join(format!("pagefail-soak-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let mut rec = Command::new(&pagefail)
        .args([
            "record",
            "--all",
            "--interval",
            "1s",
            "--retain",
            "600",
            "--output",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting pagefail record")?;
    let pid = rec.id();
    let total = Duration::from_secs(minutes.max(1) * 60);
    let start = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut triggers = 0u64;
    // Bounded: at most 50 triggers a second for the run's length.
    while start.elapsed() < total {
        if let Some(status) = rec.try_wait()? {
            bail!("pagefail record exited early: {status}");
        }
        if start.elapsed() >= next_sample {
            if let Some(kib) = rss_kib(pid) {
                samples.push((start.elapsed().as_secs(), kib));
            }
            next_sample += Duration::from_secs(10);
        }
        let cg = memcg.join(format!("pagefail-soak-{triggers}"));
        if fs::create_dir(&cg).is_ok() {
            let _ = Command::new(&trigger)
                .arg(&cg)
                .stdout(Stdio::null())
                .status();
            for _ in 0..50 {
                if fs::remove_dir(&cg).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            triggers += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(kib) = rss_kib(pid) {
        samples.push((start.elapsed().as_secs(), kib));
    }
    terminate(pid);
    let status = rec.wait()?;
    let files = fs::read_dir(&dir)?.count();
    let mut failures = 0u64;
    for e in fs::read_dir(&dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".totals.csv") {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            failures += text
                .lines()
                .filter(|l| l.contains(",recorded,,"))
                .filter_map(|l| l.rsplit(',').next()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    let _ = fs::remove_dir_all(&dir);
    let first = samples.first().map_or(0, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let last = samples.last().map_or(0, |s| s.1);
    let mut md = format!(
        "## soak: `pagefail record --interval 1s` for {minutes} min\n\n\
         {triggers} trigger processes (each a new pid), {failures} failures recorded, \
         {files} files kept (--retain 600), exit on SIGTERM: {status}\n\n\
         RSS: first {first} KiB, peak {peak} KiB, last {last} KiB\n\n| t (s) | RSS (KiB) |\n|---|---|\n"
    );
    for (t, kib) in &samples {
        md.push_str(&format!("| {t} | {kib} |\n"));
    }
    if !status.success() {
        bail!("pagefail record did not exit cleanly on SIGTERM: {status}\n{md}");
    }
    Ok(md)
}

/// SIGTERM, as a service manager stops it.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
