//! `pagefail check` on this machine: every support line as this kernel has
//! it, and advice for the memcg trigger's failure row.

use std::{fs, process::Command};

use pagefail_tests::{bpf_available, pagefail_bin};
use serde_json::Value;
use tracer::export::CSV_HEADER;

fn check(args: &[&str]) -> (String, String) {
    let out = Command::new(pagefail_bin())
        .arg("check")
        .args(args)
        .output()
        .expect("run pagefail check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pagefail check failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/logs/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    report["support"]
        .as_array()
        .expect("support lines")
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no support line {name}"))["status"]
        .as_str()
        .expect("status")
}

#[test]
fn check_reports_this_kernel_as_it_is() {
    if !bpf_available("check_reports_this_kernel_as_it_is") {
        return;
    }
    let (json, _) = check(&["--json"]);
    let report: Value = serde_json::from_str(&json).expect("check --json is JSON");
    assert_eq!(report["probed"], true, "root probes by default");
    let kprobes = std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists();
    for (name, want) in [
        ("kernel version", "ok"),
        ("BTF", "ok"),
        ("ring buffer", "ok"),
        ("raw tracepoint", "ok"),
        ("BTF tracepoint", "ok"),
        ("classic tracepoint", "ok"),
        ("kprobes (warn_alloc)", if kprobes { "ok" } else { "no" }),
        ("tracefs", "ok"),
        ("CAP_BPF", "ok"),
        ("CAP_PERFMON", "ok"),
        ("CAP_SYS_ADMIN", "ok"),
        ("CAP_SYSLOG", "ok"),
    ] {
        assert_eq!(status(&report, name), want, "{name}");
    }
    let lockdown = std::path::Path::new("/sys/kernel/security/lockdown").exists();
    if !lockdown {
        assert_eq!(status(&report, "lockdown"), "unknown");
    }
    let zones = report["zones"].as_array().expect("zones");
    assert!(
        zones
            .iter()
            .any(|z| z["zone"] == "Normal" || z["zone"] == "DMA32")
    );
    assert!(report["sysctls"]["min_free_kbytes"].as_u64().unwrap() >= 128);

    let (text, _) = check(&[]);
    assert!(text.contains("OK  raw tracepoint        raw_tp: loaded and attached (verified) -> pagefail will use this"), "{text}");
    assert!(text.contains("free blocks per order"), "{text}");
    assert!(text.contains("vm.min_free_kbytes"), "{text}");
}

#[test]
fn check_from_memcg_trigger_row_says_memcg_limit() {
    let dir = std::env::temp_dir().join(format!("pagefail-check-test-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let csv_path = dir.join("memcg.csv");
    let this_host = hostname();
    let mut w = csv::Writer::from_path(&csv_path).expect("create csv");
    w.write_record(CSV_HEADER).expect("header");
    w.write_record([
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:00:05Z",
        // This machine: a CSV of another host is not judged against its memory.
        this_host.as_str(),
        "6.18.44-fc-v669",
        "memcg-trigger",
        "4242",
        "/pagefail-test",
        "task",
        "none",
        "6",
        "0x4428c0",
        "GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_COMP|__GFP_ACCOUNT",
        "true",
        "1",
        "0",
        "2026-03-01T10:00:01Z",
        "2026-03-01T10:00:01Z",
        "entry_SYSCALL_64_after_hwframe;do_syscall_64;__x64_sys_dup2;ksys_dup3;expand_files;alloc_fdtable;__kvmalloc_node_noprof;__kmalloc_large_node_noprof;___kmalloc_large_node",
        "memcg",
        "fallback",
    ])
    .expect("row");
    w.flush().expect("flush");
    drop(w);

    let path = csv_path.to_str().expect("utf-8 path");
    let (json, _) = check(&["--no-probe", "--json", "--from", path]);
    let report: Value = serde_json::from_str(&json).expect("JSON");
    let advice = &report["advice"];
    assert_eq!(advice["findings"][0]["cause"], "memcg_limit", "{advice}");
    assert_eq!(advice["findings"][0]["order"], 6);
    assert!(
        advice["recommendations"]
            .as_array()
            .expect("array")
            .is_empty()
    );
    let verdict = advice["verdict"].as_str().expect("verdict");
    assert!(
        verdict.contains("memcg limit, not zone watermarks"),
        "{verdict}"
    );

    let (text, _) = check(&["--no-probe", "--from", path]);
    assert!(text.contains("MEMCG LIMIT"), "{text}");
    assert!(text.contains("No sysctl change helps"), "{text}");
    assert!(
        !text.contains("-> ") || !text.contains("vm.min_free_kbytes 67584 ->"),
        "{text}"
    );
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn check_from_a_csv_of_another_host_refuses_memory_advice() {
    let dir = std::env::temp_dir().join(format!("pagefail-check-foreign-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let csv_path = dir.join("guest.csv");
    let other = format!("not-{}", hostname());
    let mut w = csv::Writer::from_path(&csv_path).expect("create csv");
    w.write_record(CSV_HEADER).expect("header");
    w.write_record([
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:00:05Z",
        other.as_str(),
        "6.1.0-56-cloud-amd64",
        "ksoftirqd/1",
        "20",
        "/",
        "softirq",
        "neigh",
        "1",
        "0xb20",
        "GFP_ATOMIC|__GFP_ZERO",
        "true",
        "4",
        "4",
        "2026-03-01T10:00:01Z",
        "2026-03-01T10:00:02Z",
        "ret_from_fork;run_ksoftirqd;neigh_hash_alloc",
        // cause, outcome: not given (as in files written before the two columns).
        "",
        "",
    ])
    .expect("row");
    w.flush().expect("flush");
    drop(w);
    let path = csv_path.to_str().expect("utf-8 path");

    let (text, _) = check(&["--no-probe", "--from", path]);
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot judge the memory"))
        .collect();
    assert_eq!(refusals.len(), 1, "{text}");
    let line = refusals[0];
    assert!(
        line.starts_with("advice: cannot judge the memory for "),
        "{line}"
    );
    assert!(
        line.contains(&format!("recorded on host {other}")),
        "{line}"
    );
    assert!(line.contains("pagefail check --from kern.log"), "{line}");
    // Nothing judged against this machine's memory.
    for judged in [
        "FRAGMENTATION",
        "EXHAUSTION",
        "NOT EXPLAINED",
        "verdict:",
        "memory state now",
    ] {
        assert!(!text.contains(judged), "{judged} in:\n{text}");
    }

    let (json, _) = check(&["--no-probe", "--json", "--from", path]);
    let report: Value = serde_json::from_str(&json).expect("JSON");
    assert!(report["advice"].is_null(), "{}", report["advice"]);
    assert!(
        report["advice_refused"]
            .as_str()
            .expect("refusal")
            .contains(&other)
    );
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn check_from_a_kernel_log_judges_the_memory_each_report_printed() {
    let log = fixture("meminfo/v2.6.28-lkml-bug14403.txt");
    let (text, _) = check(&["--no-probe", "--from", &log]);
    assert!(
        text.contains("(a kernel log with 1 report(s)): judged against the memory each report printed, not this machine's"),
        "{text}"
    );
    assert!(
        text.contains("order 1: 1 failures in 1 rows: EXHAUSTION"),
        "{text}"
    );
    assert!(
        text.contains("node0 DMA32: free 2128 KiB, min 5712 KiB, low 7140 KiB, high 8568 KiB"),
        "{text}"
    );
    assert!(text.contains("vm.min_free_kbytes = 5736 (keep)"), "{text}");
    assert!(
        !text.contains("judged against the memory state now"),
        "{text}"
    );

    let guest = fixture("dmesg-01-neigh_hash-tcp_connect-bond0.txt");
    let (json, _) = check(&["--no-probe", "--json", "--from", &guest]);
    let report: Value = serde_json::from_str(&json).expect("JSON");
    let group = &report["log_advice"][0];
    assert_eq!(group["order"], 1);
    let advice = &group["advice"];
    assert_eq!(advice["source"]["kind"], "report");
    assert_eq!(advice["findings"][0]["cause"], "fragmentation", "{advice}");
    assert_eq!(advice["recommendations"][0]["zone"], "node0 DMA32");
    assert!(report["advice"].is_null());

    // A report cut before its Mem-Info: one line says the memory cannot be judged.
    let dir = std::env::temp_dir().join(format!("pagefail-check-cut-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let cut_path = dir.join("cut.log");
    let full = fs::read_to_string(&log).expect("fixture");
    let cut: String = full
        .lines()
        .take_while(|l| !l.starts_with("Mem-Info"))
        .flat_map(|l| [l, "\n"])
        .collect();
    fs::write(&cut_path, cut).expect("write");
    let (text, _) = check(&["--no-probe", "--from", cut_path.to_str().expect("utf-8")]);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot judge the memory"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("none of the 1 report(s) printed a Mem-Info"),
        "{text}"
    );
    assert!(!text.contains("verdict:"), "{text}");
    fs::remove_dir_all(&dir).expect("clean up");

    // Neither a CSV summary nor a log with reports: a clear error.
    let out = Command::new(pagefail_bin())
        .args(["check", "--no-probe", "--from", "/etc/hostname"])
        .output()
        .expect("run pagefail check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is neither a pagefail CSV summary") && err.contains("nor a kernel log"),
        "{err}"
    );
}
