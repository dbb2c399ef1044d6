//! The guest side of `cargo xtask vm-test`: fragments memory, drives network
//! traffic over a bond, and compares `pagefail watch` with tracefs.
//!
//! Runs as root inside a qemu guest whose `/init` has loaded `veth` and
//! `bonding` and built the topology (bond0 in the initial netns, bond1 in the
//! netns `peer`, joined by the veth pairs v0-v1 and v2-v3). Subcommands:
//!
//! - `vm-scenario run PAGEFAIL_BIN TRAFFIC_SECS`: the whole scenario; prints
//!   result sections between `=====PAGEFAIL-BEGIN/END name=====` markers and
//!   one `PAGEFAIL-RESULT key=value ...` line.
//! - `vm-scenario fragment READY_FILE RELEASE_FILE`: the memory fragmenter,
//!   started by `run` as a child process before anything is fragmented.
//!
//! # Why it is built this way
//! Once memory is fragmented no free block of order >= 1 remains, so a
//! `fork` (which needs order-1+ pages for the new task) would end in the OOM
//! killer. Every process and thread is therefore created first; the threads
//! wait for a go flag, the fragmenter signals through a ready file. Every loop
//! is bounded by a deadline and a count.
//!
//! # How the counts are made comparable
//! pagefail attaches first; the tracefs instance starts recording after
//! pagefail printed "attached" and before anything is fragmented, and stops
//! after the traffic ended and the fragmenter exited (its memory freed, so
//! order >= 1 blocks exist again) plus a settling pause. Failures of order >= 1
//! are only possible while memory is fragmented, and that whole period lies
//! inside both windows, so both tools must see the same failures.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    io::{BufRead, BufReader, Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use pagefail_tests::hist::{FieldCount, Method};
use tracer::drops::reasons::{DropReasons, ReasonTable};

const TRACEFS: &str = "/sys/kernel/tracing";
/// `__GFP_HIGH` and `__GFP_DIRECT_RECLAIM` on 4.10+ kernels (5.10, 6.1 and
/// 6.12 all use these bits): the tracer's atomic rule, written as a filter.
const FAILED_ATOMIC_FILTER: &str = "pfn == 18446744073709551615 && order >= 1 && \
                                    ((gfp_flags & 0x20) || !(gfp_flags & 0x400))";
const BOND0_IP: [u8; 4] = [10, 9, 0, 1];
const BOND1_IP: [u8; 4] = [10, 9, 0, 2];
const BULK_PORT: u16 = 5001;
const STORM_PORT: u16 = 5002;
const REUSEPORT_BASE: u16 = 7000;
const BULK_FLOWS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("run") if args.len() == 4 => {
            let secs = args[3].parse().unwrap_or(8);
            run(&args[2], Duration::from_secs(secs))
        }
        Some("fragment") if args.len() == 4 => fragment(&args[2], &args[3]),
        Some("pressure") if args.len() == 3 => pressure::run(&args[2]),
        Some("hog") if args.len() == 2 => pressure::hog(),
        Some("memgen") if args.len() == 4 => pressure::memgen(&args[2], &args[3]),
        _ => Err("usage: vm-scenario run PAGEFAIL_BIN TRAFFIC_SECS | \
                  vm-scenario fragment READY_FILE RELEASE_FILE | \
                  vm-scenario pressure PAGEFAIL_BIN"
            .to_owned()),
    };
    if let Err(e) = result {
        eprintln!("vm-scenario: {e}");
        println!("PAGEFAIL-RESULT error={}", e.replace(' ', "_"));
        std::process::exit(1);
    }
}

type Res<T> = Result<T, String>;

fn write_file(path: &str, value: &str) -> Res<()> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {path}: {e}"))
}

fn append_file(path: &str, value: &str) -> Res<()> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("opening {path}: {e}"))?;
    f.write_all(value.as_bytes())
        .map_err(|e| format!("appending {value:?} to {path}: {e}"))
}

fn section(name: &str, body: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "=====PAGEFAIL-BEGIN {name}=====");
    let _ = out.write_all(body.as_bytes());
    if !body.is_empty() && !body.ends_with('\n') {
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "=====PAGEFAIL-END {name}=====");
    let _ = out.flush();
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

// ---------------------------------------------------------------- orchestration

