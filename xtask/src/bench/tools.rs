//! The benchmarks themselves.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Bins, Tool, median, output};
use crate::{cargo, setup::ensure_packages, workspace_root};

/// The bpftrace one-liner people use for failed page allocations, bounded to
/// two minutes.
const BPFTRACE_PROG: &str = "tracepoint:kmem:mm_page_alloc /args->pfn == -1/ \
     { @[kstack, comm] = count(); } interval:s:120 { exit(); }";
/// The same, printing one line from its first timer tick: output reaches
/// userspace only once every probe is attached and the event loop runs.
const BPFTRACE_READY_PROG: &str = "tracepoint:kmem:mm_page_alloc /args->pfn == -1/ \
     { @[kstack, comm] = count(); } interval:ms:1 { printf(\"ready\\n\"); exit(); }";
/// `pfn == -1` as the ftrace filter parser reads an unsigned long.
const PERF_FILTER: &str = "pfn == 18446744073709551615";
const PERF_DATA: &str = "/tmp/pagefail-bench-perf.data";

const STORM_MIB: &str = "256";
const STORM_PASSES: &str = "16";

/// The tools of the hot-path comparison, in their base order: no tracer,
/// one empty program on the tracepoint (the floor of any tracer attached
/// there), pagefail's default (the four-program chain), its opt-in marked
/// pair, `--lean`, `--failures-only` where the kernel has kprobes, bpftrace,
/// perf.
fn variants() -> Vec<&'static str> {
    let mut v = vec![
        "none",
        "empty-program",
        "pagefail",
        "pagefail-pair",
        "pagefail-lean",
    ];
    if kprobes() {
        v.push("pagefail-failures-only");
    }
    v.extend(["bpftrace", "perf"]);
    v
}

/// Whether the kernel has kprobes (the failure-only mode needs them).
fn kprobes() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

fn tool_packages() -> anyhow::Result<()> {
    ensure_packages(&["bpftrace", "linux-perf"])
}

fn perf_cmd(workload: &[&str]) -> Command {
    let mut c = Command::new("perf");
    c.args([
        "record",
        "-e",
        "kmem:mm_page_alloc",
        "--filter",
        PERF_FILTER,
        "-a",
        "-g",
        "-o",
        PERF_DATA,
        "--",
    ])
    .args(workload);
    c
}

/// Start one variant of the hot-path comparison and wait until it traces.
fn start_variant(bins: &Bins, variant: &str) -> anyhow::Result<Option<Tool>> {
    let settle = Duration::from_millis(300);
    let tool = match variant {
        "none" => return Ok(None),
        "empty-program" => {
            let mut c = Command::new(&bins.helper);
            c.args(["empty-hold", "300"]);
            let t = Tool::spawn(c)?;
            t.wait_for("attached", Duration::from_secs(30))?;
            t
        }
        "pagefail" | "pagefail-pair" => {
            let mut c = Command::new(&bins.pagefail);
            c.args(["watch", "--all", "--no-tui", "--duration", "300"]);
            // Both chains named explicitly: the four-program chain is the
            // default, the marked pair opt-in.
            c.env(
                "PAGEFAIL_CHAIN",
                if variant == "pagefail-pair" {
                    "pair"
                } else {
                    "four"
                },
            );
            let t = Tool::spawn(c)?;
            t.wait_for("attached to mm_page_alloc", Duration::from_secs(30))?;
            t
        }
        "pagefail-failures-only" => {
            let mut c = Command::new(&bins.pagefail);
            c.args([
                "watch",
                "--all",
                "--no-tui",
                "--failures-only",
                "--duration",
                "300",
            ]);
            let t = Tool::spawn(c)?;
            t.wait_for("attached to warn_alloc", Duration::from_secs(30))?;
            t
        }
        "pagefail-lean" => {
            let mut c = Command::new(&bins.pagefail);
            c.args(["watch", "--all", "--no-tui", "--lean", "--duration", "300"]);
            let t = Tool::spawn(c)?;
            t.wait_for("attached to mm_page_alloc", Duration::from_secs(30))?;
            t
        }
        "bpftrace" => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", BPFTRACE_PROG]);
            let t = Tool::spawn(c)?;
            t.wait_for("Attaching", Duration::from_secs(30))?;
            // "Attaching N probes..." is printed before the attach.
            std::thread::sleep(Duration::from_millis(700));
            t
        }
        "perf" => {
            let t = Tool::spawn(perf_cmd(&["sleep", "300"]))?;
            // perf record prints nothing when it is ready; its attach takes
            // ~130 ms here.
            std::thread::sleep(Duration::from_secs(1));
            t
        }
        other => bail!("unknown variant {other}"),
    };
    std::thread::sleep(settle);
    Ok(Some(tool))
}

