//! Soak benchmark of `pagefail record`: RSS over time and the accounting of
//! every failure, under a synthetic failure storm plus real failures from
//! ever new processes (new pids, new rows every interval).
//!
//! Runs `pagefail record --all --interval 5s` into a temporary directory for
//! the given minutes. Meanwhile (1) a chain of short-lived `pf-bench drive`
//! processes, a new pid every 10 s, feeds the recorder's own main program
//! synthetic failures through `BPF_PROG_TEST_RUN` at `--storm-rate` per second,
//! each printing how many it sent; (2) real memory-cgroup charge failures come
//! from a fresh `memcg-trigger` process each time. The recorder's `VmRSS` is
//! sampled every 10 s. At the end every interval file is read back: the
//! storm's rows must add up to what the drivers sent (less any records the
//! ring buffer lost, which the totals count), and in every interval the
//! kernel's matched count must equal recorded + lost. A benchmark: the RSS
//! figures pass or fail nothing; a drift in the counts, or a recorder that
//! dies or does not exit cleanly on SIGTERM, is an error.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
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

/// Seconds each storm driver process runs before the next (new pid) takes over.
const DRIVER_SECONDS: u64 = 10;
/// The recorder's interval.
const INTERVAL_SECONDS: u64 = 5;

/// Run storm drivers one after another against the recorder `pid` until
/// `stop`; returns sent failures per driver pid.
fn drive_storm(helper: &Path, pid: u32, rate: u64, stop: &AtomicBool) -> BTreeMap<u32, u64> {
    let mut sent = BTreeMap::new();
    // Bounded by `stop`, which the caller sets after the soak's length; each
    // driver stops by itself after DRIVER_SECONDS.
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new(helper)
            .args([
                "drive",
                &pid.to_string(),
                &rate.to_string(),
                &DRIVER_SECONDS.to_string(),
            ])
            .stderr(Stdio::inherit())
            .output();
        let Ok(out) = out else { break };
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let (Some(n), Some(p)) = (field("sent="), field("pid=")) {
            sent.insert(u32::try_from(p).unwrap_or(0), n);
        } else {
            eprintln!("xtask soak: storm driver said `{}`", text.trim());
            break;
        }
    }
    sent
}

/// What the interval files say, summed over the run.
#[derive(Debug, Default)]
struct Books {
    intervals: u64,
    /// Failures in rows of the storm drivers' pids.
    storm_rows: u64,
    /// Failures in all other rows (the real ones).
    other_rows: u64,
    matched: u64,
    recorded: u64,
    lost: u64,
    /// Of the lost, those the kernel's table had no room for: the only ones
    /// missing from the rows (the rest are rebuilt into them).
    lost_unkept: u64,
    /// Intervals whose matched != recorded + lost: records in flight at a
    /// boundary land in the next window.
    skewed: u64,
    /// The largest |matched - recorded - lost| of one interval.
    max_skew: u64,
}