fn run(pagefail: &str, traffic: Duration) -> Res<()> {
    let t0 = Instant::now();
    raise_fd_limit()?;
    // Knobs of the scenario: no THP, and compaction must not undo the
    // fragmentation by migrating the locked pages.
    for (path, value) in [
        ("/sys/kernel/mm/transparent_hugepage/enabled", "never"),
        ("/sys/kernel/mm/transparent_hugepage/defrag", "never"),
        ("/proc/sys/vm/compact_unevictable_allowed", "0"),
        ("/proc/sys/vm/compaction_proactiveness", "0"),
    ] {
        if Path::new(path).exists() {
            write_file(path, value)?;
        }
    }
    // Our own processes stay alive; the fragmenter is the OOM killer's choice.
    let _ = write_file("/proc/self/oom_score_adj", "-500");
    scatter_gather_off("v0")?;

    setup_tracefs()?;

    // pagefail attaches first; its stderr tells when.
    let pf_out = fs::File::create("/tmp/pagefail.out").map_err(|e| format!("/tmp: {e}"))?;
    // PAGEFAIL_LEAN (set by the init script): the lean attach.
    let lean = std::env::var_os("PAGEFAIL_LEAN").map(|_| "--lean");
    // PAGEFAIL_FAILURES_ONLY: the warn_alloc kprobe alone.
    let failures_only = std::env::var_os("PAGEFAIL_FAILURES_ONLY").map(|_| "--failures-only");
    let mut child = Command::new(pagefail)
        .args(["-v", "watch", "--min-order", "1", "--interval", "2s"])
        .args(["--ring-kib", "16384", "--csv", "/tmp/pagefail.csv"])
        // The counts the host checks, machine-readable.
        .args(["--summary-json", "/tmp/pagefail-summary.json"])
        // One row per stack as well: each row's top stack is then its only
        // one, so the outcome of every call site is checked (xtask vm-test).
        .args(["--by", "comm,pid,context,path,order,gfp,stack"])
        .args(lean)
        .args(failures_only)
        // Fallbacks seen to work: one follow record per failure at most
        // (not with --failures-only, which sees no successes).
        .args(failures_only.is_none().then_some("--observe-fallbacks"))
        .stdout(pf_out)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {pagefail}: {e}"))?;
    let stderr_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let attached = Arc::new(AtomicBool::new(false));
    let reader = {
        let stderr = child.stderr.take().ok_or("no pagefail stderr")?;
        let lines = Arc::clone(&stderr_lines);
        let attached = Arc::clone(&attached);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[pagefail] {line}");
                let done = line.contains("warn_alloc kprobe attached")
                    || line.contains("warn_alloc probe unavailable");
                lines.lock().unwrap().push(line);
                if done {
                    attached.store(true, Ordering::SeqCst);
                }
            }
            attached.store(true, Ordering::SeqCst);
        })
    };
    let wait_start = Instant::now();
    while !attached.load(Ordering::SeqCst) {
        if wait_start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            return Err("pagefail did not attach within 90 s".to_owned());
        }
        thread::sleep(Duration::from_millis(50));
    }
    if let Ok(Some(status)) = child.try_wait() {
        let _ = reader.join();
        section("pagefail-stderr", &stderr_lines.lock().unwrap().join("\n"));
        return Err(format!("pagefail exited at start: {status}"));
    }
    let attach_secs = t0.elapsed().as_secs_f64();

    // The ground-truth window opens: after pagefail's, before fragmenting.
    let oom_before = vmstat("oom_kill");
    let truth = GroundTruth::start()?;
    let drop_count = DropCount::start();
    // Made now, before memory is fragmented: the socket of the neighbour
    // table phase.
    let neigh_sock = drop_count.as_ref().ok().map(|_| udp_socket()).transpose()?;

    // Every thread and process is made now, before memory is fragmented.
    let go = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let server = {
        let (go, stop, c) = (Arc::clone(&go), Arc::clone(&stop), Arc::clone(&counters));
        spawn_named("pfgen-server", move || server(&go, &stop, &c))
    };
    // Let the listeners come up, then connect the bulk flows (proves the link).
    thread::sleep(Duration::from_millis(500));
    let mut bulk = Vec::new();
    for i in 0..BULK_FLOWS {
        let fd = tcp_connect(BOND1_IP, BULK_PORT, Duration::from_secs(10))
            .map_err(|e| format!("bulk flow {i} cannot connect to 10.9.0.2 over the bond: {e}"))?;
        bulk.push(fd);
    }
    let mut workers = Vec::new();
    for (i, fd) in bulk.into_iter().enumerate() {
        let (go, c) = (Arc::clone(&go), Arc::clone(&counters));
        workers.push(spawn_named(&format!("pfgen-bulk{i}"), move || {
            bulk_sender(&fd, &go, traffic, &c);
        }));
    }
    {
        let (go, c) = (Arc::clone(&go), Arc::clone(&counters));
        workers.push(spawn_named("pfgen-neigh", move || {
            neigh_growth(&go, traffic, &c);
        }));
    }
    {
        let (go, c) = (Arc::clone(&go), Arc::clone(&counters));
        workers.push(spawn_named("pfgen-arp", move || {
            arp_flood(&go, traffic, &c);
        }));
    }
    for i in 0..2 {
        let (go, c) = (Arc::clone(&go), Arc::clone(&counters));
        workers.push(spawn_named(&format!("pfgen-storm{i}"), move || {
            connect_storm(&go, traffic, &c);
        }));
    }
    {
        let (go, c) = (Arc::clone(&go), Arc::clone(&counters));
        workers.push(spawn_named("pfgen-reuse", move || {
            reuseport_groups(&go, traffic, &c);
        }));
    }

    let _ = fs::remove_file("/tmp/frag.ready");
    let _ = fs::remove_file("/tmp/frag.release");
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut frag = Command::new(me)
        .args(["fragment", "/tmp/frag.ready", "/tmp/frag.release"])
        .spawn()
        .map_err(|e| format!("starting the fragmenter: {e}"))?;
    let frag_start = Instant::now();
    let mut fragmented = false;
    while frag_start.elapsed() < Duration::from_mins(2) {
        if Path::new("/tmp/frag.ready").exists() {
            fragmented = true;
            break;
        }
        if let Ok(Some(status)) = frag.try_wait() {
            eprintln!("vm-scenario: the fragmenter exited early: {status}");
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let frag_secs = frag_start.elapsed().as_secs_f64();
    let buddy_fragmented = fs::read_to_string("/proc/buddyinfo").unwrap_or_default();

    // Go: traffic for `traffic`, every loop bounded.
    let go_at = Instant::now();
    go.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    // Memory drops on purpose: a full neighbour table (see neigh_table_full).
    let neigh_full = neigh_sock
        .as_ref()
        .map_or_else(|| "skipped: no drop reasons".to_owned(), neigh_table_full);
    stop.store(true, Ordering::SeqCst);
    let _ = server.join();
    let traffic_secs = go_at.elapsed().as_secs_f64();

    // Quiesce: free the fragmented memory, let timers settle, then close the
    // tracefs window, then stop pagefail.
    let _ = fs::write("/tmp/frag.release", "");
    let rel = Instant::now();
    let frag_status = loop {
        if let Ok(Some(s)) = frag.try_wait() {
            break Some(s);
        }
        if rel.elapsed() > Duration::from_secs(30) {
            let _ = frag.kill();
            break frag.wait().ok();
        }
        thread::sleep(Duration::from_millis(50));
    };
    thread::sleep(Duration::from_secs(2));
    let buddy_after = fs::read_to_string("/proc/buddyinfo").unwrap_or_default();
    if let Ok(d) = &drop_count {
        d.count.stop();
    }
    truth.stop()?;
    let trace = truth.read()?;

    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id().cast_signed(), libc::SIGINT) };
    let stop_at = Instant::now();
    let pf_status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if stop_at.elapsed() > Duration::from_mins(1) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let _ = reader.join();

    let pf_stdout = fs::read_to_string("/tmp/pagefail.out").unwrap_or_default();
    let summary = pf_stdout
        .find("=== pagefail summary ===")
        .map_or("", |i| &pf_stdout[i..]);
    let csv = fs::read_to_string("/tmp/pagefail.csv").unwrap_or_default();
    let summary_json = fs::read_to_string("/tmp/pagefail-summary.json").unwrap_or_default();

    section("pagefail-stderr", &stderr_lines.lock().unwrap().join("\n"));
    section("pagefail-summary", summary);
    section("pagefail-summary-json", &summary_json);
    section("pagefail-csv", &csv);
    section("buddyinfo-fragmented", &buddy_fragmented);
    section("buddyinfo-after", &buddy_after);
    let mut keys = String::new();
    for ((order, gfp), n) in &trace.by_order_gfp {
        keys.push_str(&format!("{order}\t{gfp}\t{n}\n"));
    }
    section("tracefs-order-gfp", &keys);
    section("traffic", &counters.report());
    section("neigh-table-full", &neigh_full);
    let (drops_text, drops_method, drops_kernel_lost) = match &drop_count {
        Ok(d) => match d.read() {
            Ok((text, lost)) => (text, d.count.method_name(), lost.to_string()),
            Err(e) => (format!("error: {e}\n"), "error", String::new()),
        },
        Err(why) => (format!("unavailable: {why}\n"), "none", String::new()),
    };
    section("tracefs-drops", &drops_text);
    // Who the OOM killer took, if anyone (the fragmenter is its first choice),
    // and its reports, which say what held the memory.
    let log = kernel_log();
    section("oom-reports", &oom_reports(&log));
    let victims = oom_victims_in(&log);
    let oom = if victims.is_empty() {
        "none".to_owned()
    } else {
        victims
            .iter()
            .map(|(pid, comm)| format!("{}:{pid}", comm.replace(' ', "_")))
            .collect::<Vec<_>>()
            .join(",")
    };

    println!(
        "PAGEFAIL-RESULT fragmented={} frag_secs={frag_secs:.1} attach_secs={attach_secs:.1} \
         traffic_secs={traffic_secs:.1} fragmenter_exit={} pagefail_exit={} \
         tracefs_method={} tracefs_failures={} tracefs_warn_alloc={} tracefs_lost={} \
         tracefs_unparsed={} drops_method={drops_method} drops_kernel_lost={drops_kernel_lost} \
         oom_kills={} oom_victims={oom}",
        u8::from(fragmented),
        frag_status.map_or_else(|| "none".to_owned(), |s| s.to_string().replace(' ', "_")),
        pf_status.map_or_else(|| "killed".to_owned(), |s| s.to_string().replace(' ', "_")),
        trace.method,
        trace.failures,
        trace.warn_alloc,
        trace.lost,
        trace.unparsed,
        vmstat("oom_kill").saturating_sub(oom_before),
    );
    Ok(())
}

// ---------------------------------------------------------------- drops

/// The kernel's own count of the memory-reason drops (`skb:kfree_skb` by
/// reason), in its own tracefs instance, over the same window as the
/// failures' count.
struct DropCount {
    count: FieldCount,
    table: ReasonTable,
    counted: Vec<(u32, String)>,
}

impl DropCount {
    /// Start counting; `Err` says why the kernel has no drop reasons.
    fn start() -> Res<Self> {
        let path = format!("{TRACEFS}/events/skb/kfree_skb/format");
        let format = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let table = ReasonTable::from_format(&format).map_err(|e| e.to_string())?;
        let counted = table.counted(DropReasons::Memory);
        if counted.is_empty() {
            return Err("no memory reason in this kernel's enum".to_owned());
        }
        let filter = counted
            .iter()
            .map(|(n, _)| format!("reason == {n}"))
            .collect::<Vec<_>>()
            .join(" || ");
        let count = FieldCount::start(
            Path::new(TRACEFS),
            "pfdrops",
            "skb/kfree_skb",
            "reason",
            &filter,
        )
        .map_err(|e| format!("tracefs count of skb:kfree_skb: {e}"))?;
        Ok(Self {
            count,
            table,
            counted,
        })
    }