/// One storm: (wall seconds, CPU seconds of the storm thread).
fn storm_once(bins: &Bins) -> anyhow::Result<(f64, f64)> {
    let mut c = Command::new(&bins.helper);
    c.args(["storm", STORM_MIB, STORM_PASSES]);
    let out = output(c)?;
    let field = |name: &str| -> Option<f64> {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|n| n.parse::<f64>().ok())
            .map(|ns| ns / 1e9)
    };
    field("elapsed_ns=")
        .zip(field("cpu_ns="))
        .with_context(|| format!("storm output `{out}`"))
}

/// Peak resident set of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Page-fault storm with each tool attached, alternating the tools round by
/// round; ratios are paired with the untraced run of the same round. The
/// ratio that counts is of the storm thread's CPU time: the tracers' programs
/// run inside its page faults, while other work on the machine (which shares
/// it) stretches wall time without touching it. Wall ratios are kept beside.
pub fn hotpath(bins: &Bins, rounds: usize) -> anyhow::Result<Value> {
    tool_packages()?;
    // Warm-up: first-touch effects and page cache.
    storm_once(bins)?;
    let variants = variants();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut walls: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut rss = Vec::new();
    for round in 0..rounds {
        let mut round_times = vec![(0.0, 0.0); variants.len()];
        for k in 0..variants.len() {
            // Rotate the order so no tool always runs first or last.
            let i = (k + round) % variants.len();
            let tool = start_variant(bins, variants[i])?;
            let t = storm_once(bins)?;
            if let Some(tool) = tool {
                if variants[i] == "pagefail" {
                    rss.extend(peak_rss_kib(tool.pid()).map(|k| k as f64));
                }
                tool.stop();
            }
            round_times[i] = t;
        }
        eprintln!(
            "xtask bench: hotpath round {}: {}",
            round + 1,
            variants
                .iter()
                .zip(&round_times)
                .map(|(v, (w, c))| format!("{v} {c:.3}s cpu {w:.3}s wall"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (i, (w, c)) in round_times.into_iter().enumerate() {
            times[i].push(c);
            walls[i].push(w);
        }
    }
    let _ = std::fs::remove_file(PERF_DATA);
    let mut out = serde_json::Map::new();
    let pages = 256.0 * 256.0 * 16.0;
    for (i, v) in variants.iter().enumerate() {
        let paired = |t: &[Vec<f64>]| -> Vec<f64> {
            t[i].iter().zip(&t[0]).map(|(t, base)| t / base).collect()
        };
        let ratios = paired(&times);
        let wall_ratios = paired(&walls);
        out.insert(
            (*v).to_owned(),
            json!({
                "median_cpu_s": median(&times[i]),
                "ratio": median(&ratios),
                "ratios": ratios,
                "cpu_s": times[i],
                "median_wall_s": median(&walls[i]),
                "wall_ratio": median(&wall_ratios),
                "wall_s": walls[i],
            }),
        );
    }
    let base = median(&walls[0]);
    Ok(json!({
        "rounds": rounds,
        "storm": format!("{STORM_MIB} MiB anonymous touched {STORM_PASSES} times"),
        "allocations_per_s_untraced": pages / base,
        "variants": out,
        "pagefail_peak_rss_kib": rss.iter().copied().fold(0.0, f64::max),
    }))
}

/// The network namespace and veth pair of the network workload, removed
/// when dropped (deleting the namespace deletes the pair).
struct NetNs {
    name: String,
}

const NET_HOST_IF: &str = "pfbench0";
const NET_PEER_ADDR: &str = "10.213.0.2";
const NET_PORT: &str = "5201";
/// MiB sent per run of the network workload.
const NET_MIB: &str = "2048";

impl NetNs {
    fn create() -> anyhow::Result<Self> {
        ensure_packages(&["iproute2"])?;
        let name = format!("pagefail-bench-{}", std::process::id());
        let ns = Self { name };
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let st = Command::new("ip")
                .args(args)
                .status()
                .with_context(|| format!("ip {}", args.join(" ")))?;
            if !st.success() {
                bail!("ip {} failed: {st}", args.join(" "));
            }
            Ok(())
        };
        let n = ns.name.as_str();
        ip(&["netns", "add", n])?;
        ip(&[
            "link",
            "add",
            NET_HOST_IF,
            "type",
            "veth",
            "peer",
            "name",
            "pfbench1",
            "netns",
            n,
        ])?;
        ip(&["addr", "add", "10.213.0.1/30", "dev", NET_HOST_IF])?;
        ip(&["link", "set", NET_HOST_IF, "up"])?;
        ip(&["-n", n, "addr", "add", "10.213.0.2/30", "dev", "pfbench1"])?;
        ip(&["-n", n, "link", "set", "pfbench1", "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", NET_HOST_IF])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Busy CPU time of the whole machine (user, nice, system, irq, softirq;
/// `/proc/stat`), in seconds: the network stack's softirqs, where the
/// tracers' programs run for packet allocations, count here even where the
/// kernel charges them to no task.
fn busy_cpu_s() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq ...
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum::<f64>();
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(busy / hz.max(1.0))
}

/// One transfer over the veth pair: (wall seconds, busy CPU seconds).
fn net_once(bins: &Bins, ns: &NetNs) -> anyhow::Result<(f64, f64)> {
    let mut sink = Command::new("ip");
    sink.args(["netns", "exec", &ns.name])
        .arg(&bins.helper)
        .args(["tcp-sink", NET_PORT]);
    let sink = Tool::spawn(sink)?;
    sink.wait_for("listening", Duration::from_secs(10))?;
    let cpu0 = busy_cpu_s()?;
    let mut src = Command::new(&bins.helper);
    src.args(["tcp-source", NET_PEER_ADDR, NET_PORT, NET_MIB]);
    let out = output(src)?;
    sink.wait_exit(Duration::from_secs(70))?;
    let cpu = busy_cpu_s()? - cpu0;
    let wall = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("elapsed_ns="))
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("tcp-source output `{out}`"))?
        / 1e9;
    Ok((wall, cpu))
}

/// The network workload: TCP over a veth pair into a network namespace the
/// benchmark creates (and removes), each tool attached in turn, rounds
/// paired as in [`hotpath`]. The ratio that counts is of the machine's busy
/// CPU time for the same bytes (packet allocations run in softirqs).
pub fn net(bins: &Bins, rounds: usize) -> anyhow::Result<Value> {
    tool_packages()?;
    let ns = NetNs::create()?;
    net_once(bins, &ns)?;
    let variants = variants();
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut walls: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        let mut line = Vec::new();
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let tool = start_variant(bins, variants[i])?;
            let (w, c) = net_once(bins, &ns)?;
            if let Some(tool) = tool {
                tool.stop();
            }
            cpus[i].push(c);
            walls[i].push(w);
            line.push(format!("{} {c:.3}s cpu {w:.3}s wall", variants[i]));
        }
        eprintln!("xtask bench: net round {}: {}", round + 1, line.join(", "));
    }
    let _ = std::fs::remove_file(PERF_DATA);
    let mut out = serde_json::Map::new();
    for (i, v) in variants.iter().enumerate() {
        let paired = |t: &[Vec<f64>]| -> Vec<f64> {
            t[i].iter().zip(&t[0]).map(|(t, base)| t / base).collect()
        };
        let ratios = paired(&cpus);
        let wall_ratios = paired(&walls);
        out.insert(
            (*v).to_owned(),
            json!({
                "median_cpu_s": median(&cpus[i]),
                "ratio": median(&ratios),
                "ratios": ratios,
                "cpu_s": cpus[i],
                "median_wall_s": median(&walls[i]),
                "wall_ratio": median(&wall_ratios),
                "wall_s": walls[i],
            }),
        );
    }
    Ok(json!({
        "rounds": rounds,
        "workload": format!("{NET_MIB} MiB over one TCP connection, veth pair into a network namespace"),
        "variants": out,
    }))
}

