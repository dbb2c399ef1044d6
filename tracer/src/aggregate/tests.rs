//! Tests of the aggregator.
use proptest::prelude::*;
use tracer_common::{MAX_STACK_DEPTH, TASK_COMM_LEN};

use super::*;

pub(super) fn table() -> GfpTable {
    GfpTable::from_format(include_str!(
        "../../../tests/fixtures/format/mm_page_alloc-6.18.txt"
    ))
    .unwrap()
}

const KSYMS: &str = "\
ffffffff81100000 T __alloc_pages_noprof
ffffffff81200000 T alloc_fdtable
ffffffff81200100 T expand_files
ffffffff81300000 T neigh_hash_alloc
ffffffff81300100 T tcp_connect
ffffffff81400000 T do_syscall_64
";

fn event(comm: &str, tgid: u32, order: u32, gfp: u64, stack: &[u64], flags: u32) -> FailureEvent {
    let mut ev = FailureEvent {
        ts_boot_ns: 1_000 + u64::from(tgid),
        cgroup_id: 0,
        gfp,
        pid: tgid,
        tgid,
        order,
        migratetype: 0,
        cpu: 0,
        flags,
        stack_len: u32::try_from(stack.len()).unwrap(),
        _pad: 0,
        comm: [0; TASK_COMM_LEN],
        stack: [0; MAX_STACK_DEPTH],
    };
    ev.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    ev.stack[..stack.len()].copy_from_slice(stack);
    ev
}

fn agg(cap: usize) -> Aggregator {
    Aggregator::new(table(), Kallsyms::parse(KSYMS), Classifier::builtin(), cap)
}

/// An aggregator over a small symbol table, for other modules' tests.
pub(crate) fn test_aggregator() -> Aggregator {
    agg(DEFAULT_KEY_CAP)
}

/// A failure record with one of two stacks (0: fd table, 1: neighbour/TCP).
pub(crate) fn test_event(
    comm: &str,
    tgid: u32,
    order: u32,
    gfp: u64,
    stack: usize,
) -> FailureEvent {
    let s: &[u64] = if stack == 0 { &FD } else { &NET };
    event(comm, tgid, order, gfp, s, EVENT_WARN_ALLOC)
}

const FD: [u64; 4] = [
    0xffff_ffff_8110_0010,
    0xffff_ffff_8120_0010,
    0xffff_ffff_8120_0110,
    0xffff_ffff_8140_0010,
];
const NET: [u64; 3] = [
    0xffff_ffff_8130_0010,
    0xffff_ffff_8130_0110,
    0xffff_ffff_8140_0010,
];

#[test]
fn rows_group_by_key_and_keep_the_top_stack() {
    let mut a = agg(100);
    for _ in 0..3 {
        a.add(&event("dup", 10, 6, 0x400cc0, &FD, 0));
    }
    a.add(&event("dup", 10, 6, 0x400cc0, &NET, 0));
    a.add(&event("nettool", 11, 1, 0x820, &NET, EVENT_WARN_ALLOC));
    a.add(&event("nettool", 11, 1, 0x2820, &NET, EVENT_WARN_ALLOC)); // NOWARN
    assert_eq!(a.events, 6);
    assert_eq!(a.total_failures(), 6);
    let rows = a.summary_rows(&Window::starting_now());
    let dup: Vec<_> = rows.iter().filter(|r| r.comm == "dup").collect();
    assert_eq!(dup.len(), 2, "different paths are different rows: {dup:?}");
    let fdrow = dup.iter().find(|r| r.failures == 3).unwrap();
    assert_eq!(fdrow.top_stack, "do_syscall_64;expand_files;alloc_fdtable");
    assert_eq!(fdrow.gfp_flags, "GFP_KERNEL_ACCOUNT");
    assert_eq!(fdrow.atomic, Some(false));
    assert_eq!(fdrow.context, "task");
    assert_eq!(fdrow.path, "none");
    let netrow = dup.iter().find(|r| r.failures == 1).unwrap();
    assert_eq!(netrow.path, "neigh+tcp");
    let warned: u64 = rows
        .iter()
        .filter(|r| r.comm == "nettool")
        .map(|r| r.warned)
        .sum();
    assert_eq!(warned, 1, "the NOWARN failure is not warned");
}

