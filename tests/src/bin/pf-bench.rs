//! Load generators and in-process measurements for `cargo xtask bench`.
//!
//! ```text
//! pf-bench storm [MIB] [PASSES]          page-fault storm; prints elapsed_ns=N cpu_ns=M
//! pf-bench progtime [ROUNDS]             BPF statistics of pagefail's programs (JSON)
//! pf-bench empty-hold [SECONDS]          attach an empty raw_tp program to mm_page_alloc,
//!                                        print `attached`, hold it (at most SECONDS, 300)
//! pf-bench storm-collect RATE SECONDS THREADS
//!                                        synthetic failures through BPF_PROG_TEST_RUN at
//!                                        RATE/s while the real collector runs (JSON)
//! pf-bench drive PID RATE SECONDS        synthetic failures at RATE/s through the main
//!                                        raw_tp program of the pagefail process PID
//!                                        (BPF_PROG_TEST_RUN); prints sent=N pid=P
//! pf-bench tcp-sink PORT                 accept one TCP connection, read it to the end;
//!                                        prints received=N (gives up after 60 s)
//! pf-bench tcp-source ADDR PORT MIB      send MIB MiB over one TCP connection; prints
//!                                        elapsed_ns=N sent=B
//! ```
//!
//! Every loop here is bounded in count and time. Root (`CAP_BPF`, `CAP_PERFMON`).

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramInfo, RawTracePoint, RawTracePointRunOptions, TestRun},
};
use serde_json::{Value, json};
use tracer::{
    aggregate::Aggregator,
    classify::Classifier,
    events::EventStream,
    probe::{AttachStyle, EBPF_OBJECT, ProbeConfig, Tracer},
    symbolize::Kallsyms,
};
use tracer_common::{MAP_EVENTS, PAIR_RAW_TP, PROG_RAW_TP};

const PAGE: usize = 4096;

/// Touch `mib` MiB of fresh anonymous memory `passes` times (a new mapping
/// each pass, so every touch is a page allocation), and return the time taken
/// and this thread's CPU time (user + system: the page faults, and any
/// tracer program that runs in them), which other load on the machine does
/// not inflate the way it inflates the wall time.
fn storm(mib: usize, passes: usize) -> (Duration, Duration) {
    let len = mib << 20;
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    for _ in 0..passes {
        pagefail_tests::touch_fresh_pages(len / PAGE)
            .unwrap_or_else(|e| panic!("mmap {mib} MiB: {e}"));
    }
    let cpu = Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu0));
    (start.elapsed(), cpu)
}

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    u32::try_from(unsafe { libc::gettid() }).expect("tid")
}

fn thread_cpu_ns() -> u64 {
    let t = rustix_time();
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

fn rustix_time() -> libc::timespec {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut t) };
    t
}

/// The main raw tracepoint program alone, without the nesting programs.
fn load_single() -> Ebpf {
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .map_max_entries(MAP_EVENTS, 2 << 20)
        .load(EBPF_OBJECT)
        .expect("load object");
    let p: &mut RawTracePoint = ebpf
        .program_mut(PROG_RAW_TP)
        .expect("main program")
        .try_into()
        .expect("raw tracepoint");
    p.load().expect("load main program");
    p.attach("mm_page_alloc").expect("attach main program");
    ebpf
}

// ---- an empty raw tracepoint program: the per-run cost of BPF statistics ----

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const EMPTY_NAME: &[u8] = b"pfbench_empty";

/// `r0 = 0; exit`, attached to `mm_page_alloc`. Returns (prog fd, link fd).
fn attach_empty() -> (libc::c_int, libc::c_int) {
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut attr = [0u8; 144];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_RAW_TRACEPOINT.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..48 + EMPTY_NAME.len()].copy_from_slice(EMPTY_NAME);
    // SAFETY: bpf(2) with a zeroed, correctly sized attribute block.
    let prog = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    assert!(
        prog >= 0,
        "load empty program: {}",
        std::io::Error::last_os_error()
    );
    let name = b"mm_page_alloc\0";
    let mut attr = [0u8; 144];
    attr[0..8].copy_from_slice(&(name.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&u32::try_from(prog).expect("fd").to_ne_bytes());
    // SAFETY: as above.
    let link = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            attr.as_ptr(),
            attr.len(),
        )
    };
    assert!(
        link >= 0,
        "attach empty program: {}",
        std::io::Error::last_os_error()
    );
    (
        libc::c_int::try_from(prog).expect("fd"),
        libc::c_int::try_from(link).expect("fd"),
    )
}