fn read_books(dir: &Path, storm_pids: &BTreeMap<u32, u64>) -> anyhow::Result<Books> {
    let mut b = Books::default();
    let mut names: Vec<PathBuf> = fs::read_dir(dir)?.flatten().map(|e| e.path()).collect();
    names.sort();
    for path in names {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".totals.csv") {
            b.intervals += 1;
            let mut rdr = csv::Reader::from_path(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let h = rdr.headers()?.clone();
            let col = |n: &str| h.iter().position(|x| x == n);
            let (Some(metric), Some(value)) = (col("metric"), col("value")) else {
                bail!("{}: no metric/value columns in {h:?}", path.display());
            };
            let (mut m, mut r, mut l) = (0, 0, 0);
            for rec in rdr.records() {
                let rec = rec?;
                let v: u64 = rec.get(value).unwrap_or("0").parse().unwrap_or(0);
                match rec.get(metric) {
                    Some("matched") => m += v,
                    Some("recorded") => r += v,
                    Some("lost") => l += v,
                    Some("lost_unkept") => b.lost_unkept += v,
                    _ => {}
                }
            }
            let skew = (i128::from(m) - i128::from(r) - i128::from(l)).unsigned_abs();
            if skew > 0 {
                b.skewed += 1;
                b.max_skew = b.max_skew.max(u64::try_from(skew).unwrap_or(u64::MAX));
            }
            b.matched += m;
            b.recorded += r;
            b.lost += l;
        } else if Path::new(&name).extension().is_some_and(|e| e == "csv")
            && !name.ends_with(".memory.csv")
        {
            let mut rdr = csv::Reader::from_path(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let h = rdr.headers()?.clone();
            let col = |n: &str| h.iter().position(|x| x == n);
            let (Some(pid), Some(failures)) = (col("pid"), col("failures")) else {
                bail!("{}: no pid/failures columns in {h:?}", path.display());
            };
            for rec in rdr.records() {
                let rec = rec?;
                let n: u64 = rec.get(failures).unwrap_or("0").parse().unwrap_or(0);
                let p: Option<u32> = rec.get(pid).and_then(|p| p.parse().ok());
                if p.is_some_and(|p| storm_pids.contains_key(&p)) {
                    b.storm_rows += n;
                } else {
                    b.other_rows += n;
                }
            }
        }
    }
    Ok(b)
}

/// Run the soak for `minutes` minutes with a synthetic storm of `storm_rate`
/// failures per second; returns the markdown report.
///
/// # Errors
/// When the binaries cannot be built, the recorder exits early or not
/// cleanly, or the counts drift.
pub fn run(minutes: u64, storm_rate: u64) -> anyhow::Result<String> {
    let pagefail = crate::build_release()?;
    let mut c = crate::cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "pagefail-tests",
        "--bin",
        "memcg-trigger",
        "--bin",
        "pf-bench",
    ]);
    crate::run(c)?;
    let trigger = crate::workspace_root().join("target/release/memcg-trigger");
    let helper = crate::workspace_root().join("target/release/pf-bench");
    let memcg = Path::new("/sys/fs/cgroup/memory");
    if !memcg.join("memory.limit_in_bytes").exists() {
        bail!("the soak needs the cgroup v1 memory controller at /sys/fs/cgroup/memory");
    }
    let dir = std::env::temp_dir().join(format!("pagefail-soak-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    // Keep every interval of the run, for the books at the end.
    let retain = (minutes.max(1) * 60 / INTERVAL_SECONDS + 20).to_string();
    let interval = format!("{INTERVAL_SECONDS}s");
    let mut rec = Command::new(&pagefail)
        .args([
            "record",
            "--all",
            "--interval",
            &interval,
            "--retain",
            &retain,
            "--output",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting pagefail record")?;
    let pid = rec.id();
    // The recorder prints nothing we wait for; its attach takes ~50 ms.
    std::thread::sleep(Duration::from_secs(2));
    let total = Duration::from_secs(minutes.max(1) * 60);
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut triggers = 0u64;
    let stop = AtomicBool::new(false);
    let storm = std::thread::scope(|s| -> anyhow::Result<BTreeMap<u32, u64>> {
        let storm = s.spawn(|| drive_storm(&helper, pid, storm_rate, &stop));
        let r = soak_loop(
            &mut rec,
            &trigger,
            memcg,
            total,
            &mut samples,
            &mut triggers,
        );
        stop.store(true, Ordering::Relaxed);
        let sent = storm.join().unwrap_or_default();
        r.map(|()| sent)
    })?;
    report(
        rec, pid, &dir, minutes, storm_rate, &samples, triggers, &storm,
    )
}

/// The real-failure part of the soak, and the RSS samples; bounded by `total`.
fn soak_loop(
    rec: &mut std::process::Child,
    trigger: &Path,
    memcg: &Path,
    total: Duration,
    samples: &mut Vec<(u64, u64)>,
    triggers: &mut u64,
) -> anyhow::Result<()> {
    let pid = rec.id();
    let start = Instant::now();
    let mut next_sample = Duration::ZERO;
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
        let cg = memcg.join(format!("pagefail-soak-{pid}-{triggers}"));
        if fs::create_dir(&cg).is_ok() {
            let _ = Command::new(trigger)
                .arg(&cg)
                .stdout(Stdio::null())
                .status();
            for _ in 0..50 {
                if fs::remove_dir(&cg).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            *triggers += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(kib) = rss_kib(pid) {
        samples.push((start.elapsed().as_secs(), kib));
    }
    Ok(())
}

/// Median RSS of the samples taken in `[from, to)` seconds.
fn median_rss(samples: &[(u64, u64)], from: u64, to: u64) -> u64 {
    let mut v: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| (from..to).contains(t))
        .map(|s| s.1)
        .collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Stop the recorder, read its books and write the report.
#[expect(
    clippy::too_many_arguments,
    reason = "the soak's books, each gathered by a different phase"
)]
fn report(
    mut rec: std::process::Child,
    pid: u32,
    dir: &Path,
    minutes: u64,
    storm_rate: u64,
    samples: &[(u64, u64)],
    triggers: u64,
    storm: &BTreeMap<u32, u64>,
) -> anyhow::Result<String> {
    terminate(pid);
    let status = rec.wait()?;
    let files = fs::read_dir(dir)?.count();
    let books = read_books(dir, storm)?;
    let _ = fs::remove_dir_all(dir);
    let sent: u64 = storm.values().sum();
    // Lost records the kernel counted by row are rebuilt into the rows;
    // those it had no room for are counted but not attributed to a row:
    // every one of them may be a storm record. Without those, rows == sent.
    let drift = i128::from(sent) - i128::from(books.storm_rows) - i128::from(books.lost_unkept);
    let explained = books.storm_rows <= sent && drift <= 0;
    let first = samples.first().map_or(0, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let last = samples.last().map_or(0, |s| s.1);
    let end = samples.last().map_or(0, |s| s.0);
    // After the first minute of warm-up: the first and the last five minutes
    // (or thirds of a shorter run).
    let span = ((end.saturating_sub(60)) / 3).clamp(10, 300);
    let early = median_rss(samples, 60, 60 + span);
    let late = median_rss(samples, end.saturating_sub(span), end + 1);
    let mut md = format!(
        "## soak: `pagefail record --interval {INTERVAL_SECONDS}s` for {minutes} min\n\n\
         Synthetic storm: {} driver processes (a new pid every {DRIVER_SECONDS} s) sent {sent} \
         failures at {storm_rate}/s through the recorder's own main program \
         (BPF_PROG_TEST_RUN); real failures: {triggers} memcg trigger processes (each a new \
         pid).\n\n\
         | books over {} intervals | count |\n|---|---|\n\
         | storm failures sent | {sent} |\n\
         | storm failures in the interval rows | {} |\n\
         | other failures in the interval rows (real ones) | {} |\n\
         | matched by the kernel program (sum of totals) | {} |\n\
         | recorded (sum of totals) | {} |\n\
         | lost (sum of totals) | {} |\n\
         | unexplained drift: sent - storm rows - lost and not kept by row | {drift} |\n\
         | run: matched - recorded - lost | {} |\n\
         | intervals where matched != recorded + lost (records in flight at the boundary) | {} (largest difference {}) |\n\n\
         {files} files kept; exit on SIGTERM: {status}\n\n\
         RSS: first {first} KiB, peak {peak} KiB, last {last} KiB; median of the first \
         {span} s after a minute of warm-up {early} KiB, of the last {span} s {late} KiB\n\n\
         | t (s) | RSS (KiB) |\n|---|---|\n",
        storm.len(),
        books.intervals,
        books.storm_rows,
        books.other_rows,
        books.matched,
        books.recorded,
        books.lost,
        i128::from(books.matched) - i128::from(books.recorded) - i128::from(books.lost),
        books.skewed,
        books.max_skew,
    );
    for (t, kib) in samples {
        md.push_str(&format!("| {t} | {kib} |\n"));
    }
    if !status.success() {
        bail!("pagefail record did not exit cleanly on SIGTERM: {status}\n{md}");
    }
    if books.matched != books.recorded + books.lost || !explained {
        bail!("the books do not balance\n{md}");
    }
    Ok(md)
}

/// SIGTERM, as a service manager stops it.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
