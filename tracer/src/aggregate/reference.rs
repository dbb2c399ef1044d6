//! The aggregation written the obvious way, and a property test that the
//! aggregator (interned stacks and attributes, cells, rows summed on read,
//! the cell limit's slow path) gives exactly the same results: every row,
//! key, count, time, cgroup, top stack and CSV byte.
//!
//! The reference symbolizes and classifies every record afresh, keys rows by
//! their full key (raw task name bytes and all), keeps each row's stack
//! counts in a map and does every lookup by linear search.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tracer_common::{
    EVENT_STACK_ERROR, EVENT_STACK_TRUNCATED, EVENT_WARN_ALLOC, FailureEvent, MAX_STACK_DEPTH,
    TASK_COMM_LEN,
};

use super::*;
use crate::export;

/// Text symbols for stacks with several contexts and network paths.
const KSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81100000 T __alloc_pages_noprof
ffffffff81100400 t get_page_from_freelist
ffffffff81200000 T alloc_fdtable
ffffffff81200100 T expand_files
ffffffff81300000 T neigh_hash_alloc
ffffffff81300100 T tcp_connect
ffffffff81300200 T tcp_v4_rcv
ffffffff81300300 T ip_local_deliver_finish
ffffffff81300400 T __netif_receive_skb_core
ffffffff81300500 T net_rx_action
ffffffff81300600 T handle_softirqs
ffffffff81300700 T __napi_alloc_skb
ffffffff81300800 T dev_gro_receive
ffffffff81400000 T do_syscall_64
ffffffff81400100 T common_interrupt
ffffffff81400200 T kthread
ffffffffc0a01230 t bond_start_xmit\t[bonding]
ffffffffc0a02000 t xennet_poll\t[xen_netfront]
";

/// Stacks, innermost first: allocator frames on top, softirq and hardirq
/// ones, module frames, unknown addresses, the same functions at other
/// offsets (another raw stack, the same folded text), one frame, 64 frames.
fn stacks() -> Vec<Vec<u64>> {
    let f = |a: u64| 0xffff_ffff_0000_0000 | a;
    vec![
        vec![
            f(0x8110_0410),
            f(0x8110_0020),
            f(0x8120_0020),
            f(0x8120_0120),
            f(0x8140_0020),
        ],
        vec![
            f(0x8110_0020),
            f(0x8120_0020),
            f(0x8120_0120),
            f(0x8140_0030),
        ],
        vec![f(0x8130_0010), f(0x8130_0110), f(0x8140_0010)],
        vec![
            f(0x8130_0710),
            f(0x8130_0810),
            f(0xc0a0_2010),
            f(0x8130_0510),
            f(0x8130_0610),
            f(0x8140_0110),
        ],
        vec![
            f(0x8130_0210),
            f(0x8130_0310),
            f(0x8130_0410),
            f(0x8130_0510),
            f(0x8130_0610),
        ],
        vec![f(0xc0a0_1240), f(0x8130_0110), f(0x8140_0210)],
        vec![0x10, 0x20, f(0x8140_0010)],
        vec![f(0x8110_0020)],
        (0..MAX_STACK_DEPTH as u64)
            .map(|i| f(0x8120_0010 + (i % 3) * 0x100))
            .collect(),
        Vec::new(),
    ]
}

const COMMS: [&[u8]; 8] = [
    b"nginx",
    b"swapper/0",
    b"swapper/1",
    b"[other]",
    b"0123456789abcdef",
    b"\xff\xfex",
    b"\xff\xfdx",
    b"",
];