/// BPF statistics of pagefail's programs (the helper does the work).
pub fn progtime(bins: &Bins) -> anyhow::Result<Value> {
    let mut c = Command::new(&bins.helper);
    c.args(["progtime", "5"]);
    let out = output(c)?;
    serde_json::from_str(out.trim()).with_context(|| format!("progtime output `{out}`"))
}

/// Synthetic failures at controlled rates while the real collector runs.
pub fn storm(bins: &Bins) -> anyhow::Result<Value> {
    let runs: [(u64, f64, u64); 5] = [
        (50_000, 10.0, 1),
        (100_000, 10.0, 1),
        (200_000, 10.0, 2),
        (400_000, 5.0, 2),
        (10_000_000, 5.0, 2),
    ];
    let mut out = Vec::new();
    for (rate, secs, threads) in runs {
        let mut c = Command::new(&bins.helper);
        c.args([
            "storm-collect",
            &rate.to_string(),
            &secs.to_string(),
            &threads.to_string(),
        ]);
        let text = output(c)?;
        let v: Value = serde_json::from_str(text.trim())
            .with_context(|| format!("storm-collect output `{text}`"))?;
        eprintln!("xtask bench: storm {rate}/s: {v}");
        out.push(v);
    }
    Ok(Value::Array(out))
}

