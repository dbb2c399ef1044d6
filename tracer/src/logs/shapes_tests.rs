//! Line shapes of issue #14 that the corpus (`corpus_tests.rs`) holds no real
//! paste of, each in the shape users report it, and the slab summary rows.

use super::{analyze::Analyzer, summary::Summary, *};
use crate::classify::Context;

fn events(text: &str) -> (Vec<Report>, Vec<slab::SlabFailure>, Stats) {
    let mut p = Parser::new(2026);
    let mut reports = Vec::new();
    let mut slabs = Vec::new();
    p.parse_reader(text.as_bytes(), &mut |ev| match ev {
        Event::Report(r) => reports.push(*r),
        Event::Slab(s) => slabs.push(*s),
        Event::Suppressed { .. } => {}
    })
    .unwrap();
    reports.sort_by_key(|r| r.line);
    (reports, slabs, p.stats().clone())
}

#[test]
fn openwrt_logread_and_level_tags() {
    let text = "\
Sat Oct  1 03:31:30 2016 kern.warn kernel: [ 6248.740000] hostapd: page allocation failure: order:1, mode:0x4020
Sat Oct  1 03:31:30 2016 kern.warn kernel: [ 6248.740000] CPU: 0 PID: 1077 Comm: hostapd Not tainted 3.18.36 #1
Sat Oct  1 03:31:30 2016 kern.warn kernel: [ 6248.750000] Call Trace:
Sat Oct  1 03:31:30 2016 kern.warn kernel: [ 6248.750000] [<800b1f3c>] warn_alloc_failed+0xe4/0x10c
Sat Oct  1 03:31:30 2016 kern.warn kernel: [ 6248.760000] [<80021b2c>] __do_softirq+0xec/0x278
Oct  1 03:31:31 router kern.warning kernel: [ 6249.1] sh: page allocation failure: order:0, mode:0x20 [kern.warning]
Oct  1 03:31:31 router kernel: [kern.warning] [ 6249.2] CPU: 0 PID: 9 Comm: sh Not tainted 3.18.36 #1^M
";
    let (r, _, _) = events(text);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(
        (r[0].comm.as_str(), r[0].pid, r[0].order),
        ("hostapd", Some(1077), 1)
    );
    assert_eq!(
        r[0].wall_us.map(crate::timestamp::rfc3339_us).as_deref(),
        Some("2016-10-01T03:31:30Z")
    );
    assert_eq!(r[0].frames.len(), 2);
    assert_eq!((r[1].comm.as_str(), r[1].gfp), ("sh", 0x20));
    assert_eq!(r[1].host.as_deref(), Some("router"));
}

#[test]
fn caller_ids_of_seven_digits_keep_interleaved_reports_apart() {
    let text = "\
[ 5.100000][T4161200] a: page allocation failure: order:0, mode:0x820(GFP_ATOMIC), nodemask=(null)
[ 5.100001][  C1] b: page allocation failure: order:2, mode:0x820(GFP_ATOMIC), nodemask=(null)
[ 5.100002][T4161200] CPU: 0 UID: 0 PID: 4161200 Comm: a Not tainted 6.12.0 #1
[ 5.100003][  C1] CPU: 1 UID: 0 PID: 7 Comm: b Not tainted 6.12.0 #1
[ 5.100004][T4161200] Call Trace:
[ 5.100005][  C1] Call Trace:
[ 5.100006][  C1]  <IRQ>
[ 5.100007][T4161200]  __alloc_pages+0x1/0x2
[ 5.100008][  C1]  __alloc_pages+0x1/0x2
[ 5.100009][T4161200]  do_syscall_64+0x1/0x2
[ 5.100010][  C1]  net_rx_action+0x1/0x2
[ 5.100011][   T9] unrelated: something else entirely
";
    let (r, _, stats) = events(text);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!((r[0].comm.as_str(), r[0].pid), ("a", Some(4_161_200)));
    assert_eq!((r[1].comm.as_str(), r[1].pid), ("b", Some(7)));
    let mut an = Analyzer::new(None);
    assert_eq!(an.analyze(&r[0]).context, Context::Task);
    assert_eq!(an.analyze(&r[1]).context, Context::Softirq);
    assert_eq!(r[0].frames.len(), 2);
    assert_eq!(r[1].frames.len(), 2);
    assert_eq!(stats.unassigned, 1);
}