fn empty_info() -> Option<ProgramInfo> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|i| i.name() == EMPTY_NAME)
        .max_by_key(ProgramInfo::id)
}

fn close(fd: libc::c_int) {
    // SAFETY: closing a descriptor this process opened.
    unsafe { libc::close(fd) };
}

#[derive(Clone, Copy, Default)]
struct Stat {
    ns: u64,
    cnt: u64,
}

impl Stat {
    fn of(i: &ProgramInfo) -> Self {
        Self {
            ns: u64::try_from(i.run_time().as_nanos()).unwrap_or(u64::MAX),
            cnt: i.run_count(),
        }
    }
    fn since(self, b: Self) -> Self {
        Self {
            ns: self.ns - b.ns,
            cnt: self.cnt - b.cnt,
        }
    }
    fn per_run(self) -> f64 {
        if self.cnt == 0 {
            0.0
        } else {
            self.ns as f64 / self.cnt as f64
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Run the empty program once through `BPF_PROG_TEST_RUN`.
fn test_run_empty(prog: libc::c_int, args: &[u64; 4]) {
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&u32::try_from(prog).expect("fd").to_ne_bytes());
    attr[40..44].copy_from_slice(&32u32.to_ne_bytes());
    attr[48..56].copy_from_slice(&(args.as_ptr() as u64).to_ne_bytes());
    // SAFETY: bpf(2) with a zeroed attribute block; ctx_in points at 32 bytes.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, attr.as_ptr(), attr.len()) };
    assert!(
        r == 0,
        "test run empty: {}",
        std::io::Error::last_os_error()
    );
}

const SUCCESS: [u64; 4] = [0xffff_ea00_0000_0000, 0, 0xcc0, 0];
const FAILURE: [u64; 4] = [0, 3, 0x820, 0];

/// BPF statistics of pagefail's programs:
/// - under a page-fault storm, each configuration attached alone in turn
///   (the empty program, the main program, every program of the raw style),
///   so each pays the same cold-cache and statistics costs;
/// - hot, through `BPF_PROG_TEST_RUN`, the main program's success and failure
///   paths against the empty program run the same way.
///
/// Net = gross minus the empty program's time, once per program run.
fn progtime(rounds: usize) -> Value {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let empty = || Stat::of(&empty_info().expect("empty program info"));
    let mut e_storm = Vec::new();
    let mut single_storm = Vec::new();
    let mut full_storm = Vec::new();
    let mut programs = 0;
    let mut single_net = Vec::new();
    let mut per_prog: Vec<(String, Vec<f64>)> = Vec::new();
    let full_cfg = ProbeConfig {
        force_style: Some(AttachStyle::Raw),
        atomic_only: false,
        warn_alloc: false,
        ..ProbeConfig::default()
    };
    for _ in 0..rounds {
        let (eprog, elink) = attach_empty();
        let e0 = empty();
        storm(128, 2);
        let e = empty().since(e0).per_run();
        close(elink);
        close(eprog);
        e_storm.push(e);

        let ebpf = load_single();
        let info = || {
            let p: &RawTracePoint = ebpf
                .program(PROG_RAW_TP)
                .expect("main")
                .try_into()
                .expect("raw");
            Stat::of(&p.info().expect("info"))
        };
        let b = info();
        storm(128, 2);
        let m = info().since(b).per_run();
        drop(ebpf);
        single_storm.push(m);
        single_net.push(m - e);

        let tracer = Tracer::attach(&full_cfg).expect("attach");
        let b: Vec<Stat> = tracer
            .program_infos()
            .iter()
            .map(|(_, i)| Stat::of(i))
            .collect();
        storm(128, 2);
        let a = tracer.program_infos();
        let mut sum = 0.0;
        for ((name, i), b) in a.iter().zip(&b) {
            let d = Stat::of(i).since(*b).per_run();
            sum += d;
            match per_prog.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(d),
                None => per_prog.push(((*name).to_owned(), vec![d])),
            }
        }
        drop(tracer);
        full_storm.push(sum);
        programs = a.len();
    }

    // Hot: BPF_PROG_TEST_RUN, the main program against the empty one.
    let cfg = ProbeConfig {
        force_style: Some(AttachStyle::Raw),
        atomic_only: false,
        tid: Some(gettid()),
        warn_alloc: false,
        ..ProbeConfig::default()
    };
    let mut tracer = Tracer::attach(&cfg).expect("attach");
    let mut ring = tracer.take_ring().expect("ring");
    let (eprog, elink) = attach_empty();
    let main_stat = |t: &Tracer| {
        t.program_infos()
            .iter()
            .find(|(n, _)| *n == PROG_RAW_TP || *n == PAIR_RAW_TP[0])
            .map(|(_, i)| Stat::of(i))
            .expect("main program info")
    };
    let mut runs = |tracer: &mut Tracer, args: &[u64; 4], n: usize| -> (f64, f64) {
        let e0 = empty();
        for _ in 0..n {
            test_run_empty(eprog, args);
        }
        let e = empty().since(e0).per_run();
        let b = main_stat(tracer);
        {
            let prog = tracer.raw_program().expect("raw program");
            for _ in 0..n {
                let mut opts = RawTracePointRunOptions::new();
                opts.args[..4].copy_from_slice(args);
                prog.test_run(opts).expect("test run");
            }
        }
        let m = main_stat(tracer).since(b).per_run();
        while ring.next().is_some() {}
        (m, e)
    };
    let (mut ok_gross, mut ok_empty, mut fail_gross, mut fail_empty) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (m, e) = runs(&mut tracer, &SUCCESS, 20_000);
        ok_gross.push(m);
        ok_empty.push(e);
        let (m, e) = runs(&mut tracer, &FAILURE, 1000);
        fail_gross.push(m);
        fail_empty.push(e);
    }
    drop(ring);
    drop(tracer);
    close(elink);
    close(eprog);

