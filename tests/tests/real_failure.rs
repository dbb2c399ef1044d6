//! A real failed allocation on the running kernel, caught by `pagefail watch`
//! and checked against the kernel's own count (tracefs) over the same window.

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use pagefail_tests::{
    TraceInstance, bpf_available, memcg_v1_root, pagefail_bin, remove_cgroup, run_trigger,
    spawn_attached,
};
use tracer::{cgroup::CgroupSource, export::SummaryRow};

const TRIGGER: &str = env!("CARGO_BIN_EXE_memcg-trigger");

#[test]
fn memcg_charge_failure_is_reported_and_matches_tracefs() {
    if !bpf_available("memcg_charge_failure_is_reported_and_matches_tracefs") {
        return;
    }
    real_failure_run("full", &[]);
}

/// The lean attach (main program alone) counts the same real failure, and
/// its summary reports the allocation events the kernel kept from it.
#[test]
fn lean_attach_matches_tracefs_for_a_real_failure() {
    if !bpf_available("lean_attach_matches_tracefs_for_a_real_failure") {
        return;
    }
    let stdout = real_failure_run("lean", &["--lean"]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("allocation events unseen (nested"))
        .unwrap_or_else(|| panic!("no unseen line: {stdout}"));
    // This kernel (5.12+) counts skips, so the figure is a number.
    assert!(
        line.split(|c: char| !c.is_ascii_digit())
            .any(|n| n.parse::<u64>().is_ok()),
        "{line}"
    );
}