/// Exec to attached, for pagefail, bpftrace and perf, alternating.
pub fn startup(bins: &Bins, rounds: usize) -> anyhow::Result<Value> {
    tool_packages()?;
    let mut pf_line = Vec::new();
    let mut pf_internal = Vec::new();
    let mut pf_exit = Vec::new();
    let mut bt_ready = Vec::new();
    let mut perf_exit = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..rounds {
        let mut c = Command::new(&bins.pagefail);
        c.args(["watch", "--all", "--no-tui", "--duration", "60"]);
        let t = Tool::spawn(c)?;
        let (line, at) = t.wait_for("attached to mm_page_alloc", Duration::from_secs(30))?;
        pf_line.push(at.as_secs_f64() * 1e3);
        if let Some(ms) = line
            .split(" in ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
        {
            pf_internal.push(ms);
        }
        // The kallsyms table is built after the attach: let it finish.
        std::thread::sleep(Duration::from_millis(1500));
        rss.extend(peak_rss_kib(t.pid()).map(|k| k as f64));
        t.stop();

        let mut c = Command::new(&bins.pagefail);
        c.args(["watch", "--all", "--no-tui", "--duration", "1ms"]);
        let t = Tool::spawn(c)?;
        pf_exit.push(t.wait_exit(Duration::from_secs(30))?.as_secs_f64() * 1e3);

        let mut c = Command::new("bpftrace");
        c.args(["-e", BPFTRACE_READY_PROG]);
        let t = Tool::spawn(c)?;
        let (_, at) = t.wait_for("ready", Duration::from_secs(30))?;
        bt_ready.push(at.as_secs_f64() * 1e3);
        t.stop();

        let t = Tool::spawn(perf_cmd(&["true"]))?;
        perf_exit.push(t.wait_exit(Duration::from_secs(30))?.as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(PERF_DATA);
    let mut c = Command::new(&bins.helper);
    c.args(["startup-parts", "5"]);
    let text = output(c)?;
    let parts: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("startup-parts output `{text}`"))?;
    Ok(json!({
        "parts": parts,
        "rounds": rounds,
        "pagefail_attached_line_ms": median(&pf_line),
        "pagefail_peak_rss_kib": rss.iter().copied().fold(0.0, f64::max),
        "pagefail_attach_internal_ms": median(&pf_internal),
        "pagefail_run_1ms_total_ms": median(&pf_exit),
        "bpftrace_first_output_ms": median(&bt_ready),
        "perf_record_true_total_ms": median(&perf_exit),
        "samples": {
            "pagefail_attached_line_ms": pf_line,
            "pagefail_run_1ms_total_ms": pf_exit,
            "bpftrace_first_output_ms": bt_ready,
            "perf_record_true_total_ms": perf_exit,
        },
    }))
}

/// The criterion benchmark of the collector; events per second from its estimates.
pub fn collector() -> anyhow::Result<Value> {
    let start = Instant::now();
    let mut c = cargo();
    c.args([
        "bench",
        "-p",
        "tracer",
        "--bench",
        "collector",
        "--",
        "--noplot",
    ]);
    crate::run(c)?;
    let dir = workspace_root().join("target/criterion/collector");
    let mut out = serde_json::Map::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let est = entry.path().join("new/estimates.json");
        let bench = entry.path().join("new/benchmark.json");
        let (Ok(est), Ok(bench)) = (
            std::fs::read_to_string(&est),
            std::fs::read_to_string(&bench),
        ) else {
            continue;
        };
        let est: Value = serde_json::from_str(&est)?;
        let bench: Value = serde_json::from_str(&bench)?;
        let ns = est["median"]["point_estimate"].as_f64().unwrap_or(0.0);
        let elems = bench["throughput"]["Elements"].as_f64().unwrap_or(1.0);
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            json!({
                "ns_per_iteration": ns,
                "events_per_iteration": elems,
                "ns_per_event": ns / elems,
                "events_per_s": elems / ns * 1e9,
            }),
        );
    }
    Ok(json!({ "benches": out, "wall_s": start.elapsed().as_secs_f64() }))
}
