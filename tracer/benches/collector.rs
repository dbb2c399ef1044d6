//! Throughput of the collector's per-record work: decode a ring-buffer
//! record, aggregate it (stack lookup, row key, counts), symbolize and
//! classify each new stack once, and write the CSV summary.
//!
//! Records are synthetic but shaped like real ones: stacks of 12 to 40
//! frames at addresses of real kernel text symbols from `/proc/kallsyms`
//! (a small built-in table when it is unreadable or hidden), a few hundred
//! distinct stacks, a few dozen processes.
//!
//! Run: `cargo bench -p tracer --bench collector` (or `cargo xtask bench
//! collector`). A benchmark, not a test: the goal is >= 2M records/s on one core.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tracer::{
    aggregate::{Aggregator, Window},
    classify::Classifier,
    events, export,
    gfp::GfpTable,
    symbolize::Kallsyms,
};
use tracer_common::{FailureEvent, MAX_STACK_DEPTH, TASK_COMM_LEN};

const RECORDS: usize = 100_000;
const STACKS: usize = 300;
const COMMS: [&str; 8] = [
    "swapper/0",
    "swapper/1",
    "ksoftirqd/0",
    "nginx",
    "java",
    "kworker/u8:2",
    "postgres",
    "envoy",
];

const FALLBACK_KSYMS: &str = "\
ffffffff81100000 T __alloc_pages_noprof
ffffffff81100400 T alloc_pages_mpol_noprof
ffffffff81200000 T __netdev_alloc_skb
ffffffff81200400 T tcp_v4_rcv
ffffffff81200800 T ip_local_deliver_finish
ffffffff81200c00 T __netif_receive_skb_core
ffffffff81201000 T net_rx_action
ffffffff81201400 T handle_softirqs
ffffffff81201800 T irq_exit_rcu
ffffffff81300000 T do_syscall_64
ffffffffc0a00000 t xennet_poll\t[xen_netfront]
ffffffffc0b00000 t bond_start_xmit\t[bonding]
";

/// Addresses of text symbols, from `/proc/kallsyms` or the built-in table.
fn kallsyms() -> (Kallsyms, Vec<u64>) {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let mut addrs: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let mut p = l.split_ascii_whitespace();
            let a = u64::from_str_radix(p.next()?, 16).ok()?;
            matches!(p.next()?, "t" | "T").then_some(a)
        })
        .filter(|a| *a != 0)
        .collect();
    if addrs.len() < 1000 {
        addrs = FALLBACK_KSYMS
            .lines()
            .filter_map(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
            .collect();
        return (Kallsyms::parse(FALLBACK_KSYMS), addrs);
    }
    (Kallsyms::parse(&text), addrs)
}

/// A deterministic generator (xorshift), so every run sees the same records.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the remainder is below `n`, a usize"
    )]
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `RECORDS` records as the ring buffer holds them, back to back.
#[expect(
    clippy::cast_possible_truncation,
    reason = "small random values (pids, orders, CPUs) and stack lengths up to 64"
)]
fn records(addrs: &[u64]) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let stacks: Vec<Vec<u64>> = (0..STACKS)
        .map(|_| {
            let depth = 12 + rng.below(29);
            (0..depth)
                .map(|_| addrs[rng.below(addrs.len())] + 0x10 + (rng.next() % 0x80))
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(RECORDS * FailureEvent::SIZE);
    for i in 0..RECORDS {
        let comm = COMMS[rng.below(COMMS.len())];
        // A few hot stacks carry most records, as in a real incident.
        let s = if rng.below(4) == 0 {
            rng.below(STACKS)
        } else {
            rng.below(8)
        };
        let stack = &stacks[s];
        let mut ev = FailureEvent {
            ts_boot_ns: 1_000_000_000 + i as u64 * 5_000,
            cgroup_id: 1,
            gfp: if rng.below(2) == 0 { 0x820 } else { 0x2820 },
            pid: 100 + rng.below(40) as u32,
            tgid: 100 + rng.below(40) as u32,
            order: rng.below(4) as u32,
            migratetype: 0,
            cpu: rng.below(2) as u32,
            flags: 0,
            stack_len: stack.len() as u32,
            _pad: 0,
            comm: [0; TASK_COMM_LEN],
            stack: [0; MAX_STACK_DEPTH],
        };
        ev.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        ev.stack[..stack.len()].copy_from_slice(stack);
        // SAFETY: viewing a plain-old-data record as its bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), FailureEvent::SIZE) };
        out.extend_from_slice(bytes);
    }
    out
}

fn gfp_table() -> GfpTable {
    GfpTable::from_format(include_str!(
        "../../tests/fixtures/format/mm_page_alloc-6.18.txt"
    ))
    .expect("format fixture")
}

/// Feed every record as the session does: viewed in place (copied only if
/// misaligned), then aggregated.
fn feed(agg: &mut Aggregator, data: &[u8]) {
    for rec in data.chunks_exact(FailureEvent::SIZE) {
        if let Some(ev) = events::view(rec) {
            black_box(agg.add(ev));
        } else if let Some(ev) = events::decode(rec) {
            black_box(agg.add(&ev));
        }
    }
}

fn bench(c: &mut Criterion) {
    let (ksyms, addrs) = kallsyms();
    let data = records(&addrs);
    let gfp = gfp_table();
    let classifier = Classifier::builtin();
    let mut g = c.benchmark_group("collector");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(10);

    // Steady state: every stack already symbolized, every row present.
    let mut warm = Aggregator::new(gfp.clone(), ksyms.clone(), classifier.clone(), 10_000);
    feed(&mut warm, &data);
    g.bench_function("decode+aggregate (warm)", |b| {
        b.iter(|| feed(&mut warm, &data));
    });

    // A fresh window: each distinct stack symbolized and classified once,
    // then the CSV summary written.
    g.bench_function("decode+aggregate+symbolize+csv (cold window)", |b| {
        b.iter_batched(
            || Aggregator::new(gfp.clone(), ksyms.clone(), classifier.clone(), 10_000),
            |mut agg| {
                feed(&mut agg, &data);
                let rows = agg.summary_rows(&Window::starting_now());
                let mut out = Vec::with_capacity(1 << 20);
                export::write_csv(&mut out, &rows).expect("csv");
                // Returned, so dropping the aggregator (and its copy of the
                // symbol table) is not timed.
                (agg, out.len())
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