/// A 3.2 trace without frame pointers: stale `?` frames above the allocator
/// (an old timer interrupt) must not decide; the receive chain below it does.
#[test]
fn stale_unreliable_frames_do_not_decide() {
    let text = "\
[1000.0] kworker/0:1: page allocation failure: order:1, mode:0x20
[1000.0] Pid: 10, comm: kworker/0:1 Not tainted 3.2.0-4-amd64 #1
[1000.0] Call Trace:
[1000.0]  <IRQ>  [<ffffffff810b7d1d>] ? warn_alloc_failed+0x11a/0x12d
[1000.0]  [<ffffffff8101c5c3>] ? apic_timer_interrupt+0x6e/0x80
[1000.0]  [<ffffffff810bab8e>] ? __alloc_pages_nodemask+0x704/0x7aa
[1000.0]  [<ffffffff810e9cd0>] ? kmem_getpages+0x4c/0xd9
[1000.0]  [<ffffffff81274fa8>] ? sk_clone+0x1e/0x2d5
[1000.0]  [<ffffffff812a9a61>] ? inet_csk_clone+0x10/0x8e
[1000.0]  [<ffffffff812bd38c>] ? tcp_v4_syn_recv_sock+0x42/0x229
[1000.0]  [<ffffffff812ba30f>] ? tcp_check_req+0x217/0x357
[1000.0]  [<ffffffff812bbd5f>] ? tcp_v4_rcv+0x374/0x5ff
[1000.0]  [<ffffffff8128561e>] ? net_rx_action+0xa1/0x1b8
[1000.0]  [<ffffffffa0113c2d>] ? e1000_clean+0x5a1/0x6f1 [e1000]
";
    let (r, _, _) = events(text);
    let a = Analyzer::new(None).analyze(&r[0]);
    assert_eq!(a.context, Context::Softirq);
    assert!(a.path.contains("tcp"), "{}", a.path);
    assert!(a.path.contains("net-rx"), "{}", a.path);
}

/// A trace with proven frames for the allocator only: two `?` frames of
/// the same protocol are evidence for the path, one alone is not.
#[test]
fn agreeing_unreliable_chain_counts_for_the_path() {
    let text = "\
[1.0] x: page allocation failure: order:0, mode:0x20
[1.0] CPU: 0 PID: 1 Comm: x Not tainted 4.4.0 #1
[1.0] Call Trace:
[1.0]  [<ffffffff81000001>] dump_stack+0x1/0x2
[1.0]  [<ffffffff81000002>] warn_alloc_failed+0x1/0x2
[1.0]  [<ffffffff81000003>] __alloc_pages_nodemask+0x1/0x2
[1.0]  [<ffffffff81000004>] ? tcp_v4_rcv+0x1/0x2
[1.0]  [<ffffffff81000005>] ? tcp_v4_do_rcv+0x1/0x2
[1.0]  [<ffffffff81000006>] ? udp_rcv+0x1/0x2
";
    let (r, _, _) = events(text);
    let a = Analyzer::new(None).analyze(&r[0]);
    assert_eq!(a.path, "tcp");
}

#[test]
fn slab_failures_are_rows_of_their_own() {
    let text = "\
[8.0] SLUB: Unable to allocate memory on node -1, gfp=0x900(GFP_NOWAIT|__GFP_ZERO)
[8.0]   cache: page->ptl, object size: 72, buffer size: 72, default order: 1, min order: 0
[8.0]   node 0: slabs: 236, objs: 13216, free: 0
[8.1] SLUB: Unable to allocate memory on node -1 (gfp=0x20)
[8.1] some other message
";
    let (r, s, stats) = events(text);
    assert!(r.is_empty());
    assert_eq!(stats.slab, 2);
    assert_eq!(s[0].cache.as_deref(), Some("page->ptl"));
    assert_eq!(
        (s[0].order, s[0].default_order, s[0].gfp),
        (Some(0), Some(1), 0x900)
    );
    // Cut before its `cache:` line.
    assert_eq!((s[1].cache.as_deref(), s[1].gfp), (None, 0x20));
    let mut an = Analyzer::new(None);
    let mut sum = Summary::new();
    for f in &s {
        let rep = f.as_report();
        let a = an.analyze(&rep);
        sum.add_slab(&rep, &a);
    }
    sum.add_stats(&stats);
    let rows = sum.rows();
    assert_eq!(rows.len(), 2);
    let ptl = rows.iter().find(|r| r.comm == "[slab:page->ptl]").unwrap();
    assert_eq!(
        (ptl.gfp.as_str(), ptl.order, ptl.context.as_str()),
        ("0x900", Some(0), "unknown")
    );
    assert_eq!(ptl.path, "none");
    assert!(sum.render().contains("slab: 2 "), "{}", sum.render());
}

#[test]
fn paste_decorations() {
    let text = "\
>> [  10.000000] a: page allocation failure: order:3,\x20\x20
>> mode:0x2080020(GFP_ATOMIC)
>> [  10.000001] CPU: 1 PID: 5 Comm: a Not tainted 4.9.0 #1
\t[  11.000000] b: page allocation failure: order:0, mode:0x20^M
\t[  11.000001] CPU: 2 PID: 6 Comm: b Tainted: G           O\x20
\t4.4.0-21-generic #37-Ubuntu
";
    let (r, _, _) = events(text);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(
        (r[0].comm.as_str(), r[0].gfp, r[0].pid),
        ("a", 0x208_0020, Some(5))
    );
    assert_eq!((r[1].comm.as_str(), r[1].gfp), ("b", 0x20));
    assert_eq!(r[1].kernel.as_deref(), Some("4.4.0-21-generic"));
}

#[test]
fn header_without_comm_takes_the_cpu_line() {
    let text = "\
[1.0] page allocation failure: order:2, mode:0x2204020
[1.0] CPU: 3 PID: 99 Comm: nginx Not tainted 4.4.0-1-default #1
";
    let (r, _, _) = events(text);
    assert_eq!((r[0].comm.as_str(), r[0].pid), ("nginx", Some(99)));
}