    let ok_g = median(&mut ok_gross);
    let ok_e = median(&mut ok_empty);
    // Under the storm the first program of the chain pays the cold-cache
    // misses, as the empty program alone did; the others run warm, as the
    // empty program does through BPF_PROG_TEST_RUN.
    let e_cold = median(&mut e_storm);
    let full_gross = median(&mut full_storm);
    let full_net = full_gross - e_cold - (programs.saturating_sub(1)) as f64 * ok_e;
    let fail_g = median(&mut fail_gross);
    let fail_e = median(&mut fail_empty);
    json!({
        "rounds": rounds,
        "programs": programs,
        "storm_empty_program_ns": e_cold,
        "storm_success_full_gross_ns": full_gross,
        "storm_success_full_net_ns": full_net,
        "storm_success_single_gross_ns": median(&mut single_storm),
        "storm_success_single_net_ns": median(&mut single_net),
        "storm_per_program_gross_ns": per_prog
            .into_iter()
            .map(|(n, mut v)| (n, json!(median(&mut v))))
            .collect::<serde_json::Map<_, _>>(),
        "hot_empty_program_ns": ok_e,
        "hot_success_main_gross_ns": ok_g,
        "hot_success_main_net_ns": ok_g - ok_e,
        "hot_failure_main_gross_ns": fail_g,
        "hot_failure_main_net_ns": fail_g - fail_e,
    })
}