/// One record. `len` past the end of `stack` (truncated) or past the slots
/// (a length the kernel never writes) tests the clamping.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per field of the generated record, drawn by proptest"
)]
fn record(
    comm: usize,
    garbage: bool,
    tgid: u32,
    cgroup_id: u64,
    order: u32,
    gfp: u64,
    stack: &[u64],
    long: bool,
    flags: u32,
    ts: u64,
) -> FailureEvent {
    let mut ev = FailureEvent {
        ts_boot_ns: ts,
        cgroup_id,
        gfp,
        pid: tgid + 1,
        tgid,
        order,
        migratetype: 0,
        cpu: 0,
        flags,
        stack_len: if long {
            1000
        } else {
            u32::try_from(stack.len()).unwrap()
        },
        _pad: 0,
        comm: [0; TASK_COMM_LEN],
        stack: [0; MAX_STACK_DEPTH],
    };
    let name = COMMS[comm];
    ev.comm[..name.len()].copy_from_slice(name);
    if garbage && name.len() + 2 < TASK_COMM_LEN {
        // Bytes after the NUL are not part of the name.
        ev.comm[name.len() + 1] = b'z';
    }
    ev.stack[..stack.len()].copy_from_slice(stack);
    if stack.is_empty() {
        ev.flags |= EVENT_STACK_ERROR;
    }
    if stack.len() == MAX_STACK_DEPTH || long {
        ev.flags |= EVENT_STACK_TRUNCATED;
    }
    ev
}

/// A row of the reference.
struct RefRow {
    key: RowKey,
    stats: RowStats,
    cgroup: String,
    cgroup_id: u64,
    stacks: BTreeMap<u32, u64>,
}

/// What tells rows apart: the key with the task name's raw bytes, or the
/// `[other]` row of an (order, gfp).
#[derive(PartialEq, Eq)]
enum Match {
    Key(
        Option<Vec<u8>>,
        Option<u32>,
        Option<u64>,
        Option<Context>,
        Option<String>,
        Option<u32>,
        Option<u64>,
        Option<u32>,
        Cause,
        Outcome,
    ),
    Other(Option<u32>, Option<u64>, Cause, Outcome),
}

struct Reference {
    gfp: GfpTable,
    ksyms: Kallsyms,
    classifier: Classifier,
    cgroups: CgroupResolver,
    by: GroupBy,
    cap: usize,
    stacks: Vec<Vec<u64>>,
    rows: Vec<(Match, RefRow)>,
    events: u64,
    capped: u64,
}

impl Reference {
    fn new(by: GroupBy, cap: usize) -> Self {
        Self {
            gfp: super::tests::table(),
            ksyms: Kallsyms::parse(KSYMS),
            classifier: Classifier::builtin(),
            cgroups: CgroupResolver::with_root(None),
            by,
            cap: cap.max(1),
            stacks: Vec::new(),
            rows: Vec::new(),
            events: 0,
            capped: 0,
        }
    }

    /// Cause and outcome of a record, worked out now (the `warn_alloc`
    /// probe counts as attached, as in [`Aggregator::new`]).
    fn verdict(&self, raw: &[u64], ev: &FailureEvent) -> (Cause, Outcome) {
        let frames = self.ksyms.symbolize_stack(raw);
        let view: Vec<Frame<'_>> = frames
            .iter()
            .map(|f| Frame {
                function: &f.name,
                module: f.module.as_deref(),
            })
            .collect();
        let rules = OutcomeRules::builtin();
        let outcome = rules.outcome(&rules.plan(&view), &self.gfp, ev.gfp, ev.order);
        let account = self.gfp.bit("__GFP_ACCOUNT").unwrap_or(0);
        let cause = verdict::cause(
            Evidence {
                nolock: verdict::is_nolock(&view),
                account: ev.gfp & account != 0 && account != 0,
                warn_probe: true,
                warn_reached: ev.flags & EVENT_WARN_ALLOC != 0,
            },
            || None,
        );
        (cause, outcome)
    }

    /// Context, path and folded text of a stack, worked out now.
    fn describe(&self, raw: &[u64]) -> (Context, String, String) {
        let frames = self.ksyms.symbolize_stack(raw);
        let view: Vec<Frame<'_>> = frames
            .iter()
            .map(|f| Frame {
                function: &f.name,
                module: f.module.as_deref(),
            })
            .collect();
        (
            context_of(&view),
            self.classifier.paths(&view).to_string(),
            symbolize::fold(&frames),
        )
    }

