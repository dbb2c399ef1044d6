//! `pagefail record` on the real kernel: interval files, their totals, the
//! metrics endpoint, SIGTERM, kill -9 and restart.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use pagefail_tests::{
    TraceInstance, bpf_available, free_port, memcg_v1_root, pagefail_bin, remove_cgroup,
    run_trigger, spawn_attached,
};
use tracer::export::{self, SummaryRow};

const TRIGGER: &str = env!("CARGO_BIN_EXE_memcg-trigger");

/// Start `pagefail record` and wait until it has attached.
fn start_record(dir: &Path, extra: &[&str]) -> Child {
    let mut cmd = Command::new(pagefail_bin());
    cmd.args(["record", "--all", "--interval", "1s", "--output"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null());
    spawn_attached(&mut cmd, "record").0
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), sig) };
}

fn interval_files(dir: &Path) -> BTreeMap<String, (PathBuf, PathBuf)> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).expect("list").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".totals.csv") {
            let rows = dir.join(format!("{stem}.csv"));
            assert!(rows.exists(), "{stem}: totals without a summary");
            out.insert(stem.to_owned(), (rows, e.path()));
        }
    }
    out
}

fn rows(path: &Path) -> Vec<SummaryRow> {
    export::read_csv_file(path).expect("parse summary")
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    body
}

fn trigger(cg: &Path) -> u32 {
    run_trigger::<&str>(TRIGGER, cg, &[])
}

#[test]
fn intervals_metrics_and_sigterm_agree_with_tracefs() {
    if !bpf_available("intervals_metrics_and_sigterm_agree_with_tracefs") {
        return;
    }
    let Some(memcg) = memcg_v1_root() else {
        assert!(
            std::env::var_os("PAGEFAIL_REQUIRE_BPF").is_none(),
            "no cgroup v1 memory controller"
        );
        return;
    };
    let me = std::process::id();
    let dir = std::env::temp_dir().join(format!("pagefail-record-{me}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let port_arg = format!("127.0.0.1:{port}");
    let trace = TraceInstance::new(&format!("pagefail-rec-{me}"), "pfn == 18446744073709551615");
    let mut rec = start_record(&dir, &["--metrics", &port_arg]);
    trace.enable(true);

    let mut pids = Vec::new();
    for i in 0..3 {
        let cg = memcg.join(format!("pagefail-rec-{me}-{i}"));
        let _ = fs::create_dir(&cg);
        pids.push(trigger(&cg));
        remove_cgroup(&cg);
        std::thread::sleep(Duration::from_millis(1300));
    }
    trace.enable(false);
    std::thread::sleep(Duration::from_millis(1200)); // one metrics tick
    let metrics = scrape(port);
    signal(&rec, libc::SIGTERM);
    let status = rec.wait().expect("wait");
    assert!(status.success(), "SIGTERM must exit 0: {status}");

    let kernel: u64 = trace
        .lines()
        .iter()
        .filter(|l| pids.iter().any(|p| l.contains(&format!("-{p} "))))
        .count() as u64;
    assert!(kernel >= 3, "tracefs saw {kernel} trigger failures");

    let files = interval_files(&dir);
    assert!(
        files.len() >= 4,
        "one file pair per 1 s interval: {files:?}"
    );
    let mut in_files = 0;
    let mut intervals_with_failures = 0;
    let mut windows = Vec::new();
    for (rows_path, totals_path) in files.values() {
        let r = rows(rows_path);
        let mine: u64 = r
            .iter()
            .filter(|r| pids.iter().any(|p| r.pid == p.to_string()))
            .map(|r| r.failures)
            .sum();
        in_files += mine;
        intervals_with_failures += u64::from(mine > 0);
        // An interval with an (atomic by the kernel's rule) failure has a
        // memory snapshot beside it.
        let memory = PathBuf::from(rows_path.to_string_lossy().replace(".csv", ".memory.csv"));
        if mine > 0 {
            let text = fs::read_to_string(&memory).expect("memory snapshot file");
            let zones =
                export::memory::read_memory_csv("memory", text.as_bytes()).expect("a memory CSV");
            assert!(!zones.is_empty(), "{text}");
        }
        let text = fs::read_to_string(totals_path).expect("totals");
        let totals = export::totals::read_csv("totals", text.as_bytes()).expect("a totals CSV");
        let first = totals.first().expect("a totals row");
        windows.push((first.window_start.clone(), first.window_end.clone()));
        let recorded: u64 = totals
            .iter()
            .find(|t| t.metric == "recorded")
            .and_then(|t| t.value)
            .expect("recorded row");
        assert_eq!(
            recorded,
            r.iter().map(|r| r.failures).sum::<u64>(),
            "{}",
            totals_path.display()
        );
    }
    assert_eq!(in_files, kernel, "sum over interval files == tracefs");
    assert!(
        intervals_with_failures >= 2,
        "failures 1.3 s apart land in different intervals"
    );
    for w in windows.windows(2) {
        assert_eq!(w[0].1, w[1].0, "windows are contiguous: {windows:?}");
    }

    let from_metrics: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("pagefail_failures_total{") && l.contains(r#"comm="memcg-trigger""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(from_metrics, in_files, "metrics == CSV sums\n{metrics}");
    assert!(metrics.contains("pagefail_lost_events_total 0"));
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn kill_and_restart_loses_at_most_the_current_interval() {
    if !bpf_available("kill_and_restart_loses_at_most_the_current_interval") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pagefail-restart-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("dir");
    let mut rec = start_record(&dir, &[]);
    std::thread::sleep(Duration::from_millis(3500));
    signal(&rec, libc::SIGKILL);
    let _ = rec.wait();
    let before = interval_files(&dir);
    assert!(
        before.len() >= 2,
        "whole intervals were written before the kill: {before:?}"
    );
    let contents: Vec<(String, Vec<u8>)> = before
        .iter()
        .map(|(s, (r, _))| (s.clone(), fs::read(r).expect("read")))
        .collect();

    let mut rec = start_record(&dir, &[]);
    std::thread::sleep(Duration::from_millis(2500));
    signal(&rec, libc::SIGTERM);
    assert!(rec.wait().expect("wait").success());
    let after = interval_files(&dir);
    assert!(
        after.len() >= before.len() + 2,
        "{} -> {}",
        before.len(),
        after.len()
    );
    for (stem, data) in contents {
        let (path, _) = &after[&stem];
        assert_eq!(
            fs::read(path).expect("read"),
            data,
            "{stem} was overwritten"
        );
    }
    // Nothing but interval files: a temporary file of a write cut by the
    // kill is removed on restart.
    let stray: Vec<_> = fs::read_dir(&dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("pagefail-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn output_directory_that_cannot_be_created_is_a_clear_error() {
    // procfs takes no new directories: record creates a missing --output,
    // and says clearly when it cannot.
    let out = Command::new(pagefail_bin())
        .args(["record", "--output", "/proc/pagefail-out/intervals"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/proc/pagefail-out/intervals")
            && err.contains("cannot be created")
            && err.contains("--output"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