/// Synthetic failures at `rate` per second from `threads` threads for
/// `seconds`, while this thread runs the collector (ring buffer, decode,
/// aggregate, symbolize) as `pagefail watch` does.
fn storm_collect(rate: u64, seconds: f64, threads: u64) -> Value {
    let cfg = ProbeConfig {
        force_style: Some(AttachStyle::Raw),
        atomic_only: false,
        tgid: Some(std::process::id()),
        warn_alloc: false,
        batch_wakeups: true,
        ..ProbeConfig::default()
    };
    let mut tracer = Tracer::attach(&cfg).expect("attach");
    let before = tracer.counters().expect("counters");
    let ring = tracer.take_ring().expect("ring");
    let ksyms = Kallsyms::load().unwrap_or_default();
    let mut agg = Aggregator::new(tracer.gfp.clone(), ksyms, Classifier::builtin(), 10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut stream = EventStream::new(ring).expect("register ring");
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let duration = Duration::from_secs_f64(seconds);
    let per_thread = rate as f64 / threads as f64;
    let mut cpu_ns = 0;
    let wall;
    {
        let prog: &RawTracePoint = tracer.raw_program().expect("raw program");
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut n = 0u64;
                    let t0 = Instant::now();
                    while t0.elapsed() < duration {
                        #[expect(
                            clippy::cast_possible_truncation,
                            clippy::cast_sign_loss,
                            reason = "elapsed seconds times a rate: non-negative, far below 2^64"
                        )]
                        let due = (t0.elapsed().as_secs_f64() * per_thread) as u64;
                        if n >= due {
                            std::thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                        // At most 1000 runs before looking at the clock again.
                        for _ in 0..(due - n).min(1000) {
                            let mut opts = RawTracePointRunOptions::new();
                            opts.args[..4].copy_from_slice(&[0, 3, 0x820, 0]);
                            prog.test_run(opts).expect("test run");
                            n += 1;
                        }
                    }
                    sent.fetch_add(n, Ordering::Relaxed);
                });
            }
            s.spawn(|| {
                std::thread::sleep(duration);
                // The producers stop by themselves; give them a moment to finish.
                std::thread::sleep(Duration::from_millis(50));
                done.store(true, Ordering::Relaxed);
            });
            let c0 = thread_cpu_ns();
            rt.block_on(async {
                let limit = Instant::now() + duration + Duration::from_secs(5);
                while !done.load(Ordering::Relaxed) && Instant::now() < limit {
                    // As the session: drain what waits below the wake-up
                    // threshold, then wait for a wake-up or the timer.
                    stream.drain(&mut |ev| {
                        agg.add(ev);
                    });
                    let r = tokio::time::timeout(
                        Duration::from_millis(100),
                        stream.next_with(&mut |ev| {
                            agg.add(ev);
                        }),
                    )
                    .await;
                    if let Ok(r) = r {
                        r.expect("ring buffer");
                    }
                }
            });
            cpu_ns = thread_cpu_ns() - c0;
        });
        wall = start.elapsed();
    }
    tracer.detach();
    let c0 = thread_cpu_ns();
    stream.drain(&mut |ev| {
        agg.add(ev);
    });
    cpu_ns += thread_cpu_ns() - c0;
    let d = tracer.counters().expect("counters").since(&before);
    let sent = sent.load(Ordering::Relaxed);
    let delivered = agg.events;
    json!({
        "target_rate": rate,
        "threads": threads,
        "seconds": wall.as_secs_f64(),
        "sent": sent,
        "achieved_rate": sent as f64 / wall.as_secs_f64(),
        "produced": d.matched,
        "delivered": delivered,
        "lost": d.lost,
        "exact": d.matched == delivered + d.lost && d.matched == sent,
        "collector_cpu_ns_per_event": if delivered == 0 { 0.0 } else { cpu_ns as f64 / delivered as f64 },
        "collector_cpu_share": cpu_ns as f64 / wall.as_nanos() as f64,
        "malformed": stream.malformed,
    })
}

/// The parts of start-up, each timed alone: the kernel BTF parse the loader
/// used to do, the kallsyms parse, and `Tracer::attach` as it is now.
fn startup_parts(rounds: usize) -> Value {
    let mut btf = Vec::new();
    let mut ksyms = Vec::new();
    let mut attach = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let _ = aya::Btf::from_sys_fs().expect("kernel BTF");
        btf.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let _ = Kallsyms::load();
        ksyms.push(t.elapsed().as_secs_f64() * 1e3);
        let cfg = ProbeConfig {
            force_style: Some(AttachStyle::Raw),
            ..ProbeConfig::default()
        };
        let tracer = Tracer::attach(&cfg).expect("attach");
        attach.push(tracer.attach_time.as_secs_f64() * 1e3);
    }
    json!({
        "kernel_btf_parse_ms": median(&mut btf),
        "kallsyms_parse_ms": median(&mut ksyms),
        "tracer_attach_ms": median(&mut attach),
    })
}

/// The id of the main raw tracepoint program that process `pid` holds (of
/// the marked pair, the four-program chain or `--lean`).
fn held_main_program(pid: u32) -> Option<ProgramInfo> {
    let held = pagefail_tests::held_program_ids(Some(pid));
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| {
            held.contains(&p.id())
                && matches!(p.name_as_str(), Some(n) if n == PROG_RAW_TP || n == PAIR_RAW_TP[0])
        })
}

/// Synthetic failures through another process's program, at `rate` per
/// second for `seconds`: what a soak of `pagefail record` is fed with. The
/// records carry this process's pid and comm, so they can be told apart.
fn drive(pid: u32, rate: u64, seconds: f64) -> u64 {
    let info = held_main_program(pid).unwrap_or_else(|| {
        eprintln!("pf-bench drive: process {pid} holds no {PROG_RAW_TP} program");
        std::process::exit(1)
    });
    let fd = info.fd().expect("program fd");
    let raw = {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        fd.as_fd().as_raw_fd()
    };
    let duration = Duration::from_secs_f64(seconds);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < duration {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "elapsed seconds times a rate: non-negative, far below 2^64"
        )]
        let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
        if n >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        // At most 1000 runs before looking at the clock again.
        for _ in 0..(due - n).min(1000) {
            test_run_empty(raw, &FAILURE);
            n += 1;
        }
    }
    n
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// The network workload's time limit: a sink without a source, or a
/// transfer that stalls, ends here.
const TCP_LIMIT: Duration = Duration::from_mins(1);