#[test]
fn group_by_fewer_keys_merges_rows_and_blanks_columns() {
    let mut a = agg(100).group_by("comm".parse().unwrap());
    a.add(&event("dup", 10, 6, 0x400cc0, &FD, 0));
    a.add(&event("dup", 12, 3, 0x820, &NET, 0));
    a.add(&event("x", 13, 3, 0x820, &NET, 0));
    a.add(&event("dup", 14, 3, 0x820, &NET, 0));
    let rows = a.summary_rows(&Window::starting_now());
    // Rows never mix outcomes: the fd table's and the network stack's
    // failures of `dup` stay apart, the two network ones merge.
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!((rows[0].comm.as_str(), rows[0].failures), ("dup", 2));
    assert_ne!(rows[0].outcome, "");
    let dup: u64 = rows
        .iter()
        .filter(|r| r.comm == "dup")
        .map(|r| r.failures)
        .sum();
    assert_eq!(dup, 3);
    assert_eq!(rows[0].pid, "");
    assert_eq!(rows[0].order, None);
    assert_eq!(rows[0].gfp, "");
    assert_eq!(rows[0].atomic, None);
}

#[test]
fn group_by_parses_and_rejects() {
    let by: GroupBy = "order, stack".parse().unwrap();
    assert!(by.has(Dim::Order) && by.has(Dim::Stack) && !by.has(Dim::Comm));
    assert_eq!(by.to_string(), "order,stack");
    assert_eq!(
        GroupBy::default().to_string(),
        "comm,pid,context,path,order,gfp"
    );
    assert!("comm,zone".parse::<GroupBy>().unwrap_err().contains("zone"));
    assert!("".parse::<GroupBy>().is_err());
}

#[test]
fn key_cap_keeps_totals_exact() {
    let mut a = agg(3);
    for pid in 0..50 {
        a.add(&event("p", pid, 1, 0x820, &FD, 0));
    }
    let rows = a.rows();
    assert_eq!(rows.len(), 4, "3 keys + one other row");
    assert_eq!(a.total_failures(), 50);
    assert_eq!(a.capped, 47);
    assert_eq!(rows[0].0.comm.as_deref(), Some(OTHER));
    assert_eq!(rows[0].1.failures, 47);
}

#[test]
fn same_stack_is_symbolized_once() {
    let mut a = agg(10);
    let (id1, new1) = a.add(&event("x", 1, 1, 0x820, &FD, 0));
    let (id2, new2) = a.add(&event("y", 2, 1, 0x820, &FD, 0));
    assert_eq!(id1, id2);
    assert!(new1 && !new2);
    assert_eq!(a.stack_counts().len(), 1);
    assert_eq!(a.stack_counts()[0].1, 2);
}

#[test]
fn reset_starts_an_empty_window() {
    let mut a = agg(10);
    a.add(&event("x", 1, 1, 0x820, &FD, 0));
    a.reset();
    assert_eq!((a.events, a.rows().len(), a.total_failures()), (0, 0, 0));
    let (_, new) = a.add(&event("x", 1, 1, 0x820, &FD, 0));
    assert!(!new, "stack cache kept across windows");
    assert_eq!(a.total_failures(), 1);
}

#[test]
fn interval_counts_reset() {
    let mut a = agg(10);
    a.add(&event("x", 1, 1, 0x820, &FD, 0));
    a.start_interval();
    a.add(&event("x", 1, 1, 0x820, &FD, 0));
    let rows = a.rows();
    assert_eq!((rows[0].1.failures, rows[0].1.interval_failures), (2, 1));
}

proptest! {
    #[test]
    fn rows_sum_to_events_under_any_cap(
        cap in 1usize..20,
        evs in proptest::collection::vec((0u32..30, 0u32..11, 0usize..2, any::<bool>()), 0..300),
    ) {
        let mut a = agg(cap);
        for (pid, order, s, atomic) in &evs {
            let stack: &[u64] = if *s == 0 { &FD } else { &NET };
            let gfp = if *atomic { 0x820 } else { 0xcc0 };
            a.add(&event("p", *pid, *order, gfp, stack, 0));
        }
        prop_assert_eq!(a.total_failures(), evs.len() as u64);
        let rows = a.summary_rows(&Window::starting_now());
        prop_assert_eq!(rows.iter().map(|r| r.failures).sum::<u64>(), evs.len() as u64);
        // Rows beyond the cap only as [other] rows, one per (order, gfp).
        let normal = rows.iter().filter(|r| r.comm != OTHER).count();
        prop_assert!(normal <= cap);
    }
}