    /// `NAME\tcount` for every memory reason, and the events the kernel's
    /// count lost.
    fn read(&self) -> Res<(String, u64)> {
        let (hits, lost) = self
            .count
            .read(&|name| self.table.number(name).map(u64::from))
            .map_err(|e| format!("reading the drop count: {e}"))?;
        let mut text = String::new();
        for (n, name) in &self.counted {
            let c = hits.get(&u64::from(*n)).copied().unwrap_or(0);
            text.push_str(&format!("{name}\t{c}\n"));
        }
        Ok((text, lost))
    }
}

fn udp_socket() -> Res<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(format!("udp socket: {}", errno()));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const NEIGH_SYSCTL: &str = "/proc/sys/net/ipv4/neigh/default";

/// Drops the kernel attributes to memory, made on purpose: with the
/// neighbour table's limits (`gc_thresh1..3`) at 1, one datagram to each of
/// 1250 absent on-link hosts (10.9.250.1-10.9.254.250, used by nothing else).
/// `neigh_alloc` frees what the forced collection may (entries older than
/// 5 s), then refuses: the fresh, unresolved entries hold a timer reference.
/// Each refused datagram is freed by `ip_finish_output2` with
/// `NEIGH_CREATEFAIL` (UDP's `sendto` may still report success; the kernel's
/// `table_fulls` counter of `/proc/net/stat/arp_cache` is printed). The
/// limits are restored after.
#[expect(
    clippy::cast_possible_truncation,
    reason = "i < 1250 makes the address bytes fit; libc ABI: sockaddr_in's size fits socklen_t"
)]
fn neigh_table_full(sock: &OwnedFd) -> String {
    let names = ["gc_thresh1", "gc_thresh2", "gc_thresh3"];
    let saved: Vec<String> = names
        .iter()
        .map(|n| fs::read_to_string(format!("{NEIGH_SYSCTL}/{n}")).unwrap_or_default())
        .collect();
    for n in names {
        let _ = fs::write(format!("{NEIGH_SYSCTL}/{n}"), "1");
    }
    let (mut sent, mut refused, mut other) = (0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(5);
    for i in 0..1250u32 {
        if Instant::now() >= end {
            break;
        }
        let ip = [10, 9, 250 + (i / 250) as u8, 1 + (i % 250) as u8];
        let addr = sockaddr(ip, 9);
        // SAFETY: sendto(2) of a small buffer to a valid sockaddr_in.
        let r = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                b"pagefail".as_ptr().cast(),
                8,
                0,
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r >= 0 {
            sent += 1;
        } else if errno().raw_os_error() == Some(libc::EINVAL) {
            refused += 1;
        } else {
            other += 1;
        }
    }
    // Restore in reverse, so thresh1 <= thresh2 <= thresh3 holds throughout.
    for (n, v) in names.iter().zip(&saved).rev() {
        let _ = fs::write(format!("{NEIGH_SYSCTL}/{n}"), v.trim());
    }
    let table_fulls = fs::read_to_string("/proc/net/stat/arp_cache")
        .ok()
        .and_then(|t| {
            let mut lines = t.lines();
            let head: Vec<&str> = lines.next()?.split_whitespace().collect();
            let col = head.iter().position(|h| *h == "table_fulls")?;
            Some(
                lines
                    .filter_map(|l| l.split_whitespace().nth(col))
                    .filter_map(|v| u64::from_str_radix(v, 16).ok())
                    .sum::<u64>(),
            )
        })
        .map_or_else(|| "?".to_owned(), |n| n.to_string());
    format!(
        "sent={sent} refused_einval={refused} other_errors={other} arp_table_fulls_since_boot={table_fulls}\n"
    )
}

/// One counter of `/proc/vmstat` (0 when absent).
fn vmstat(key: &str) -> u64 {
    fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// The kernel log so far, one message per record (`/dev/kmsg`).
fn kernel_log() -> Vec<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut out = Vec::new();
    let Ok(mut f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return out;
    };
    let mut buf = vec![0u8; 8192];
    // One record per read; EAGAIN at the end. Bounded.
    for _ in 0..100_000 {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // EPIPE: records were overwritten while reading; go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        };
        let record = String::from_utf8_lossy(&buf[..n]);
        // "prio,seq,usec,flags;message", then " KEY=value" lines.
        let message = record.split_once(';').map_or(&*record, |(_, m)| m);
        out.push(message.lines().next().unwrap_or("").to_owned());
    }
    out
}

/// The OOM killer's reports in the kernel log: each from `invoked
/// oom-killer` to its `Killed process` line (the task dump left out), and the
/// reaper's lines. Empty when it never ran.
fn oom_reports(log: &[String]) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in log {
        if line.contains("invoked oom-killer") {
            inside = true;
        }
        let task_dump = line.starts_with('[');
        if (inside && !task_dump) || line.contains("oom_reaper") {
            out.push_str(line);
            out.push('\n');
        }
        if line.contains("Killed process ") {
            inside = false;
        }
    }
    out
}

/// `Killed process PID (COMM)` lines of the kernel log so far.
fn oom_victims() -> Vec<(u32, String)> {
    oom_victims_in(&kernel_log())
}

fn oom_victims_in(log: &[String]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for line in log {
        if let Some((_, rest)) = line.split_once("Killed process ") {
            let mut it = rest.splitn(2, ' ');
            let pid = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let comm = it
                .next()
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.split_once(')'))
                .map_or_else(String::new, |(c, _)| c.to_owned());
            out.push((pid, comm));
        }
    }
    out
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    // The thread name becomes the task's comm, which pagefail's CSV shows.
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("spawning a scenario thread")
}

fn raise_fd_limit() -> Res<()> {
    let lim = libc::rlimit {
        rlim_cur: 65536,
        rlim_max: 65536,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } != 0 {
        return Err(format!("setrlimit(RLIMIT_NOFILE): {}", errno()));
    }
    Ok(())
}

// ---------------------------------------------------------------- tracefs

fn setup_tracefs() -> Res<()> {
    if !Path::new(&format!("{TRACEFS}/events")).exists() {
        let src = CString::new("tracefs").unwrap();
        let dst = CString::new(TRACEFS).unwrap();
        // SAFETY: mount(2) with valid C strings.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(format!("mounting tracefs on {TRACEFS}: {}", errno()));
        }
    }
    append_file(
        &format!("{TRACEFS}/kprobe_events"),
        &format!("p:wa warn_alloc gfp_mask={FIRST_ARG_REG}:x32\n"),
    )?;
    Ok(())
}

/// The register of a function's first argument, as kprobe events name it.
#[cfg(target_arch = "x86_64")]
const FIRST_ARG_REG: &str = "%di";
#[cfg(target_arch = "aarch64")]
const FIRST_ARG_REG: &str = "%x0";

/// The kernel's own count over the window, of `kmem/mm_page_alloc` failures
/// (failed, order >= 1, atomic: [`FAILED_ATOMIC_FILTER`]) by order and gfp, and
/// of the `wa` (`warn_alloc`) kprobe event:
/// - hist triggers, each in a tracefs instance of its own, where the kernel
///   has them (6.1, 6.12): the kernel adds the hits up by order and gfp mask
///   itself, so no buffer can overrun and no reader has to keep up (a run
///   can make 229,000 failures, more records than 8 MiB of buffer a CPU
///   holds; a `trace_pipe` reader kept up only when given a CPU of its own,
///   which moved the softirq work off `ksoftirqd`);
/// - else (Debian's 5.10 has no `CONFIG_HIST_TRIGGERS`) the events in an
///   instance whose `trace_pipe` a thread reads while the window is open,
///   counted by order and the gfp names tracefs prints; the buffers'
///   overruns are counted, so a short count is never silent.
enum GroundTruth {
    Hist {
        failures: FieldCount,
        warn_alloc: FieldCount,
    },
    Pipe(TraceReader),
}

#[derive(Default)]
struct Trace {
    method: &'static str,
    failures: u64,
    warn_alloc: u64,
    /// Events the kernel's count lost (hist tables full, buffer overruns).
    lost: u64,
    unparsed: u64,
    /// (order, gfp): the mask as `0x...` (hist), or the names tracefs printed.
    by_order_gfp: BTreeMap<(u64, String), u64>,
}