    fn add(&mut self, ev: &FailureEvent) -> (u32, bool) {
        let n = (ev.stack_len as usize).min(MAX_STACK_DEPTH);
        let raw = ev.stack[..n].to_vec();
        let (sid, new) = if let Some(i) = self.stacks.iter().position(|s| *s == raw) {
            (u32::try_from(i).unwrap(), false)
        } else {
            self.stacks.push(raw.clone());
            (u32::try_from(self.stacks.len() - 1).unwrap(), true)
        };
        let (context, path, _) = self.describe(&raw);
        let (cause, outcome) = self.verdict(&raw, ev);
        let by = self.by;
        let name_len = ev
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TASK_COMM_LEN);
        let name = &ev.comm[..name_len];
        let order = by.has(Dim::Order).then_some(ev.order);
        let gfp = by.has(Dim::Gfp).then_some(ev.gfp);
        let key = Match::Key(
            by.has(Dim::Comm).then(|| name.to_vec()),
            by.has(Dim::Pid).then_some(ev.tgid),
            by.has(Dim::Cgroup).then_some(ev.cgroup_id),
            by.has(Dim::Context).then_some(context),
            by.has(Dim::Path).then(|| path.clone()),
            order,
            gfp,
            by.has(Dim::Stack).then_some(sid),
            cause,
            outcome,
        );
        let i = match self.rows.iter().position(|(m, _)| *m == key) {
            Some(i) => i,
            None if self.rows.len() >= self.cap => {
                self.capped += 1;
                let other = Match::Other(order, gfp, cause, outcome);
                if let Some(i) = self.rows.iter().position(|(m, _)| *m == other) {
                    i
                } else {
                    let row = RefRow {
                        key: RowKey {
                            comm: Some(OTHER.to_owned()),
                            tgid: None,
                            cgroup_id: None,
                            context: None,
                            path: None,
                            order,
                            gfp,
                            stack: None,
                            cause,
                            outcome,
                        },
                        stats: RowStats::NONE,
                        cgroup: String::new(),
                        cgroup_id: ev.cgroup_id,
                        stacks: BTreeMap::new(),
                    };
                    self.rows.push((other, row));
                    self.rows.len() - 1
                }
            }
            None => {
                let row = RefRow {
                    key: RowKey {
                        comm: by
                            .has(Dim::Comm)
                            .then(|| String::from_utf8_lossy(name).into_owned()),
                        tgid: by.has(Dim::Pid).then_some(ev.tgid),
                        cgroup_id: by.has(Dim::Cgroup).then_some(ev.cgroup_id),
                        context: by.has(Dim::Context).then_some(context),
                        path: by.has(Dim::Path).then_some(path),
                        order,
                        gfp,
                        stack: by.has(Dim::Stack).then_some(sid),
                        cause,
                        outcome,
                    },
                    stats: RowStats::NONE,
                    cgroup: self.cgroups.resolve(ev.cgroup_id, ev.tgid),
                    cgroup_id: ev.cgroup_id,
                    stacks: BTreeMap::new(),
                };
                self.rows.push((key, row));
                self.rows.len() - 1
            }
        };
        let nowarn = self.gfp.bit("__GFP_NOWARN").unwrap_or(0);
        let warned = ev.flags & EVENT_WARN_ALLOC != 0 && ev.gfp & nowarn == 0;
        let row = &mut self.rows[i].1;
        if row.cgroup_id != ev.cgroup_id {
            row.cgroup.clear();
        }
        row.stats.failures += 1;
        row.stats.interval_failures += 1;
        row.stats.warned += u64::from(warned);
        row.stats.first_ns = row.stats.first_ns.min(ev.ts_boot_ns);
        row.stats.last_ns = row.stats.last_ns.max(ev.ts_boot_ns);
        *row.stacks.entry(sid).or_default() += 1;
        self.events += 1;
        (sid, new)
    }

    fn start_interval(&mut self) {
        for (_, row) in &mut self.rows {
            row.stats.interval_failures = 0;
        }
    }

    fn reset(&mut self) {
        self.rows.clear();
        self.events = 0;
        self.capped = 0;
    }

    /// Rows most failures first, then by key, ties in creation order.
    fn sorted(&self) -> Vec<&RefRow> {
        let mut v: Vec<&RefRow> = self.rows.iter().map(|(_, r)| r).collect();
        v.sort_by(|a, b| {
            b.stats
                .failures
                .cmp(&a.stats.failures)
                .then_with(|| a.key.cmp(&b.key))
        });
        v
    }

    fn summary_rows(&self, window: &Window) -> Vec<SummaryRow> {
        self.sorted()
            .into_iter()
            .map(|r| {
                let top = r
                    .stacks
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                    .map(|(id, _)| self.describe(&self.stacks[*id as usize]).2)
                    .unwrap_or_default();
                SummaryRow {
                    window_start: crate::timestamp::rfc3339(window.start),
                    window_end: crate::timestamp::rfc3339(window.end),
                    host: window.host.clone(),
                    kernel: window.kernel.clone(),
                    comm: r.key.comm.clone().unwrap_or_default(),
                    pid: r.key.tgid.map(|p| p.to_string()).unwrap_or_default(),
                    cgroup: r.cgroup.clone(),
                    context: r.key.context.map(|c| c.to_string()).unwrap_or_default(),
                    path: r.key.path.clone().unwrap_or_default(),
                    order: r.key.order,
                    gfp: r.key.gfp.map(gfp::hex).unwrap_or_default(),
                    gfp_flags: r.key.gfp.map(|g| self.gfp.decode(g)).unwrap_or_default(),
                    atomic: r.key.gfp.map(|g| {
                        let high = self.gfp.bit("__GFP_HIGH").unwrap_or(0);
                        let reclaim = self.gfp.bit("__GFP_DIRECT_RECLAIM").unwrap_or(0);
                        g & high != 0 || g & reclaim == 0
                    }),
                    failures: r.stats.failures,
                    warned: r.stats.warned,
                    first_seen: crate::timestamp::rfc3339(window.clock.to_system(r.stats.first_ns)),
                    last_seen: crate::timestamp::rfc3339(window.clock.to_system(r.stats.last_ns)),
                    top_stack: top,
                    cause: r.key.cause.as_str().to_owned(),
                    outcome: r.key.outcome.as_str().to_owned(),
                }
            })
            .collect()
    }

    /// Folded stacks with their failures, sorted.
    fn stack_counts(&self) -> Vec<(String, u64)> {
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for (_, r) in &self.rows {
            for (id, n) in &r.stacks {
                *counts.entry(*id).or_default() += n;
            }
        }
        let mut v: Vec<_> = counts
            .into_iter()
            .map(|(id, n)| (self.describe(&self.stacks[id as usize]).2, n))
            .collect();
        v.sort();
        v
    }
}