/// Accept one connection on `port` (all addresses) and read it to its end.
fn tcp_sink(port: u16) -> Result<u64, String> {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))
        .map_err(|e| format!("bind port {port}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    // The source connects after this line.
    println!("listening port={port}");
    let start = Instant::now();
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() > TCP_LIMIT {
                    return Err("no connection within 60 s".to_owned());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    conn.set_nonblocking(false)
        .and_then(|()| conn.set_read_timeout(Some(TCP_LIMIT)))
        .map_err(|e| format!("connection: {e}"))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) => return Err(format!("read after {total} bytes: {e}")),
        }
        if start.elapsed() > TCP_LIMIT {
            return Err(format!("still reading after 60 s ({total} bytes)"));
        }
    }
}

/// Send `mib` MiB to `addr:port` over one connection (retrying the
/// connect for up to 5 s while the sink starts); returns the time taken.
fn tcp_source(addr: &str, port: u16, mib: u64) -> Result<Duration, String> {
    use std::io::Write as _;
    let start = Instant::now();
    let mut conn = loop {
        match std::net::TcpStream::connect((addr, port)) {
            Ok(c) => break c,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("connect {addr}:{port}: {e}")),
        }
    };
    conn.set_write_timeout(Some(TCP_LIMIT))
        .map_err(|e| format!("connection: {e}"))?;
    let chunk = vec![0x5au8; 1 << 16];
    let start = Instant::now();
    for _ in 0..mib * 16 {
        conn.write_all(&chunk).map_err(|e| format!("write: {e}"))?;
        if start.elapsed() > TCP_LIMIT {
            return Err("still sending after 60 s".to_owned());
        }
    }
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    Ok(start.elapsed())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("storm") => {
            let (wall, cpu) = storm(arg(&args, 2, 256), arg(&args, 3, 16));
            println!("elapsed_ns={} cpu_ns={}", wall.as_nanos(), cpu.as_nanos());
        }
        Some("startup-parts") => println!("{}", startup_parts(arg(&args, 2, 5))),
        Some("progtime") => println!("{}", progtime(arg(&args, 2, 5))),
        Some("empty-hold") => {
            // The floor of any tracer of this tracepoint: one dispatch of a
            // program that does nothing. Held until killed or SECONDS pass.
            let (prog, link) = attach_empty();
            println!("attached");
            std::thread::sleep(Duration::from_secs(arg(&args, 2, 300u64).min(300)));
            // SAFETY: closing the descriptors this process opened.
            unsafe {
                libc::close(link);
                libc::close(prog);
            }
        }
        Some("drive") => {
            let sent = drive(arg(&args, 2, 0), arg(&args, 3, 10_000), arg(&args, 4, 10.0));
            println!("sent={sent} pid={}", std::process::id());
        }
        Some("storm-collect") => println!(
            "{}",
            storm_collect(
                arg(&args, 2, 100_000),
                arg(&args, 3, 10.0),
                arg(&args, 4, 1)
            )
        ),
        Some("tcp-sink") => match tcp_sink(arg(&args, 2, 5201)) {
            Ok(n) => println!("received={n}"),
            Err(e) => {
                eprintln!("pf-bench tcp-sink: {e}");
                std::process::exit(1);
            }
        },
        Some("tcp-source") => {
            let addr = args.get(2).map_or("127.0.0.1", String::as_str);
            let mib: u64 = arg(&args, 4, 512);
            match tcp_source(addr, arg(&args, 3, 5201), mib) {
                Ok(t) => println!("elapsed_ns={} sent={}", t.as_nanos(), mib << 20),
                Err(e) => {
                    eprintln!("pf-bench tcp-source: {e}");
                    std::process::exit(1);
                }
            }
        }
        _ => {
            eprintln!(
                "usage: pf-bench storm [MIB] [PASSES] | progtime [ROUNDS] \
                 | storm-collect RATE SECONDS THREADS | drive PID RATE SECONDS \
                 | tcp-sink PORT | tcp-source ADDR PORT MIB"
            );
            std::process::exit(2);
        }
    }
}