impl GroundTruth {
    fn start() -> Res<Self> {
        let tracefs = Path::new(TRACEFS);
        let failures = FieldCount::start(
            tracefs,
            "pfcheck",
            "kmem/mm_page_alloc",
            "order,gfp_flags",
            FAILED_ATOMIC_FILTER,
        )
        .map_err(|e| format!("tracefs count of mm_page_alloc failures: {e}"))?;
        if failures.method() != Method::Hist {
            drop(failures);
            return Ok(Self::Pipe(TraceReader::start()?));
        }
        let warn_alloc = FieldCount::start(
            tracefs,
            "pfcheck-wa",
            "kprobes/wa",
            "common_pid",
            "common_pid >= 0",
        )
        .map_err(|e| format!("tracefs count of warn_alloc: {e}"))?;
        Ok(Self::Hist {
            failures,
            warn_alloc,
        })
    }

    /// Closes the window; then `read` gives the counts.
    fn stop(&self) -> Res<()> {
        match self {
            Self::Hist {
                failures,
                warn_alloc,
            } => {
                failures.stop();
                warn_alloc.stop();
                Ok(())
            }
            Self::Pipe(_) => write_file(&format!("{PIPE_INSTANCE}/tracing_on"), "0"),
        }
    }

    fn read(self) -> Res<Trace> {
        let (failures, warn_alloc) = match self {
            Self::Pipe(reader) => return reader.finish(),
            Self::Hist {
                failures,
                warn_alloc,
            } => (failures, warn_alloc),
        };
        let (by_keys, lost) = failures
            .read_keys()
            .map_err(|e| format!("reading the failures' hist: {e}"))?;
        let (by_pid, wa_lost) = warn_alloc
            .read_keys()
            .map_err(|e| format!("reading the warn_alloc hist: {e}"))?;
        let mut t = Trace {
            method: "hist",
            warn_alloc: by_pid.values().sum(),
            lost: lost + wa_lost,
            ..Trace::default()
        };
        for (keys, n) in by_keys {
            let [order, gfp] = keys[..] else {
                return Err(format!("a hist entry with keys {keys:?}"));
            };
            t.failures += n;
            *t.by_order_gfp
                .entry((order, format!("{gfp:#x}")))
                .or_default() += n;
        }
        Ok(t)
    }
}

/// The instance of the `trace_pipe` count.
const PIPE_INSTANCE: &str = "/sys/kernel/tracing/instances/pfcheck-pipe";

/// Counts the pipe instance's records while the window is open.
struct TraceReader {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Res<Trace>>,
}

impl TraceReader {
    /// Makes the instance and opens the window.
    fn start() -> Res<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        fs::create_dir(PIPE_INSTANCE).map_err(|e| format!("creating {PIPE_INSTANCE}: {e}"))?;
        write_file(&format!("{PIPE_INSTANCE}/tracing_on"), "0")?;
        // 8 MiB per CPU: room for a burst while the reader catches up; the
        // overrun counters prove it was enough.
        write_file(&format!("{PIPE_INSTANCE}/buffer_size_kb"), "8192")?;
        let ev = format!("{PIPE_INSTANCE}/events/kmem/mm_page_alloc");
        write_file(&format!("{ev}/filter"), FAILED_ATOMIC_FILTER)
            .map_err(|e| format!("{e} (the tracefs filter syntax was refused)"))?;
        write_file(&format!("{ev}/enable"), "1")?;
        write_file(&format!("{PIPE_INSTANCE}/events/kprobes/wa/enable"), "1")?;
        let path = format!("{PIPE_INSTANCE}/trace_pipe");
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| format!("opening {path}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = spawn_named("pfcheck-trace", move || consume_trace(file, &flag));
        write_file(&format!("{PIPE_INSTANCE}/tracing_on"), "1")?;
        Ok(Self { stop, handle })
    }

    /// Call after the window is closed: reads what is left, then returns.
    fn finish(self) -> Res<Trace> {
        self.stop.store(true, Ordering::SeqCst);
        let mut t = self
            .handle
            .join()
            .map_err(|_| "the trace_pipe reader panicked".to_owned())??;
        t.method = "pipe";
        t.lost = pipe_instance_lost()?;
        Ok(t)
    }
}

fn consume_trace(mut file: fs::File, stop: &AtomicBool) -> Res<Trace> {
    // A guest run lasts minutes at most; this bound only guards a stuck stop.
    let deadline = Instant::now() + Duration::from_mins(20);
    let mut t = Trace::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            // Empty: trace_pipe says EAGAIN when opened non-blocking.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading trace_pipe: {e}")),
        };
        if n == 0 {
            // Done once the window is closed, else wait a little.
            if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..=end);
            for line in text.lines() {
                t.count_line(line);
            }
        }
    }
    if !pending.is_empty() {
        t.count_line(&String::from_utf8_lossy(&pending));
    }
    Ok(t)
}

