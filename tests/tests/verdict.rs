//! Cause and outcome of real failures on the running kernel: the memcg
//! trigger's kvmalloc try (order 6) is refused by the memory cgroup and falls
//! back to vmalloc; with `--tight` the vmalloc pages are refused too, and
//! that failure is terminal (`dup2` fails).

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use pagefail_tests::{bpf_available, memcg_v1_root, pagefail_bin, remove_cgroup, spawn_attached};
use tracer::export::{RunSummary, SummaryRow};

const TRIGGER: &str = env!("CARGO_BIN_EXE_memcg-trigger");

#[test]
fn memcg_failures_have_cause_memcg_and_the_kvmalloc_outcomes() {
    if !bpf_available("memcg_failures_have_cause_memcg_and_the_kvmalloc_outcomes") {
        return;
    }
    let Some(memcg) = memcg_v1_root() else {
        assert!(
            std::env::var_os("PAGEFAIL_REQUIRE_BPF").is_none(),
            "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
        );
        eprintln!("SKIPPED: no cgroup v1 memory controller at /sys/fs/cgroup/memory");
        return;
    };
    let me = std::process::id();
    let cg = memcg.join(format!("pagefail-verdict-{me}"));
    let _ = fs::create_dir(&cg);
    let work = std::env::temp_dir().join(format!("pagefail-verdict-{me}"));
    fs::create_dir_all(&work).expect("work dir");
    let csv_path = work.join("out.csv");
    let json_path = work.join("run.json");

    let mut cmd = Command::new(pagefail_bin());
    cmd.args(["watch", "--all", "--duration", "60s", "--no-tui"])
        .arg("--observe-fallbacks")
        .arg("--csv")
        .arg(&csv_path)
        .arg("--summary-json")
        .arg(&json_path)
        .stdout(Stdio::piped());
    let (watch, reader) = spawn_attached(&mut cmd, "watch");

    let out = Command::new(TRIGGER)
        .arg("--tight")
        .arg(&cg)
        .output()
        .expect("run trigger");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let trigger_err = String::from_utf8_lossy(&out.stderr).into_owned();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(i32::try_from(watch.id()).expect("pid"), libc::SIGINT) };
    let output = watch.wait_with_output().expect("wait pagefail");
    let stderr = reader.join().expect("stderr reader");
    remove_cgroup(&cg);
    assert!(out.status.success(), "trigger failed: {text} {trigger_err}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pagefail failed: {stderr}\n{stdout}"
    );
    let pid: String = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .expect("trigger pid")
        .to_owned();
    // The tight limit refused the vmalloc fallback too: dup2 failed.
    assert!(
        text.contains("dup2=-1"),
        "the vmalloc fallback was not refused: {text} {trigger_err}"
    );

    let rows: Vec<SummaryRow> = csv::Reader::from_path(&csv_path)
        .expect("open csv")
        .deserialize()
        .collect::<Result<_, _>>()
        .expect("parse csv");
    let mine: Vec<&SummaryRow> = rows.iter().filter(|r| r.pid == pid).collect();
    assert!(!mine.is_empty(), "no rows for the trigger: {rows:#?}");
    for r in &mine {
        assert!(r.gfp_flags.contains("ACCOUNT"), "{r:?}");
        assert_eq!(r.cause, "memcg", "a refused charge: {r:?}");
    }
    let try_row = mine
        .iter()
        .find(|r| r.order == Some(6))
        .unwrap_or_else(|| panic!("no order-6 row: {mine:#?}"));
    assert_eq!(
        try_row.outcome, "fallback",
        "kvmalloc's kmalloc try: {try_row:?}"
    );
    assert!(try_row.top_stack.contains("alloc_fdtable"), "{try_row:?}");
    let page_rows: Vec<&&SummaryRow> = mine
        .iter()
        .filter(|r| r.order == Some(0) && r.top_stack.contains("vmalloc"))
        .collect();
    assert!(
        page_rows.iter().any(|r| r.outcome == "terminal"),
        "the vmalloc page that failed last is terminal: {mine:#?}"
    );
    // Every order-0 vmalloc row is either the bulk allocator's try (retried
    // by vmalloc's page loop: fallback) or the loop's own (terminal).
    for r in &page_rows {
        let bulk = r.top_stack.contains("_bulk");
        assert_eq!(
            r.outcome,
            if bulk { "fallback" } else { "terminal" },
            "{r:?}"
        );
    }

    // The final summary and the summary JSON agree with the rows.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("recorded failures by outcome: terminal "))
        .unwrap_or_else(|| panic!("no outcome line: {stdout}"));
    let summary: RunSummary =
        serde_json::from_str(&fs::read_to_string(&json_path).expect("summary json"))
            .expect("parse summary json");
    let total: u64 = rows.iter().map(|r| r.failures).sum();
    assert_eq!(
        summary.failures_by_outcome.values().sum::<u64>(),
        total,
        "{summary:?}"
    );
    assert_eq!(summary.failures_by_cause.values().sum::<u64>(), total);
    let memcg_rows: u64 = rows
        .iter()
        .filter(|r| r.cause == "memcg")
        .map(|r| r.failures)
        .sum();
    assert_eq!(summary.failures_by_cause.get("memcg"), Some(&memcg_rows));
    let terminal = summary
        .failures_by_outcome
        .get("terminal")
        .copied()
        .unwrap_or(0);
    assert!(terminal >= 1, "{summary:?}");
    assert!(
        line.starts_with(&format!(
            "recorded failures by outcome: terminal {terminal},"
        )),
        "{line}"
    );
    assert_eq!(summary.failures, summary.lost + total, "{summary:?}");
    assert!(summary.drops.is_empty());

    // Observed fallbacks: every recorded failure awaited its follow
    // record; the kmalloc try was seen falling back to vmalloc (its first
    // smaller allocations, from the kvmalloc function, succeed before the
    // tight limit refuses a page); an order-0 page has nothing smaller.
    let seen = summary
        .fallbacks_seen
        .as_ref()
        .unwrap_or_else(|| panic!("no fallbacks_seen: {summary:?}"));
    let awaited: u64 = seen.by_outcome.values().map(|s| s.failures).sum();
    assert_eq!(awaited, total - summary.lost_kept, "{seen:?}");
    let fallback = seen.by_outcome["fallback"];
    assert!(
        fallback.seen >= 1 && fallback.seen <= fallback.failures,
        "{seen:?}"
    );
    assert_eq!(seen.by_outcome["terminal"].seen, 0, "{seen:?}");
    assert!(
        seen.sites
            .iter()
            .any(|s| s.function.contains("kvmalloc") && s.outcome == "fallback"),
        "{seen:?}"
    );
    assert!(
        stdout.contains("fallbacks seen (a smaller success from the failing function"),
        "{stdout}"
    );
    fs::remove_dir_all(&work).ok();
}
