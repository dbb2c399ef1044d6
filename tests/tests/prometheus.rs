//! A real Prometheus (Debian's `prometheus`, on loopback, with a temporary
//! configuration and storage) scrapes `pagefail record --metrics` while the
//! kernel fails real allocations: its answers must equal the interval files
//! and tracefs, the memory gauges must equal /proc, and every query of the
//! shipped dashboard and every shipped rule must evaluate without error.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pagefail_tests::{
    TraceInstance, bpf_available, free_port, memcg_v1_root, pagefail_bin, remove_cgroup,
    run_trigger, spawn_attached,
};
use serde_json::Value;
use tracer::export::SummaryRow;

const TRIGGER: &str = env!("CARGO_BIN_EXE_memcg-trigger");
const TRIGGER_COMM: &str = "memcg-trigger";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Kills a child process when dropped (Prometheus, or a record left running
/// by a failed assertion).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over HTTP/1.0 (so the body is not chunked); status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query: the `data.result` array, or the error Prometheus gave.
fn query(port: u16, promql: &str) -> Result<Vec<Value>, String> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", url_encode(promql)))
        .ok_or_else(|| "no answer from prometheus".to_owned())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 || v["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// A sample's value as a count (Prometheus prints whole numbers without a
/// fraction or exponent).
fn count_of(sample: &Value) -> u64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a count: {sample}"))
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("sample value")
}

/// `sum by (label)` results as a map label value -> value.
fn by_label(port: u16, promql: &str, label: &str) -> BTreeMap<String, u64> {
    query(port, promql)
        .unwrap_or_else(|e| panic!("{promql}: {e}"))
        .iter()
        .map(|s| {
            (
                s["metric"][label].as_str().unwrap_or_default().to_owned(),
                count_of(s),
            )
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_record(dir: &Path, port: u16) -> Child {
    let mut cmd = Command::new(pagefail_bin());
    cmd.args(["record", "--all", "--interval", "2s", "--metrics"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--output")
        .arg(dir)
        .stdout(Stdio::null());
    spawn_attached(&mut cmd, "record").0
}

fn trigger(cg: &Path) -> u32 {
    run_trigger::<&str>(TRIGGER, cg, &[])
}

/// Rows of every interval summary file, and the sum of a totals metric.
fn interval_rows(dir: &Path) -> (Vec<SummaryRow>, u64) {
    let mut rows = Vec::new();
    let mut lost = 0;
    for e in fs::read_dir(dir).expect("list").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".totals.csv") {
            let text = fs::read_to_string(e.path()).expect("totals");
            lost += tracer::export::totals::read_csv(&name, text.as_bytes())
                .expect("a totals CSV")
                .iter()
                .filter(|t| t.metric == "lost")
                .filter_map(|t| t.value)
                .sum::<u64>();
        } else if Path::new(&name).extension().is_some_and(|e| e == "csv")
            && !name.contains(".memory.")
        {
            rows.extend(tracer::export::read_csv_file(&e.path()).expect("summary rows"));
        }
    }
    (rows, lost)
}

/// The dashboard's queries with Grafana's variables given values.
fn dashboard_queries() -> Vec<(String, String)> {
    let json = fs::read_to_string(repo().join("deploy/grafana/pagefail.json")).expect("dashboard");
    let v: Value = serde_json::from_str(&json).expect("dashboard JSON");
    let mut out = Vec::new();
    for p in v["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$instance", ".*")
                .replace("$__rate_interval", "10s")
                .replace("$__range", "1m")
                .replace("$__interval", "2s");
            out.push((p["title"].as_str().unwrap_or_default().to_owned(), expr));
        }
    }
    out
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: start, cause failures, then compare every answer"
)]
fn prometheus_answers_equal_the_files_tracefs_and_proc() {
    if !bpf_available("prometheus_answers_equal_the_files_tracefs_and_proc") {
        return;
    }
    let Some(memcg) = memcg_v1_root() else {
        assert!(
            std::env::var_os("PAGEFAIL_REQUIRE_BPF").is_none(),
            "no cgroup v1 memory controller"
        );
        return;
    };
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        let msg = "SKIPPED: no `prometheus` binary (Debian package prometheus; `cargo xtask test` installs it)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("{msg}");
        return;
    }
    let me = std::process::id();
    let base = std::env::temp_dir().join(format!("pagefail-prom-{me}"));
    let _ = fs::remove_dir_all(&base);
    // record creates its output directory, parents too, mode 0750.
    let out = base.join("out/intervals");
    let metrics_port = free_port();
    let mut rec = Reaped(start_record(&out, metrics_port));
    let mode = fs::metadata(&out).expect("created").permissions().mode() & 0o777;
    assert_eq!(mode & !0o750, 0, "output directory mode {mode:o}");

    let prom_port = free_port();
    let config = base.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: pagefail\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            repo().join("deploy/prometheus/pagefail.rules.yml").display()
        ),
    )
    .expect("write config");
    let log = fs::File::create(base.join("prometheus.log")).expect("log");
    let _prom = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                base.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    wait_for("prometheus ready", Duration::from_mins(1), || {
        http_get(prom_port, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    wait_for(
        "pagefail scraped (up == 1)",
        Duration::from_secs(30),
        || {
            query(prom_port, r#"up{job="pagefail"}"#).is_ok_and(|r| {
                r.first()
                    .is_some_and(|s| (value_of(s) - 1.0).abs() < f64::EPSILON)
            })
        },
    );

    // Real failures: a memory cgroup refuses an order-6 charge, three times.
    let trace = TraceInstance::new(
        &format!("pagefail-prom-{me}"),
        "pfn == 18446744073709551615",
    );
    trace.enable(true);
    let mut pids = Vec::new();
    for i in 0..3 {
        let cg = memcg.join(format!("pagefail-prom-{me}-{i}"));
        let _ = fs::create_dir(&cg);
        pids.push(trigger(&cg));
        remove_cgroup(&cg);
    }
    trace.enable(false);
    let kernel = trace
        .lines()
        .iter()
        .filter(|l| pids.iter().any(|p| l.contains(&format!("-{p} "))))
        .count() as u64;
    assert!(kernel >= 3, "tracefs saw {kernel} trigger failures");

    // Wait until Prometheus has scraped counters that include them.
    let by_order_q =
        format!(r#"sum by (order) (pagefail_failures_total{{comm="{TRIGGER_COMM}"}})"#);
    wait_for(
        "the failures in Prometheus",
        Duration::from_secs(20),
        || {
            by_label(prom_port, &by_order_q, "order")
                .values()
                .sum::<u64>()
                >= kernel
        },
    );
    // Two more scrapes, so nothing is in flight.
    std::thread::sleep(Duration::from_millis(2500));
    let prom_by_order = by_label(prom_port, &by_order_q, "order");
    let prom_lost: u64 = by_label(prom_port, "sum(pagefail_lost_events_total)", "")
        .values()
        .sum();

    // Every dashboard query and every rule evaluates without error.
    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries() {
        let r = query(prom_port, &expr).unwrap_or_else(|e| panic!("panel {title:?}: {expr}: {e}"));
        // What the panel would draw now, for the reader of `--nocapture`.
        let values: Vec<String> = r
            .iter()
            .take(4)
            .map(|s| format!("{} = {}", s["metric"], s["value"][1]))
            .collect();
        eprintln!("panel {title:?}: {} series; {}", r.len(), values.join("; "));
        if r.is_empty() {
            empty.push(title);
        }
    }
    for must in [
        "Failed allocations/s by order",
        "Free blocks per order (Normal and DMA32 zones)",
        "Distance to the min watermark",
        "Successful allocations/s by order",
    ] {
        assert!(
            !empty.iter().any(|t| t == must),
            "panel {must:?} has no data"
        );
    }
    wait_for("every rule evaluated once", Duration::from_secs(20), || {
        let Some((200, body)) = http_get(prom_port, "/api/v1/rules") else {
            return false;
        };
        let v: Value = serde_json::from_str(&body).expect("rules JSON");
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        assert!(rules.len() >= 14, "the shipped rules are loaded: {body}");
        for r in &rules {
            assert_ne!(
                r["health"], "err",
                "rule {} fails: {}",
                r["name"], r["lastError"]
            );
        }
        rules.iter().all(|r| r["health"] == "ok")
    });

    // The memory gauges equal /proc (watermarks do not move; the set of
    // free-block series is the populated zones times their orders).
    let snap = tracer::memory::Snapshot::take().expect("memory state");
    let page = snap.page_kb * 1024;
    for z in snap.zones.iter().filter(|z| z.is_populated()) {
        let q = format!(
            r#"pagefail_memory_watermark_bytes{{node="{}",zone="{}",level="min"}}"#,
            z.node, z.zone
        );
        let r = query(prom_port, &q).expect("watermark");
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        assert_eq!(count_of(&r[0]), z.min * page, "{q}");
    }
    let series: usize = snap.buddy.iter().map(|b| b.free.len()).sum();
    let r = query(prom_port, "count(pagefail_memory_free_blocks)").expect("count");
    assert_eq!(count_of(&r[0]), series as u64, "free-block series");

    // SIGTERM writes the last interval; the files hold what Prometheus has.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(rec.0.id()).expect("pid"), libc::SIGTERM) };
    assert!(rec.0.wait().expect("wait").success());
    let (rows, lost) = interval_rows(&out);
    let mut files_by_order = BTreeMap::new();
    for r in rows.iter().filter(|r| r.comm == TRIGGER_COMM) {
        *files_by_order
            .entry(r.order.map(|o| o.to_string()).unwrap_or_default())
            .or_insert(0u64) += r.failures;
    }
    assert_eq!(
        prom_by_order, files_by_order,
        "PromQL by order == interval files"
    );
    let mine: u64 = rows
        .iter()
        .filter(|r| pids.iter().any(|p| r.pid == p.to_string()))
        .map(|r| r.failures)
        .sum();
    assert_eq!(
        mine, kernel,
        "interval files == tracefs for the trigger pids"
    );
    assert_eq!(prom_lost, lost, "lost: PromQL == totals files");
    fs::remove_dir_all(&base).ok();
}