impl Trace {
    fn count_line(&mut self, line: &str) {
        if line.starts_with('#') || line.trim().is_empty() {
            return;
        }
        if let Some(i) = line.find(" mm_page_alloc: ") {
            let rest = &line[i + 16..];
            let order = field(rest, "order=").and_then(|o| o.parse::<u64>().ok());
            let gfp = field(rest, "gfp_flags=");
            match (order, gfp) {
                (Some(o), Some(g)) => {
                    self.failures += 1;
                    *self.by_order_gfp.entry((o, g.to_owned())).or_default() += 1;
                }
                _ => self.unparsed += 1,
            }
        } else if line.contains(" wa: ") {
            self.warn_alloc += 1;
        } else {
            self.unparsed += 1;
        }
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    Some(text[start..].split_whitespace().next().unwrap_or(""))
}

/// The pipe instance's overruns and dropped events over all CPUs; statistics
/// that cannot be read are an error, never a silent 0.
fn pipe_instance_lost() -> Res<u64> {
    let mut lost = 0;
    let dir = format!("{PIPE_INSTANCE}/per_cpu");
    for cpu in fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let path = cpu.map_err(|e| format!("{dir}: {e}"))?.path().join("stats");
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        lost += text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("overrun:")
                    .or_else(|| l.strip_prefix("dropped events:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(lost)
}

// ---------------------------------------------------------------- fragmenter

fn meminfo_kb(key: &str) -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Free blocks per order, summed over zones, from `/proc/buddyinfo`.
fn buddy_totals() -> [u64; 11] {
    let mut totals = [0u64; 11];
    for line in fs::read_to_string("/proc/buddyinfo")
        .unwrap_or_default()
        .lines()
    {
        let counts: Vec<u64> = line
            .split_whitespace()
            .skip(4)
            .filter_map(|v| v.parse().ok())
            .collect();
        for (o, c) in counts.iter().enumerate().take(11) {
            totals[o] += c;
        }
    }
    totals
}

/// Free blocks by order in CMA areas, summed over zones: the `type CMA`
/// rows of `/proc/pagetypeinfo` (zeros without CMA or without the file).
fn cma_free_blocks() -> [u64; 11] {
    parse_cma_free_blocks(&fs::read_to_string("/proc/pagetypeinfo").unwrap_or_default())
}

fn parse_cma_free_blocks(text: &str) -> [u64; 11] {
    let mut totals = [0u64; 11];
    for line in text.lines() {
        // `Node    0, zone      DMA, type          CMA      0      3 ...`
        let mut words = line.split_whitespace();
        if !words.by_ref().any(|w| w == "type") || words.next() != Some("CMA") {
            continue;
        }
        for (o, c) in words
            .filter_map(|v| v.parse::<u64>().ok())
            .enumerate()
            .take(11)
        {
            totals[o] += c;
        }
    }
    totals
}

/// Touch anonymous memory until `MemFree` is about 4 MB, give back every page
/// with an even PFN (its odd buddy stays, so nothing merges), lock the rest
/// so compaction leaves it alone, then take each remaining free block of
/// order >= 1 with an `AF_PACKET` RX ring of exactly that block size.
fn fragment(ready: &str, release: &str) -> Res<()> {
    // Killable on purpose: if memory runs out, the OOM killer takes us. Named,
    // so that the kernel log's victims say which process this was.
    let _ = write_file("/proc/self/oom_score_adj", "1000");
    let _ = write_file("/proc/self/comm", "pfcheck-frag");
    let page = 4096usize;
    let total_kb = meminfo_kb("MemTotal:");
    let len = usize::try_from(total_kb).unwrap_or(0) * 1024;
    // SAFETY: anonymous private mapping; only touched below within `len`.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!("mmap {len} bytes: {}", errno()));
    }
    let base = base.cast::<u8>();
    let mut touched = 0usize;
    while touched < len {
        let free = meminfo_kb("MemFree:");
        if free <= 4096 {
            break;
        }
        // Big steps while far away, single pages near the target.
        let step_pages = usize::try_from((free - 4096) / 4 / 2)
            .unwrap_or(1)
            .clamp(1, 1024);
        for _ in 0..step_pages {
            if touched >= len {
                break;
            }
            // SAFETY: within the mapping.
            unsafe { base.add(touched).write_volatile(1) };
            touched += page;
        }
    }
    let pages = touched / page;
    // PFNs from pagemap: bit 63 present, bits 0-54 the PFN (root sees them).
    let mut pm = fs::File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
    let mut buf = vec![0u8; pages * 8];
    let offset = (base as usize / page) * 8;
    {
        use std::io::{Seek, SeekFrom};
        pm.seek(SeekFrom::Start(offset as u64))
            .map_err(|e| format!("pagemap seek: {e}"))?;
        pm.read_exact(&mut buf)
            .map_err(|e| format!("pagemap read: {e}"))?;
    }
    let mut released = 0usize;
    for i in 0..pages {
        let e = u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
        let present = e >> 63 == 1;
        let pfn = e & ((1 << 55) - 1);
        if present && pfn % 2 == 0 {
            // SAFETY: one page inside the mapping.
            unsafe { libc::madvise(base.add(i * page).cast(), page, libc::MADV_DONTNEED) };
            released += 1;
        }
    }
    // mlock2(MLOCK_ONFAULT): lock what is resident without refaulting the holes.
    // SAFETY: the range is our mapping.
    let r = unsafe { libc::syscall(libc::SYS_mlock2, base, touched, 1) };
    if r != 0 {
        eprintln!("vm-scenario: mlock2: {}", errno());
    }
    // Take the remaining blocks of order >= 1, highest order first. Blocks in
    // a CMA area are left alone: only movable allocations may use them, so
    // they fail no atomic allocation, and a ring asked of them falls back to
    // vmalloc, whose order-0 pages come from what little else is free (on a
    // 6.1 arm64 guest with 64 MiB of CMA that was an OOM kill of this
    // fragmenter before the window opened).
    let mut rings: Vec<OwnedFd> = Vec::new();
    for _ in 0..64 {
        let totals = buddy_totals();
        let cma = cma_free_blocks();
        let Some(order) = (1..11).rev().find(|&o| totals[o] > cma[o]) else {
            break;
        };
        match packet_ring(order, totals[order] - cma[order]) {
            Ok(fd) => rings.push(fd),
            Err(e) => {
                eprintln!("vm-scenario: ring of order {order}: {e}");
                break;
            }
        }
    }
    let reserve = oom_reserve(RESERVE_BYTES);
    eprintln!(
        "vm-scenario: fragmented: touched {pages} pages, released {released}, {} rings, \
         reserve {} kB, MemFree {} kB, free blocks by order {:?}",
        rings.len(),
        reserve / 1024,
        meminfo_kb("MemFree:"),
        buddy_totals()
    );
    write_file(ready, "")?;
    let start = Instant::now();
    while !Path::new(release).exists() && start.elapsed() < Duration::from_mins(5) {
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Memory the fragmenter holds unlocked, so that killing it frees memory at
/// once on every kernel.
const RESERVE_BYTES: usize = 8 << 20;

/// Touch `bytes` of anonymous memory that is not locked; returns how much.
///
/// When memory runs out the OOM killer takes the fragmenter first. On 5.10 its
/// reaper skips locked mappings (`can_madv_lru_vma`; 6.1 and 6.12 reap them),
/// and a victim in `exit_mmap` stops counting as one before it has munlocked
/// and unmapped its locked pages, which takes a while in an emulated guest. An
/// allocation in that window made the next kill pagefail (4 of 8 runs without
/// a reserve, 1 of 4 with 4 MiB; the kernel's second report showed the
/// fragmenter's pages moved from unevictable to inactive anon, not yet freed).
/// Unlocked memory is reaped at once and covers the window (8 MiB: 10 of 10
/// runs). It is taken after fragmenting,
/// from order-0 pages whose buddies are locked, so compaction cannot merge
/// anything by moving it.
fn oom_reserve(bytes: usize) -> usize {
    // SAFETY: anonymous private mapping, touched below within `bytes` and
    // never unmapped: it lives as long as the fragmenter.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        eprintln!("vm-scenario: OOM reserve of {bytes} bytes: {}", errno());
        return 0;
    }
    let base = base.cast::<u8>();
    for off in (0..bytes).step_by(4096) {
        // SAFETY: within the mapping.
        unsafe { base.add(off).write_volatile(1) };
    }
    bytes
}

/// An `AF_PACKET` RX ring of `blocks` blocks of `PAGE_SIZE << order` bytes.
fn packet_ring(order: usize, blocks: u64) -> Res<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(format!("socket(AF_PACKET): {}", errno()));
    }
    // SAFETY: we own the new descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let block = 4096u32 << order;
    let frame = 2048u32;
    let req = libc::tpacket_req {
        tp_block_size: block,
        tp_block_nr: u32::try_from(blocks).unwrap_or(u32::MAX),
        tp_frame_size: frame,
        tp_frame_nr: u32::try_from(blocks).unwrap_or(0) * (block / frame),
    };
    setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
        .map_err(|e| format!("PACKET_RX_RING: {e}"))?;
    Ok(fd)
}

// ---------------------------------------------------------------- network helpers

#[expect(
    clippy::cast_possible_truncation,
    reason = "libc ABI: struct sizes and AF_* constants fit socklen_t and sa_family_t"
)]
fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` is a valid T for the option.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "libc ABI: struct sizes and AF_* constants fit socklen_t and sa_family_t"
)]
fn sockaddr(ip: [u8; 4], port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    }
}

fn tcp_socket(nonblock: bool) -> std::io::Result<OwnedFd> {
    let flags =
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, flags, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: we own the new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "libc ABI: struct sizes and AF_* constants fit socklen_t and sa_family_t"
)]
fn connect_raw(fd: RawFd, ip: [u8; 4], port: u16) -> std::io::Result<()> {
    let sa = sockaddr(ip, port);
    // SAFETY: valid sockaddr_in.
    let r = unsafe {
        libc::connect(
            fd,
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

fn timeout(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(d.subsec_micros()),
    }
}

/// A blocking connect bounded by `limit` (`SO_SNDTIMEO` bounds connect(2)).
fn tcp_connect(ip: [u8; 4], port: u16, limit: Duration) -> std::io::Result<OwnedFd> {
    let fd = tcp_socket(false)?;
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        &timeout(limit),
    )?;
    connect_raw(fd.as_raw_fd(), ip, port)?;
    Ok(fd)
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "libc ABI: struct sizes and AF_* constants fit socklen_t and sa_family_t"
)]
fn listener(port: u16, reuseport: bool, backlog: i32) -> std::io::Result<OwnedFd> {
    let fd = tcp_socket(true)?;
    let one: i32 = 1;
    setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)?;
    if reuseport {
        setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, &one)?;
    }
    let sa = sockaddr([0, 0, 0, 0], port);
    // SAFETY: valid sockaddr_in; listen on our socket.
    unsafe {
        if libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
            || libc::listen(fd.as_raw_fd(), backlog) != 0
        {
            return Err(errno());
        }
    }
    Ok(fd)
}

/// Move the calling thread into the netns `peer` (network namespaces are per thread).
fn enter_peer_netns() -> Res<()> {
    let f = fs::File::open("/run/netns/peer").map_err(|e| format!("/run/netns/peer: {e}"))?;
    // SAFETY: setns on a namespace file descriptor.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns(peer): {}", errno()));
    }
    Ok(())
}

/// `ethtool -K IFACE sg off` through the legacy `ETHTOOL_SSG` ioctl.
fn scatter_gather_off(iface: &str) -> Res<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SSG: u32 = 0x19;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SSG,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &raw mut value,
        _pad: [0; 16],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", errno()));
    }
    // SAFETY: we own the descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a valid ethtool_value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL, &raw mut req) } != 0 {
        return Err(format!("ethtool sg off on {iface}: {}", errno()));
    }
    Ok(())
}

// ---------------------------------------------------------------- traffic

#[derive(Default)]
struct Counters {
    bulk_bytes: AtomicU64,
    neigh_connects: AtomicU64,
    arp_frames: AtomicU64,
    storm_connects: AtomicU64,
    storm_errors: AtomicU64,
    reuse_listeners: AtomicU64,
    reuse_errors: AtomicU64,
    /// `listen()` refused with ENOMEM: the group's socket array could not
    /// grow (`__reuseport_alloc`), a terminal failure made on purpose.
    reuse_enomem: AtomicU64,
    accepted: AtomicU64,
    server_error: Mutex<String>,
}

impl Counters {
    fn report(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "bulk_bytes={} neigh_connects={} arp_frames={} storm_connects={} storm_errors={} \
             reuseport_listeners={} reuseport_errors={} reuseport_enomem={} accepted={} \
             server_error={}\n",
            g(&self.bulk_bytes),
            g(&self.neigh_connects),
            g(&self.arp_frames),
            g(&self.storm_connects),
            g(&self.storm_errors),
            g(&self.reuse_listeners),
            g(&self.reuse_errors),
            g(&self.reuse_enomem),
            g(&self.accepted),
            self.server_error.lock().unwrap()
        )
    }
}

fn wait_go(go: &AtomicBool) {
    while !go.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(10));
    }
}

/// The one receiver in netns `peer`: accepts the bulk flows and reads them,
/// accepts storm connections and closes them; one epoll loop, no fork.
fn server(go: &AtomicBool, stop: &AtomicBool, c: &Counters) {
    if let Err(e) = server_loop(go, stop, c) {
        eprintln!("vm-scenario: server: {e}");
        *c.server_error.lock().unwrap() = e.replace(' ', "_");
    }
}

fn server_loop(_go: &AtomicBool, stop: &AtomicBool, c: &Counters) -> Res<()> {
    enter_peer_netns()?;
    let bulk = listener(BULK_PORT, false, 64).map_err(|e| format!("listen {BULK_PORT}: {e}"))?;
    let storm =
        listener(STORM_PORT, false, 4096).map_err(|e| format!("listen {STORM_PORT}: {e}"))?;
    // SAFETY: epoll_create1 and epoll_ctl on descriptors we own.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(format!("epoll_create1: {}", errno()));
    }
    // SAFETY: we own the descriptor.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let add = |fd: RawFd| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(fd.cast_unsigned()),
        };
        // SAFETY: valid epoll and target descriptors.
        unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) };
    };
    add(bulk.as_raw_fd());
    add(storm.as_raw_fd());
    let mut conns: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: valid buffer of 64 events.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), 64, 100) };
        for ev in events.iter().take(usize::try_from(n).unwrap_or(0)) {
            let Ok(fd) = RawFd::try_from(ev.u64) else {
                continue;
            };
            if fd == bulk.as_raw_fd() || fd == storm.as_raw_fd() {
                for _ in 0..64 {
                    // SAFETY: accept4 on a listening socket.
                    let a = unsafe {
                        libc::accept4(
                            fd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if a < 0 {
                        break;
                    }
                    c.accepted.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: we own the accepted descriptor.
                    let a = unsafe { OwnedFd::from_raw_fd(a) };
                    if fd == bulk.as_raw_fd() {
                        add(a.as_raw_fd());
                        conns.push(a);
                    }
                }
            } else {
                for _ in 0..16 {
                    // SAFETY: read into our buffer.
                    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if r <= 0 {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// One bulk TCP flow: write as fast as the bond takes it until the deadline.
fn bulk_sender(fd: &OwnedFd, go: &AtomicBool, run_for: Duration, c: &Counters) {
    let _ = setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        &timeout(Duration::from_millis(200)),
    );
    let buf = vec![0x5au8; 64 * 1024];
    wait_go(go);
    let end = Instant::now() + run_for;
    let mut rounds = 0u64;
    while Instant::now() < end && rounds < 10_000_000 {
        rounds += 1;
        // SAFETY: write from our buffer.
        let r = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if r > 0 {
            c.bulk_bytes
                .fetch_add(r.unsigned_abs() as u64, Ordering::Relaxed);
        }
    }
}

/// Non-blocking connects to thousands of absent hosts on bond0's subnet: each
/// creates a neighbour entry, and the table's hash grows (`neigh_hash_alloc`).
fn neigh_growth(go: &AtomicBool, run_for: Duration, c: &Counters) {
    wait_go(go);
    let end = Instant::now() + run_for;
    for i in 0..40_000u32 {
        if Instant::now() >= end {
            break;
        }
        let ip = [10, 9, 100 + (i / 250 % 150) as u8, 1 + (i % 250) as u8];
        if let Ok(fd) = tcp_socket(true) {
            let _ = connect_raw(fd.as_raw_fd(), ip, 9);
            c.neigh_connects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// ARP requests for bond0's address from thousands of sender IPs, sent from
/// netns `peer` over bond1; RPS spreads their receive over both CPUs, where
/// `arp_process` adds neighbour entries in softirq.
#[expect(
    clippy::cast_possible_truncation,
    reason = "libc ABI: struct sizes and AF_* constants fit socklen_t and sa_family_t"
)]
fn arp_flood(go: &AtomicBool, run_for: Duration, c: &Counters) {
    if let Err(e) = enter_peer_netns() {
        eprintln!("vm-scenario: arp flood: {e}");
        return;
    }
    let name = CString::new("bond1").unwrap();
    // SAFETY: if_nametoindex with a valid C string; socket(2).
    let (ifindex, fd) = unsafe {
        (
            libc::if_nametoindex(name.as_ptr()),
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
        )
    };
    if ifindex == 0 || fd < 0 {
        eprintln!(
            "vm-scenario: arp flood: no bond1 or no packet socket: {}",
            errno()
        );
        return;
    }
    // SAFETY: we own the descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = 0x0806u16.to_be();
    sll.sll_ifindex = ifindex.cast_signed();
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    wait_go(go);
    let end = Instant::now() + run_for;
    let mut frame = [0u8; 60];
    for i in 0..2_000_000u32 {
        if i % 64 == 0 && Instant::now() >= end {
            break;
        }
        let sender = [10, 9, 200 + (i / 250 % 50) as u8, 1 + (i % 250) as u8];
        let mac = [0x02, 0x00, 0x0a, 0x09, sender[2], sender[3]];
        frame[0..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&mac);
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        frame[22..28].copy_from_slice(&mac);
        frame[28..32].copy_from_slice(&sender);
        frame[32..38].copy_from_slice(&[0; 6]);
        frame[38..42].copy_from_slice(&BOND0_IP);
        // SAFETY: send our frame to a valid sockaddr_ll.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r > 0 {
            c.arp_frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Connect and close as fast as possible: the peer's accept path clones the
/// listener (`sk_clone_lock`) in softirq. Linger 0 avoids `TIME_WAIT` build-up.
fn connect_storm(go: &AtomicBool, run_for: Duration, c: &Counters) {
    wait_go(go);
    let end = Instant::now() + run_for;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for _ in 0..200_000 {
        if Instant::now() >= end {
            break;
        }
        match tcp_connect(BOND1_IP, STORM_PORT, Duration::from_secs(1)) {
            Ok(fd) => {
                let _ = setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &linger);
                c.storm_connects.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.storm_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Groups of `SO_REUSEPORT` listeners: each group's socket array doubles as it
/// grows (`__reuseport_alloc`, `GFP_ATOMIC` under a spinlock, order 1+).
fn reuseport_groups(go: &AtomicBool, run_for: Duration, c: &Counters) {
    wait_go(go);
    let end = Instant::now() + run_for;
    for _round in 0..100 {
        if Instant::now() >= end {
            break;
        }
        let mut held: Vec<OwnedFd> = Vec::new();
        for g in 0..4u16 {
            for _ in 0..1100 {
                match listener(REUSEPORT_BASE + g, true, 8) {
                    Ok(fd) => {
                        held.push(fd);
                        c.reuse_listeners.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        c.reuse_errors.fetch_add(1, Ordering::Relaxed);
                        if e.raw_os_error() == Some(libc::ENOMEM) {
                            c.reuse_enomem.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if Instant::now() >= end {
                    break;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- under pressure

/// `vm-scenario pressure PAGEFAIL_BIN`: `pagefail record` through repeated
/// OOM kills and a full output directory.
///
/// The guest's `/init` mounted cgroup2 at `/sys/fs/cgroup` (a v2-only guest)
/// and a 1 MiB tmpfs at `/out`. In order, every process made before memory
/// is short:
/// 1. `pagefail record --output /out --interval 2s --all` (its own
///    `oom_score_adj`, untouched here) until it says it attached;
/// 2. the failure generator `memgen` in the cgroup `/pfgen` of its own: each
///    round it sets `memory.max` to its usage and grows its fd
///    table (order-6 accounted allocation, whose charge fails; the kernel
///    falls back to vmalloc), then unshares its fd table to start again;
/// 3. a filler file takes every free byte of `/out` (ENOSPC for pagefail);
/// 4. [`HOG_ROUNDS`] memory hogs, one after the other, each touching memory
///    until the OOM killer kills it (each hog starts after the previous died
///    and its memory came back, so no fork happens while memory is short);
/// 5. the generator stops, the filler is removed (space returns), two
///    intervals pass, pagefail gets SIGTERM.
///
/// Prints the kernel's OOM victims, pagefail's stderr and the figures.
pub mod pressure {
    use super::{Res, oom_victims, section, vmstat, write_file};
    use std::{
        fs,
        io::{BufRead, BufReader, Read, Write},
        path::Path,
        process::{Command, Stdio},
        sync::{
            Arc, Mutex,
            atomic::{AtomicBool, Ordering},
        },
        thread,
        time::{Duration, Instant},
    };

    const OUT: &str = "/out";
    const CGROUP: &str = "/sys/fs/cgroup/pfgen";
    const GO: &str = "/tmp/pressure-go";
    const STOP: &str = "/tmp/pressure-stop";
    pub const HOG_ROUNDS: u32 = 3;
    /// One hog's limit: longer means the OOM killer did not come.
    const HOG_LIMIT: Duration = Duration::from_secs(20);
    const INTERVAL_SECS: u64 = 2;

    pub fn run(pagefail: &str) -> Res<()> {
        let t0 = Instant::now();
        let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        // The orchestrator stays alive; the hogs are the OOM killer's choice.
        write_file("/proc/self/oom_score_adj", "-500")?;
        fs::create_dir_all(CGROUP).map_err(|e| format!("{CGROUP}: {e}"))?;
        write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory")?;
        let oom_before = vmstat("oom_kill");

        let mut pf = Command::new(pagefail)
            .args(["record", "--output", OUT, "--interval", "2s", "--all"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {pagefail}: {e}"))?;
        let pf_pid = pf.id();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let attached = Arc::new(AtomicBool::new(false));
        let reader = {
            let stderr = pf.stderr.take().ok_or("no pagefail stderr")?;
            let (lines, attached) = (Arc::clone(&lines), Arc::clone(&attached));
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[pagefail] {line}");
                    if line.contains("attached to mm_page_alloc") {
                        attached.store(true, Ordering::SeqCst);
                    }
                    lines.lock().unwrap().push(line);
                }
                attached.store(true, Ordering::SeqCst);
            })
        };
        let start = Instant::now();
        while !attached.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(90) {
            thread::sleep(Duration::from_millis(50));
        }
        if !attached.load(Ordering::SeqCst) || pf.try_wait().ok().flatten().is_some() {
            let _ = pf.kill();
            let _ = reader.join();
            section("pagefail-stderr", &lines.lock().unwrap().join("\n"));
            return Err("pagefail record did not attach".into());
        }
        let adj = fs::read_to_string(format!("/proc/{pf_pid}/oom_score_adj"))
            .unwrap_or_default()
            .trim()
            .to_owned();

        // The generator, made now (memory is not short yet).
        let _ = fs::remove_file(GO);
        let _ = fs::remove_file(STOP);
        let mut gen_child = Command::new(&me)
            .args(["memgen", CGROUP, GO])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting memgen: {e}"))?;
        let gen_pid = gen_child.id();
        // Let one interval be written while there is space, then fill /out.
        thread::sleep(Duration::from_secs(INTERVAL_SECS + 1));
        let filled = fill(OUT)?;
        write_file(GO, "go")?;

        let mut hog_kills = 0u32;
        let mut rounds = Vec::new();
        for round in 0..HOG_ROUNDS {
            let t = Instant::now();
            let mut hog = Command::new(&me)
                .arg("hog")
                .spawn()
                .map_err(|e| format!("starting hog {round}: {e}"))?;
            let status = loop {
                if let Ok(Some(st)) = hog.try_wait() {
                    break Some(st);
                }
                if t.elapsed() > HOG_LIMIT {
                    let _ = hog.kill();
                    let _ = hog.wait();
                    break None;
                }
                thread::sleep(Duration::from_millis(100));
            };
            let killed = status.is_some_and(|st| {
                std::os::unix::process::ExitStatusExt::signal(&st) == Some(libc::SIGKILL)
            });
            hog_kills += u32::from(killed);
            rounds.push(format!(
                "hog {round}: pid {} {} after {:.1} s",
                hog.id(),
                if killed { "OOM-killed" } else { "NOT killed" },
                t.elapsed().as_secs_f64()
            ));
            // Let memory come back before the next fork.
            thread::sleep(Duration::from_millis(500));
        }
        write_file(STOP, "stop")?;
        let gen_out = {
            let mut s = String::new();
            if let Some(mut o) = gen_child.stdout.take() {
                let _ = o.read_to_string(&mut s);
            }
            let _ = gen_child.wait();
            s
        };
        let alive_at_end = pf.try_wait().ok().flatten().is_none();
        // Space returns.
        let _ = fs::remove_file(Path::new(OUT).join("filler"));
        thread::sleep(Duration::from_secs(2 * INTERVAL_SECS + 1));
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(i32::try_from(pf_pid).unwrap_or(0), libc::SIGTERM) };
        let stop_t = Instant::now();
        let status = loop {
            if let Ok(Some(st)) = pf.try_wait() {
                break Some(st);
            }
            if stop_t.elapsed() > Duration::from_secs(30) {
                let _ = pf.kill();
                break None;
            }
            thread::sleep(Duration::from_millis(100));
        };
        let _ = reader.join();
        let stderr = lines.lock().unwrap().join("\n");
        let victims = oom_victims();
        let oom_kills = vmstat("oom_kill").saturating_sub(oom_before);
        let pf_victim = victims.iter().any(|(p, c)| *p == pf_pid || c == "pagefail");

        // The books, from the interval files.
        let books = books(OUT, gen_pid)?;
        section("pagefail-stderr", &stderr);
        section(
            "oom-victims",
            &victims
                .iter()
                .map(|(p, c)| format!("{p} {c}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        section("hog-rounds", &rounds.join("\n"));
        section("memgen", &gen_out);
        section("interval-files", &books.files.join("\n"));
        let note = stderr
            .lines()
            .find(|l| l.contains("intervals written to"))
            .unwrap_or("");
        let after = |key: &str| -> String {
            note.split_once(key)
                .and_then(|(b, _)| {
                    b.rsplit(|c: char| !c.is_ascii_digit())
                        .find(|w| !w.is_empty())
                })
                .unwrap_or("-")
                .to_owned()
        };
        println!(
            "PAGEFAIL-RESULT oom_kills={oom_kills} hog_kills={hog_kills} victims={} pagefail_victim={pf_victim} \
             alive_at_end={alive_at_end} exit={} oom_score_adj={adj} filled_bytes={filled} \
             written={} held_back={} no_space={} no_memory={} other={} not_written={} dropped={} map_retries={} \
             totals_files={} summary_files={} matched={} recorded={} lost={} csv_failures={} \
             gen_pid={gen_pid} gen_failures={} gen_cgroups={} secs={:.0}",
            victims.len(),
            status.map_or_else(
                || "timeout".to_owned(),
                |s| s
                    .code()
                    .map_or_else(|| "signal".to_owned(), |c| c.to_string())
            ),
            after(" intervals written to"),
            after(" held back in memory"),
            after(" no space,"),
            after(" no memory,"),
            after(" other)"),
            after(" not written"),
            after(" dropped"),
            after(" counter reads retried"),
            books.totals_files,
            books.summary_files,
            books.matched,
            books.recorded,
            books.lost,
            books.csv_failures,
            books.gen_failures,
            if books.gen_cgroups.is_empty() {
                "-".to_owned()
            } else {
                books.gen_cgroups.join(",")
            },
            t0.elapsed().as_secs_f64(),
        );
        Ok(())
    }

    /// Write a file of zeros into `dir` until the filesystem is full.
    fn fill(dir: &str) -> Res<u64> {
        let path = Path::new(dir).join("filler");
        let mut f = fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let block = vec![0u8; 4096];
        let mut n = 0u64;
        // Bounded: a 1 MiB tmpfs fills in 256 blocks.
        for _ in 0..(64 * 1024) {
            match f.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        Ok(n)
    }

    #[derive(Default)]
    struct Books {
        files: Vec<String>,
        totals_files: u64,
        summary_files: u64,
        matched: u64,
        recorded: u64,
        lost: u64,
        csv_failures: u64,
        gen_failures: u64,
        gen_cgroups: Vec<String>,
    }

    fn books(dir: &str, gen_pid: u32) -> Res<Books> {
        let mut b = Books::default();
        let mut names: Vec<String> = fs::read_dir(dir)
            .map_err(|e| format!("{dir}: {e}"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in &names {
            let text = fs::read_to_string(Path::new(dir).join(name)).unwrap_or_default();
            if name.ends_with(".totals.csv") {
                b.totals_files += 1;
                for l in text.lines().skip(1) {
                    let f: Vec<&str> = l.split(',').collect();
                    let v = f.last().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                    match f.get(f.len().saturating_sub(3)).copied() {
                        Some("matched") => b.matched += v,
                        Some("recorded") => b.recorded += v,
                        Some("lost") => b.lost += v,
                        _ => {}
                    }
                }
            } else if Path::new(name)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
                && !name.ends_with(".memory.csv")
            {
                b.summary_files += 1;
                let mut r = csv::Reader::from_reader(text.as_bytes());
                let headers = r.headers().map_err(|e| format!("{name}: {e}"))?.clone();
                let col = |h: &str| headers.iter().position(|x| x == h);
                let (Some(pid), Some(cg), Some(fails)) =
                    (col("pid"), col("cgroup"), col("failures"))
                else {
                    return Err(format!("{name}: unexpected header {headers:?}"));
                };
                for rec in r.records().flatten() {
                    let n: u64 = rec[fails].parse().unwrap_or(0);
                    b.csv_failures += n;
                    if rec[pid] == gen_pid.to_string() {
                        b.gen_failures += n;
                        if !b.gen_cgroups.iter().any(|c| c == &rec[cg]) {
                            b.gen_cgroups.push(rec[cg].to_owned());
                        }
                    }
                }
            }
            b.files.push(format!("{name} {}", text.len()));
        }
        Ok(b)
    }

    /// Touch memory until the OOM killer ends this process (or 20 s pass).
    pub fn hog() -> Res<()> {
        write_file("/proc/self/oom_score_adj", "500")?;
        let len: usize = 1 << 30;
        // SAFETY: a fresh private anonymous mapping, written only inside.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("hog mmap: {}", super::errno()));
        }
        let start = Instant::now();
        let base = p.cast::<u8>();
        let mut off = 0;
        while off < len && start.elapsed() < HOG_LIMIT {
            // SAFETY: inside the mapping.
            unsafe { base.add(off).write_volatile(1) };
            off += 4096;
        }
        Ok(())
    }

    /// The failure generator: joins `cgroup`, waits for `go`, then fails one
    /// accounted order-6 allocation per round until the stop file appears.
    pub fn memgen(cgroup: &str, go: &str) -> Res<()> {
        super::raise_fd_limit()?;
        // The fd table's vmalloc fallback is charged to the same cgroup and
        // fails too: its memory cgroup OOM must find no victim (the charge
        // then just fails) rather than kill the generator. It holds little
        // memory, so the global OOM killer loses nothing by skipping it.
        write_file("/proc/self/oom_score_adj", "-1000")?;
        let pid = std::process::id();
        write_file(&format!("{cgroup}/cgroup.procs"), &pid.to_string())?;
        let start = Instant::now();
        while !Path::new(go).exists() && start.elapsed() < Duration::from_mins(1) {
            thread::sleep(Duration::from_millis(50));
        }
        let mut rounds = 0u32;
        let mut failed_dup = 0u32;
        // memory.max is opened once, now: opening a file while the limit
        // leaves no room fails (its `struct file` is charged to the cgroup),
        // so the limit could not be lifted again.
        let max_path = format!("{cgroup}/memory.max");
        let max_file = fs::OpenOptions::new()
            .write(true)
            .open(&max_path)
            .map_err(|e| format!("opening {max_path}: {e}"))?;
        let set_max = |value: &str| -> Res<()> {
            use std::os::unix::fs::FileExt as _;
            max_file
                .write_at(value.as_bytes(), 0)
                .map(drop)
                .map_err(|e| format!("writing {value:?} to {max_path}: {e}"))
        };
        // Bounded in count and time.
        while rounds < 300 && !Path::new(STOP).exists() && start.elapsed() < Duration::from_mins(2)
        {
            // Each round in a new thread with a file table of its own (a
            // small copy of this thread's, made before the limit tightens),
            // so every round has to grow one; this thread's table never grows.
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<bool>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let Ok(worker) = thread::Builder::new().spawn(move || {
                // SAFETY: unshare(2) on this thread's own file table.
                let own = unsafe { libc::unshare(libc::CLONE_FILES) } == 0;
                let _ = ready_tx.send(own);
                if !own || go_rx.recv().is_err() {
                    return false;
                }
                // SAFETY: dup2 on this thread's own table.
                unsafe { libc::dup2(0, 65535) < 0 }
            }) else {
                rounds += 1;
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            let own = ready_rx.recv().unwrap_or(false);
            let usage: u64 = fs::read_to_string(format!("{cgroup}/memory.current"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            // No headroom. The fd table for fd 65535 is an order-7 request
            // (512 KiB): more than the per-CPU precharge can ever hold (one
            // batch, 64 pages), so the charge always goes to the counter and
            // fails; the vmalloc fallback fails too (no OOM victim here).
            if own {
                set_max(&usage.to_string())?;
            }
            let _ = go_tx.send(());
            let failed = worker.join().unwrap_or(false);
            failed_dup += u32::from(failed);
            set_max("max")?;
            rounds += 1;
            thread::sleep(Duration::from_millis(100));
        }
        let cg = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        println!(
            "memgen pid={pid} rounds={rounds} dup2_failed={failed_dup} cgroup={}",
            cg.trim()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cma_free_blocks;

    #[test]
    fn cma_free_blocks_come_from_the_cma_rows_only() {
        let text = "\
Page block order: 9
Pages per block:  512

Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10
Node    0, zone      DMA, type    Unmovable      1      2      0      0      0      0      0      0      0      0      0
Node    0, zone      DMA, type      Movable      7      1      0      0      0      0      0      0      0      0      0
Node    0, zone      DMA, type          CMA      0      0      3      1      0      0      0      0      1      0      0
Node    0, zone   Normal, type          CMA      5      0      1      0      0      0      0      0      0      0      2
Node    0, zone   Normal, type      Isolate      0      0      0      0      0      0      0      0      0      0      0

Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic          CMA      Isolate
Node 0, zone      DMA           10           80            2            0           32            0
";
        assert_eq!(
            parse_cma_free_blocks(text),
            [5, 0, 4, 1, 0, 0, 0, 0, 1, 0, 2]
        );
        assert_eq!(parse_cma_free_blocks(""), [0; 11]);
    }
}