#[test]
fn rebuilt_counts_join_the_rows_their_records_would_and_say_so() {
    let mut a = agg(100);
    a.add(&event("dup", 10, 6, 0x400cc0, &FD, 0));
    // 5 lost failures of the same key, 2 warned, and 3 of a key no record had.
    a.add_rebuilt(
        &event("dup", 10, 6, 0x400cc0, &FD, 0),
        &RowStats::counted(5, 2, 500, 9_000),
    );
    a.add_rebuilt(
        &event("nettool", 11, 1, 0x820, &NET, 0),
        &RowStats::counted(3, 0, 700, 800),
    );
    a.add_rebuilt(
        &event("nettool", 11, 1, 0x820, &NET, 0),
        &RowStats::counted(0, 0, 0, 0),
    );
    assert_eq!((a.events, a.rebuilt), (1, 8));
    assert_eq!(a.total_failures(), 9);
    let rows = a.rows();
    let dup = rows.iter().find(|(k, _)| k.tgid == Some(10)).unwrap();
    assert_eq!(dup.1.failures, 6);
    assert_eq!(dup.1.warned, 2);
    assert_eq!((dup.1.first_ns, dup.1.last_ns), (500, 9_000));
    let rebuilt = a.rebuilt_rows();
    assert_eq!(rebuilt.len(), 2);
    assert_eq!((rebuilt[0].1, rebuilt[0].2), (5, 6), "most rebuilt first");
    assert_eq!((rebuilt[1].1, rebuilt[1].2), (3, 3));
    let summary = a.summary_rows(&Window::starting_now());
    let net = summary.iter().find(|r| r.comm == "nettool").unwrap();
    assert_eq!(
        net.path, "neigh+tcp",
        "a rebuilt row is classified by its stack"
    );
    assert_eq!(net.failures, 3);
    a.reset();
    assert_eq!(a.rebuilt, 0);
    assert!(a.rebuilt_rows().is_empty());
}

#[test]
fn follow_records_count_fallbacks_seen_at_the_call_site_only() {
    use crate::verdict::observed::Seen;
    use tracer_common::EVENT_FOLLOW;
    const SYMS: &str = "\
ffffffff81100000 T __alloc_pages_noprof
ffffffff81500000 T allocate_slab
ffffffff81500400 T new_slab
ffffffff81500800 T ___slab_alloc
ffffffff81500c00 T kmem_cache_alloc_noprof
ffffffff81600000 T sock_alloc_inode
ffffffff81600100 T __sys_socket
";
    let t = table();
    let first_try = 0x820 | t.bit("__GFP_NORETRY").unwrap() | t.bit("__GFP_NOWARN").unwrap();
    let mut a = Aggregator::new(t, Kallsyms::parse(SYMS), Classifier::builtin(), 100)
        .observing_fallbacks(true);
    let failure = [
        0xffff_ffff_8110_0010,
        0xffff_ffff_8150_0020,
        0xffff_ffff_8150_0410,
        0xffff_ffff_8150_0810,
        0xffff_ffff_8150_0c10,
        0xffff_ffff_8160_0010,
        0xffff_ffff_8160_0110,
    ];
    let follow = |of: &FailureEvent, stack: &[u64]| {
        let mut f = event("", of.tgid, 0, 0, stack, EVENT_FOLLOW);
        f.ts_boot_ns = of.ts_boot_ns;
        f
    };
    // slab's retry at its minimum order: a second call from allocate_slab.
    let ev = event("sock", 10, 3, first_try, &failure, 0);
    a.add(&ev);
    let mut retry = failure;
    retry[1] = 0xffff_ffff_8150_0090;
    a.follow(&follow(&ev, &retry));
    // The next failure's follow parts further out, in sock_alloc_inode:
    // the caller going on, not slab falling back.
    let ev2 = event("sock", 11, 3, first_try, &failure, 0);
    a.add(&ev2);
    a.follow(&follow(
        &ev2,
        &[
            0xffff_ffff_8110_0010,
            0xffff_ffff_8160_0050,
            0xffff_ffff_8160_0110,
        ],
    ));
    // A follow record of no awaited failure (its failure's time is not the
    // CPU's last one) counts nowhere.
    a.follow(&follow(&ev, &retry));
    assert_eq!(a.events, 2, "follow records are not failures");
    let seen = a.fallbacks_seen(4).unwrap();
    assert_eq!(
        seen.by_outcome["fallback"],
        Seen {
            failures: 2,
            seen: 1
        }
    );
    assert_eq!(seen.by_outcome["terminal"], Seen::default());
    assert_eq!((seen.elsewhere, seen.lost), (1, 4));
    assert_eq!(seen.sites.len(), 1);
    assert_eq!(
        (seen.sites[0].function.as_str(), seen.sites[0].seen),
        ("allocate_slab", 1)
    );
    // A new window counts anew.
    a.reset();
    assert_eq!(
        a.fallbacks_seen(0).unwrap().by_outcome["fallback"],
        Seen::default()
    );
    // Not observing: nothing to report.
    assert!(agg(10).fallbacks_seen(0).is_none());
}
