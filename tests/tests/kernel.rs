//! Kernel tier: the real program on the real kernel. Root, serial.

use std::time::Duration;

use aya::programs::{RawTracePointRunOptions, TestRun};
use pagefail_tests::bpf_available;
use tracer::{
    events::{self, EventStream},
    probe::{AttachStyle, KernelFeatures, ProbeConfig, Tracer, support::attach_plan},
};
use tracer_common::{EVENT_STACK_ERROR, FailureEvent};

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    u32::try_from(unsafe { libc::gettid() }).expect("tid")
}

fn allocate_pages(pages: usize) {
    pagefail_tests::touch_fresh_pages(pages).expect("mmap");
}

fn drain(tracer: &mut Tracer) -> Vec<FailureEvent> {
    let ring = tracer.take_ring().expect("ring buffer");
    let rt = tokio_like_runtime();
    let _guard = rt.enter();
    let mut stream = EventStream::new(ring).expect("register ring");
    let mut out = Vec::new();
    stream.drain(&mut |ev| out.push(*ev));
    assert_eq!(stream.malformed, 0);
    out
}

fn tokio_like_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime")
}

#[test]
fn every_supported_attach_style_loads_attaches_and_counts() {
    if !bpf_available("every_supported_attach_style_loads_attaches_and_counts") {
        return;
    }
    let features = KernelFeatures::detect();
    let plan = attach_plan(&features, None);
    assert!(
        plan.contains(&AttachStyle::Raw),
        "raw tracepoint must be planned on {}",
        features.release
    );
    // (lean, four programs): the marked pair (default), the four-program
    // chain, the main program alone.
    let chains = [(false, false), (false, true), (true, false)];
    for (style, (lean, four_programs)) in plan
        .into_iter()
        .flat_map(|s| chains.into_iter().map(move |c| (s, c)))
    {
        let cfg = ProbeConfig {
            force_style: Some(style),
            atomic_only: false,
            warn_alloc: false,
            lean,
            four_programs,
            ..ProbeConfig::default()
        };
        let mut tracer = Tracer::attach(&cfg).unwrap_or_else(|e| panic!("{style}: {e}"));
        assert_eq!(tracer.style, style);
        // Pair: main and helper; four: enter, main, nested, exit on the
        // tracepoints that skip nested programs; lean: main alone. Classic:
        // one program either way.
        let programs = tracer.program_infos().len();
        let expected = match (style, lean, four_programs) {
            (AttachStyle::Classic, _, _) | (_, true, _) => 1,
            (_, _, true) => 4,
            _ => 2,
        };
        assert_eq!(
            programs, expected,
            "{style} lean={lean} four={four_programs}: programs attached"
        );
        let unseen = tracer.counters().expect("counters").unseen;
        assert_eq!(
            unseen.is_some(),
            style != AttachStyle::Classic,
            "{style}: the kernel's skip count is read where it counts them"
        );
        let before = tracer.counters().expect("counters");
        allocate_pages(2048);
        std::thread::sleep(Duration::from_millis(50));
        let after = tracer.counters().expect("counters");
        let d = after.since(&before);
        let allocs: u64 = d.allocs.iter().sum();
        assert!(
            allocs >= 1000,
            "{style}: only {allocs} allocations counted for 2048 touched pages"
        );
        tracer.detach();
        let frozen = tracer.counters().expect("counters");
        allocate_pages(1024);
        let later = tracer.counters().expect("counters");
        assert_eq!(frozen, later, "{style}: counters move after detach");
    }
}

#[test]
fn warn_alloc_probe_state_matches_kernel_support() {
    if !bpf_available("warn_alloc_probe_state_matches_kernel_support") {
        return;
    }
    let tracer = Tracer::attach(&ProbeConfig::default()).expect("attach");
    let kprobes = KernelFeatures::detect().kprobes;
    match &tracer.warn_alloc {
        tracer::probe::WarnAllocProbe::Attached => assert!(kprobes),
        tracer::probe::WarnAllocProbe::Unavailable(why) => {
            assert!(!kprobes || !why.is_empty());
            if !kprobes {
                assert!(why.contains("no kprobes"), "{why}");
            }
        }
        tracer::probe::WarnAllocProbe::Disabled => panic!("not disabled"),
    }
}