/// Both sides agree on everything that can be read.
fn assert_same(agg: &Aggregator, reference: &Reference, window: &Window) {
    assert_eq!(agg.events, reference.events, "events");
    assert_eq!(agg.capped, reference.capped, "capped");
    assert_eq!(agg.total_failures(), reference.events, "total failures");
    let rows: Vec<(RowKey, RowStats)> = agg
        .rows()
        .into_iter()
        .map(|(k, s)| (k.clone(), s))
        .collect();
    let expected: Vec<(RowKey, RowStats)> = reference
        .sorted()
        .into_iter()
        .map(|r| (r.key.clone(), r.stats.clone()))
        .collect();
    assert_eq!(rows, expected, "rows");
    let summary = agg.summary_rows(window);
    let expected = reference.summary_rows(window);
    assert_eq!(summary, expected, "summary rows");
    let (mut csv, mut expected_csv) = (Vec::new(), Vec::new());
    export::write_csv(&mut csv, &summary).unwrap();
    export::write_csv(&mut expected_csv, &expected).unwrap();
    assert_eq!(csv, expected_csv, "CSV bytes");
    let mut stacks: Vec<(String, u64)> = agg
        .stack_counts()
        .into_iter()
        .map(|(s, n)| (s.folded.clone(), n))
        .collect();
    // Most failures first; ties in any order.
    assert!(stacks.windows(2).all(|w| w[0].1 >= w[1].1), "stack order");
    stacks.sort();
    assert_eq!(stacks, reference.stack_counts(), "stack counts");
}