/// The runs trace the whole system: one at a time, so neither sees the
/// other's trigger.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One real memcg charge failure under `pagefail watch` with `extra`
/// arguments, checked against tracefs; returns watch's stdout.
fn real_failure_run(tag: &str, extra: &[&str]) -> String {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(memcg) = memcg_v1_root() else {
        // The recipe needs the v1 memory controller; say so loudly.
        assert!(
            std::env::var_os("PAGEFAIL_REQUIRE_BPF").is_none(),
            "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
        );
        eprintln!("SKIPPED: no cgroup v1 memory controller at /sys/fs/cgroup/memory");
        return String::new();
    };
    let me = format!("{}-{tag}", std::process::id());
    let cg = memcg.join(format!("pagefail-test-{me}"));
    let _ = fs::create_dir(&cg);
    // A cgroup of its own in the unified hierarchy too (another name), so
    // the attribution shows which hierarchy pagefail took.
    let v2 = tracer::cgroup::cgroup2_root().map(|root| root.join(format!("pagefail-test-v2-{me}")));
    if let Some(v2) = &v2 {
        fs::create_dir(v2).expect("create cgroup v2 directory");
    }
    let work = std::env::temp_dir().join(format!("pagefail-real-{me}"));
    fs::create_dir_all(&work).expect("work dir");
    let csv_path = work.join("out.csv");
    let folded = work.join("stacks.folded");
    let svg = work.join("stacks.svg");
    let memory_csv = work.join("memory.csv");
    let trace = TraceInstance::new(
        &format!("pagefail-test-{me}"),
        "pfn == 18446744073709551615",
    );

    let mut cmd = Command::new(pagefail_bin());
    cmd.args(["watch", "--all", "--duration", "60s"])
        .args(extra)
        .arg("--csv")
        .arg(&csv_path)
        .arg("--folded")
        .arg(&folded)
        .arg("--flamegraph")
        .arg(&svg)
        .arg("--memory-csv")
        .arg(&memory_csv)
        .stdout(Stdio::piped());
    let (watch, reader) = spawn_attached(&mut cmd, "watch");

    // The kernel's own count runs inside pagefail's window.
    trace.enable(true);
    let v2_args: Vec<&std::path::Path> = v2.iter().map(std::path::PathBuf::as_path).collect();
    let trigger_pid = run_trigger(TRIGGER, &cg, &v2_args);
    std::thread::sleep(Duration::from_millis(200));
    trace.enable(false);

    // Stop pagefail as an operator would: Ctrl-C.
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(i32::try_from(watch.id()).expect("pid"), libc::SIGINT) };
    let output = watch.wait_with_output().expect("wait pagefail");
    let stderr = reader.join().expect("stderr reader");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pagefail failed: {stderr}\n{stdout}"
    );
    remove_cgroup(&cg);
    if let Some(v2) = &v2 {
        remove_cgroup(v2);
    }

    let lines = trace.lines();
    assert_eq!(
        trace.overruns(),
        0,
        "tracefs dropped events; its count is not exact"
    );
    let kernel_for_trigger = lines
        .iter()
        .filter(|l| l.contains(&format!("-{trigger_pid} ")))
        .count() as u64;
    assert!(
        kernel_for_trigger >= 1,
        "the trigger caused no failure per tracefs: {lines:?}"
    );

    let rows: Vec<SummaryRow> = tracer::export::read_csv_file(&csv_path).expect("parse csv");
    let pid = trigger_pid.to_string();
    let mine: Vec<&SummaryRow> = rows.iter().filter(|r| r.pid == pid).collect();
    let counted: u64 = mine.iter().map(|r| r.failures).sum();
    assert_eq!(
        counted, kernel_for_trigger,
        "pagefail vs tracefs for the trigger: {mine:?}"
    );
    let total: u64 = rows.iter().map(|r| r.failures).sum();
    assert!(
        total >= lines.len() as u64,
        "pagefail's window holds tracefs's: {total} < {}",
        lines.len()
    );

    let row = mine
        .iter()
        .find(|r| r.order == Some(6))
        .unwrap_or_else(|| panic!("no order-6 row for the trigger: {mine:?}"));
    assert_eq!(row.comm, "memcg-trigger");
    assert_eq!(row.context, "task");
    assert_eq!(row.path, "none");
    assert!(row.top_stack.contains("alloc_fdtable"), "{}", row.top_stack);
    assert!(row.top_stack.contains("expand_files"), "{}", row.top_stack);
    assert!(
        !row.top_stack.contains("__alloc_pages"),
        "allocator frames trimmed: {}",
        row.top_stack
    );
    assert!(row.gfp_flags.contains("__GFP_ACCOUNT"), "{}", row.gfp_flags);
    // A refused memcg charge, and kvmalloc falls back to vmalloc.
    assert_eq!(row.cause, "memcg", "{row:?}");
    assert_eq!(row.outcome, "fallback", "{row:?}");
    assert!(row.gfp.starts_with("0x"));
    // cgroup attribution, on every kind of host: the v1 memory cgroup where
    // the memory controller is on v1 (this recipe needs it there; hybrid
    // hosts too), read by the kernel program wherever the kernel has BTF.
    let source = CgroupSource::detect();
    match &source {
        CgroupSource::MemcgKernel { root, .. } | CgroupSource::MemcgProc { root, .. } => {
            let rel = cg
                .strip_prefix(root)
                .expect("trigger cgroup under the memory mount");
            assert_eq!(
                row.cgroup,
                format!("/{}", rel.display()),
                "v1 memory cgroup attribution ({source})"
            );
        }
        other => panic!("the v1 memory controller is mounted, yet the source is {other}"),
    }
    if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        assert_eq!(source.method(), "v1-memcg-kernel", "{source}");
    }
    // `check` says which method is in use.
    let check = Command::new(pagefail_bin())
        .args(["check", "--no-probe"])
        .output()
        .expect("run check");
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(
        check
            .lines()
            .any(|l| l.contains("cgroup attribution") && l.contains(source.method())),
        "{check}"
    );

    // Exports: folded stacks and the flame graph name the same frames.
    let folded = fs::read_to_string(&folded).expect("folded stacks");
    assert!(
        folded
            .lines()
            .any(|l| l.contains("expand_files;alloc_fdtable")
                && l.rsplit(' ')
                    .next()
                    .is_some_and(|n| n.parse::<u64>().is_ok())),
        "{folded}"
    );
    let svg = fs::read_to_string(&svg).expect("flame graph");
    assert!(svg.starts_with("<?xml") && svg.contains("alloc_fdtable"));

    // The failure (atomic by the kernel's definition: no direct reclaim)
    // triggered a memory snapshot: one row per populated zone.
    let mem = fs::read_to_string(&memory_csv).expect("memory csv");
    let mut lines = mem.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("taken,node,zone,managed,free,min,low,high"))
    );
    let zones: Vec<&str> = lines.collect();
    assert!(
        zones
            .iter()
            .any(|l| l.contains(",Normal,") || l.contains(",DMA32,")),
        "{mem}"
    );

    // `report` over the CSV gives the same total.
    let rep = Command::new(pagefail_bin())
        .args(["report", "--by", "comm", "--json"])
        .arg(&csv_path)
        .output()
        .expect("run report");
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let rep = String::from_utf8_lossy(&rep.stdout);
    let trigger_line = rep
        .lines()
        .find(|l| l.contains("\"comm\":\"memcg-trigger\""))
        .unwrap_or_else(|| panic!("{rep}"));
    // Every memcg-trigger process in the window (another one may run beside
    // this test) is one row in the CSV; report sums them by comm.
    let by_comm: u64 = rows
        .iter()
        .filter(|r| r.comm == "memcg-trigger")
        .map(|r| r.failures)
        .sum();
    assert!(
        trigger_line.contains(&format!("\"failures\":{by_comm}")),
        "{trigger_line}"
    );

    // The summary ties the totals together: matched = recorded + lost.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("failures matching the filters:"))
        .expect("summary line");
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(nums.len(), 3, "{summary}");
    assert_eq!(nums[0], nums[1] + nums[2], "{summary}");
    assert_eq!(nums[1], total, "recorded equals the CSV's total: {summary}");
    assert!(
        stdout.contains("memcg-trigger"),
        "final table names the process"
    );
    fs::remove_dir_all(&work).ok();
    stdout.into_owned()
}