/// `BPF_PROG_TEST_RUN` drives the raw tracepoint program with synthetic
/// failures; exactly those records must come out, with their fields, and the
/// filters must hold.
#[test]
fn synthetic_failures_through_test_run_arrive_exactly() {
    if !bpf_available("synthetic_failures_through_test_run_arrive_exactly") {
        return;
    }
    let tid = gettid();
    let cfg = ProbeConfig {
        force_style: Some(AttachStyle::Raw),
        atomic_only: true,
        min_order: 1,
        tid: Some(tid),
        ..ProbeConfig::default()
    };
    let mut tracer = Tracer::attach(&cfg).expect("attach raw");
    let before = tracer.counters().expect("counters");
    let run = |tracer: &mut Tracer, page: u64, order: u64, gfp: u64, mt: u64, times: usize| {
        let prog = tracer.raw_program().expect("raw program");
        for _ in 0..times {
            let mut opts = RawTracePointRunOptions::new();
            opts.args[..4].copy_from_slice(&[page, order, gfp, mt]);
            prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        }
    };
    run(&mut tracer, 0, 4, 0x820, 0, 5); // GFP_ATOMIC (6.3+ bits)
    run(&mut tracer, 0, 4, 0xa20, 1, 3); // GFP_ATOMIC (5.1-6.2 bits): __GFP_HIGH set
    run(&mut tracer, 0, 4, 0xcc0, 0, 4); // GFP_KERNEL: not atomic, filtered out
    run(&mut tracer, 0, 0, 0x820, 0, 2); // order 0 < min order: filtered out
    run(&mut tracer, 0xffff_ea00_0000_0000, 2, 0x820, 0, 7); // success
    tracer.detach();
    let d = tracer.counters().expect("counters").since(&before);
    let records = drain(&mut tracer);

    assert_eq!(records.len(), 8, "5 + 3 atomic order-4 failures");
    assert_eq!(d.matched, 8);
    assert_eq!(d.lost, 0);
    assert!(
        d.fails[4] >= 12,
        "every failure counted before filters: {:?}",
        d.fails
    );
    assert!(d.fails[0] >= 2);
    assert!(d.allocs[2] >= 7, "success path counted: {:?}", d.allocs);
    let gfps: Vec<u64> = records.iter().map(|r| r.gfp).collect();
    assert_eq!(gfps.iter().filter(|g| **g == 0x820).count(), 5);
    assert_eq!(gfps.iter().filter(|g| **g == 0xa20).count(), 3);
    let me = std::process::id();
    for r in &records {
        assert_eq!(r.order, 4);
        assert_eq!(r.pid, tid);
        assert_eq!(r.tgid, me);
        assert_eq!(r.migratetype, i32::from(r.gfp == 0xa20));
        assert_eq!(r.flags & EVENT_STACK_ERROR, 0);
        assert!(r.ts_boot_ns > 0);
        assert!(!events::comm(r).is_empty());
    }
    // Timestamps are in order and recent.
    let now = tracer::events::BootClock::boot_ns_now();
    assert!(
        records
            .windows(2)
            .all(|w| w[0].ts_boot_ns <= w[1].ts_boot_ns)
    );
    assert!(now - records[0].ts_boot_ns < 60_000_000_000);
}

/// A ring buffer too small for a burst: every record is delivered or
/// counted lost, to the event.
#[test]
fn tiny_ring_buffer_accounts_for_every_lost_record() {
    if !bpf_available("tiny_ring_buffer_accounts_for_every_lost_record") {
        return;
    }
    let cfg = ProbeConfig {
        force_style: Some(AttachStyle::Raw),
        tid: Some(gettid()),
        ring_bytes: Some(4096),
        ..ProbeConfig::default()
    };
    let mut tracer = Tracer::attach(&cfg).expect("attach");
    let before = tracer.counters().expect("counters");
    {
        let prog = tracer.raw_program().expect("raw program");
        for _ in 0..100 {
            let mut opts = RawTracePointRunOptions::new();
            opts.args[..4].copy_from_slice(&[0, 3, 0x820, 0]);
            prog.test_run(opts).expect("test run");
        }
    }
    tracer.detach();
    let d = tracer.counters().expect("counters").since(&before);
    let delivered = drain(&mut tracer).len() as u64;
    assert_eq!(d.matched, 100);
    assert!(
        d.lost > 0,
        "a 4 KiB ring cannot hold 100 records of {} bytes",
        FailureEvent::SIZE
    );
    assert_eq!(
        delivered + d.lost,
        100,
        "delivered {delivered} + lost {}",
        d.lost
    );
}