const GROUPINGS: [&str; 8] = [
    "comm,pid,context,path,order,gfp",
    "comm",
    "stack",
    "cgroup,order",
    "comm,pid,cgroup,context,path,order,gfp,stack",
    "path",
    "context,gfp",
    "pid,comm",
];

/// One generated record: indices into the tables above, and its time.
type Gen = (usize, bool, u32, u64, u32, usize, usize, bool, u32, u64);

fn gen_record() -> impl Strategy<Value = Gen> {
    (
        0..COMMS.len(),
        any::<bool>(),
        0u32..6,
        0u64..4,
        prop::sample::select(vec![0u32, 1, 3, 10]),
        0usize..6,
        0usize..10,
        prop::bool::weighted(0.05),
        0u32..16,
        0u64..1_000_000,
    )
}

fn build(g: &Gen, stacks: &[Vec<u64>]) -> FailureEvent {
    const GFPS: [u64; 6] = [0x820, 0x2820, 0xcc0, 0x40_2cc0, 0x2800, 0];
    let (comm, garbage, tgid, cgroup, order, gfp, stack, long, flags, ts) = *g;
    record(
        comm,
        garbage,
        tgid,
        cgroup,
        order,
        GFPS[gfp],
        &stacks[stack],
        long && !stacks[stack].is_empty(),
        flags & EVENT_WARN_ALLOC,
        ts,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Two windows (a reset between them) with an interval boundary in each,
    /// under any grouping and cap: small caps fill the cell table, whose
    /// records then take the slow path.
    #[test]
    fn optimized_aggregation_equals_the_reference(
        grouping in 0..GROUPINGS.len(),
        cap in prop::sample::select(vec![1usize, 2, 3, 5, 8, 40, DEFAULT_KEY_CAP]),
        first in proptest::collection::vec(gen_record(), 0..400),
        second in proptest::collection::vec(gen_record(), 0..200),
        split in 0usize..400,
    ) {
        let by: GroupBy = GROUPINGS[grouping].parse().unwrap();
        let stacks = stacks();
        let mut agg = Aggregator::new(
            super::tests::table(),
            Kallsyms::parse(KSYMS),
            Classifier::builtin(),
            cap,
        )
        .group_by(by);
        let mut reference = Reference::new(by, cap);
        let window = Window::starting_now();
        for (round, records) in [first, second].iter().enumerate() {
            for (i, g) in records.iter().enumerate() {
                if i == split {
                    agg.start_interval();
                    reference.start_interval();
                }
                let ev = build(g, &stacks);
                prop_assert_eq!(agg.add(&ev), reference.add(&ev), "record {} of round {}", i, round);
            }
            assert_same(&agg, &reference, &window);
            agg.reset();
            reference.reset();
        }
    }
}

/// The fixed cases the property test may not draw: one record; a storm on
/// one stack from many processes beyond a small cap; a cgroup change inside
/// a row; a stack seen again after a window reset.
#[test]
fn optimized_aggregation_equals_the_reference_on_fixed_cases() {
    let stacks = stacks();
    let window = Window::starting_now();
    for grouping in GROUPINGS {
        let by: GroupBy = grouping.parse().unwrap();
        for cap in [1, 3, 100] {
            let mut agg = Aggregator::new(
                super::tests::table(),
                Kallsyms::parse(KSYMS),
                Classifier::builtin(),
                cap,
            )
            .group_by(by);
            let mut reference = Reference::new(by, cap);
            let mut ts = 5_000_000u64;
            for round in 0..2u32 {
                for i in 0..500u32 {
                    ts = ts.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % 10_000_000;
                    let ev = record(
                        (i % 3) as usize,
                        i % 7 == 0,
                        i % 97,
                        u64::from(i / 250 + round),
                        i % 2,
                        0x820,
                        &stacks[(i % 5) as usize],
                        false,
                        if i % 4 == 0 { EVENT_WARN_ALLOC } else { 0 },
                        ts,
                    );
                    assert_eq!(agg.add(&ev), reference.add(&ev), "{grouping} cap {cap}");
                    if i == 300 {
                        agg.start_interval();
                        reference.start_interval();
                    }
                }
                assert_same(&agg, &reference, &window);
                agg.reset();
                reference.reset();
            }
        }
    }
}