/// Real failures caused while pagefail is stopped (one process each).
const TRIGGERS: usize = 24;
/// A row of the full-ring test: (pid, order, gfp names).
type Key = (u32, u32, String);

/// A full ring buffer costs detail, never counts per row: pagefail is
/// stopped (SIGSTOP) with a 4 KiB ring (six records) while real failures
/// happen, then continued. Records are lost, and yet each of the triggers'
/// rows counts what tracefs counted for the same (process, order, gfp).
#[test]
fn full_ring_keeps_every_rows_count() {
    if !bpf_available("full_ring_keeps_every_rows_count") {
        return;
    }
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(memcg) = memcg_v1_root() else {
        assert!(
            std::env::var_os("PAGEFAIL_REQUIRE_BPF").is_none(),
            "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
        );
        eprintln!("SKIPPED: no cgroup v1 memory controller at /sys/fs/cgroup/memory");
        return;
    };
    let me = format!("{}-fullring", std::process::id());
    let work = std::env::temp_dir().join(format!("pagefail-real-{me}"));
    fs::create_dir_all(&work).expect("work dir");
    let csv_path = work.join("out.csv");
    let trace = TraceInstance::new(
        &format!("pagefail-test-{me}"),
        "pfn == 18446744073709551615",
    );
    let mut cmd = Command::new(pagefail_bin());
    cmd.args(["watch", "--all", "--duration", "120s", "--ring-kib", "4"])
        .arg("--csv")
        .arg(&csv_path)
        .stdout(Stdio::piped());
    let (watch, reader) = spawn_attached(&mut cmd, "watch");
    let pf = i32::try_from(watch.id()).expect("pid");

    trace.enable(true);
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pf, libc::SIGSTOP) };
    // One memory cgroup per trigger: each starts with its own headroom.
    let mut pids = Vec::new();
    for i in 0..TRIGGERS {
        let cg = memcg.join(format!("pagefail-test-{me}-{i}"));
        let _ = fs::create_dir(&cg);
        let pid = run_trigger::<&str>(TRIGGER, &cg, &[]);
        remove_cgroup(&cg);
        pids.push(pid);
    }
    trace.enable(false);
    // SAFETY: as above.
    unsafe { libc::kill(pf, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: as above.
    unsafe { libc::kill(pf, libc::SIGINT) };
    let output = watch.wait_with_output().expect("wait pagefail");
    let stderr = reader.join().expect("stderr reader");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pagefail failed: {stderr}\n{stdout}"
    );
    assert_eq!(
        trace.overruns(),
        0,
        "tracefs dropped events; its count is not exact"
    );

    // The kernel's count per (pid, order, gfp names) of the triggers.
    let field = |line: &str, name: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    let mut kernel: std::collections::BTreeMap<Key, u64> = std::collections::BTreeMap::new();
    for line in trace.lines() {
        let Some(pid) = pids
            .iter()
            .copied()
            .find(|p| line.contains(&format!("-{p} ")))
        else {
            continue;
        };
        let order: u32 = field(&line, "order=")
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("no order: {line}"));
        let gfp = field(&line, "gfp_flags=").unwrap_or_else(|| panic!("no gfp: {line}"));
        *kernel.entry((pid, order, gfp)).or_default() += 1;
    }
    let kernel_total: u64 = kernel.values().sum();
    // A trigger's charge now and then finds headroom and does not fail;
    // what matters is far more failures than the six records the ring holds.
    assert!(
        kernel_total >= TRIGGERS as u64 / 2,
        "the triggers failed {kernel_total} times per tracefs, too few to fill a 4 KiB ring: \
         {kernel:?}"
    );

    let rows: Vec<SummaryRow> = csv::Reader::from_path(&csv_path)
        .expect("open csv")
        .deserialize()
        .collect::<Result<_, _>>()
        .expect("parse csv");
    let mut ours: std::collections::BTreeMap<Key, u64> = std::collections::BTreeMap::new();
    for r in &rows {
        let Ok(pid) = r.pid.parse::<u32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        assert_eq!(r.comm, "memcg-trigger", "{r:?}");
        let order = r.order.expect("rows grouped by order");
        *ours.entry((pid, order, r.gfp_flags.clone())).or_default() += r.failures;
    }
    assert_eq!(
        ours, kernel,
        "pagefail's rows vs tracefs per (pid, order, gfp)\n{stdout}\n{stderr}"
    );

    // Records were lost, and every lost one is accounted for.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("failures matching the filters:"))
        .unwrap_or_else(|| panic!("summary line: {stdout}"));
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [matched, recorded, lost] = nums[..] else {
        panic!("{summary}");
    };
    assert_eq!(matched, recorded + lost, "{summary}");
    assert!(
        lost > 0,
        "a 4 KiB ring of a stopped reader lost nothing: {summary}"
    );
    let kept = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("of the lost:"))
        .unwrap_or_else(|| panic!("no line on the lost: {stdout}"));
    let nums: Vec<u64> = kept
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [kept_n, rebuilt, unkept] = nums[..] else {
        panic!("{kept}");
    };
    assert_eq!(kept_n + unkept, lost, "{kept}");
    assert_eq!(rebuilt, kept_n, "every kept failure reached a row: {kept}");
    let total: u64 = rows.iter().map(|r| r.failures).sum();
    assert_eq!(
        total,
        recorded + rebuilt,
        "the CSV holds records and rebuilt counts"
    );
    assert!(
        stdout.contains("rows rebuilt from the kernel's table"),
        "the rebuilt rows say so: {stdout}"
    );
    fs::remove_dir_all(&work).ok();
}
