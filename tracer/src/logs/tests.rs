//! Parser tests over real (6.1) and hand-written (2.6.32 to 5.10) reports in
//! every log shape. Expected values were read off the fixture files.

use super::{analyze::Analyzer, summary::Summary, *};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/logs/", $name))
    };
}

const REAL_1: &str = fixture!("dmesg-01-neigh_hash-tcp_connect-bond0.txt");
const REAL_2: &str = fixture!("dmesg-02-reuseport-listen.txt");
const V2632_DMESG: &str = fixture!("v2.6.32-dmesg.txt");
const V2632_MESSAGES: &str = fixture!("v2.6.32-messages.txt");
const V34_KERNLOG: &str = fixture!("v3.4-kern.log");
const V49_JOURNAL: &str = fixture!("v4.9-journal-short-precise.txt");
const V54_DMESG_T: &str = fixture!("v5.4-dmesg-T.txt");
const V510_JOURNAL_ISO: &str = fixture!("v5.10-journal-short-iso.txt");
const MIXED_CUT: &str = fixture!("mixed-cut.txt");

const ALL: [&str; 9] = [
    REAL_1,
    REAL_2,
    V2632_DMESG,
    V2632_MESSAGES,
    V34_KERNLOG,
    V49_JOURNAL,
    V54_DMESG_T,
    V510_JOURNAL_ISO,
    MIXED_CUT,
];

struct Parsed {
    reports: Vec<Report>,
    suppressed: Vec<u64>,
    stats: Stats,
}

fn parse(text: &str) -> Parsed {
    parse_bytes(text.as_bytes())
}

fn parse_bytes(bytes: &[u8]) -> Parsed {
    let mut p = Parser::new(2026);
    let mut reports = Vec::new();
    let mut suppressed = Vec::new();
    p.parse_reader(bytes, &mut |ev| match ev {
        Event::Report(r) => reports.push(*r),
        Event::Suppressed { count, .. } => suppressed.push(count),
        Event::Slab(_) => {}
    })
    .unwrap();
    Parsed {
        reports,
        suppressed,
        stats: p.stats().clone(),
    }
}

fn one(text: &str) -> Report {
    let p = parse(text);
    assert_eq!(p.reports.len(), 1, "{:#?}", p.reports);
    p.reports.into_iter().next().unwrap()
}

fn functions(r: &Report, reliable_only: bool) -> Vec<&str> {
    r.frames
        .iter()
        .filter(|f| f.reliable || !reliable_only)
        .map(|f| f.function.as_str())
        .collect()
}

fn zone<'a>(r: &'a Report, name: &str) -> &'a meminfo::Zone {
    r.mem
        .as_ref()
        .and_then(|m| m.zones.iter().find(|z| z.name == name))
        .unwrap_or_else(|| panic!("no zone {name}"))
}

#[test]
fn real_6_1_neigh_hash_report() {
    let p = parse(REAL_1);
    assert_eq!(p.reports.len(), 1);
    assert_eq!(p.stats.partial, 0);
    let r = &p.reports[0];
    assert_eq!(r.line, 1);
    assert_eq!(r.mono, Some(17.187715));
    assert_eq!(r.wall_us, None);
    assert_eq!(r.host, None);
    assert_eq!(r.comm, "nettool");
    assert_eq!(r.pid, Some(177));
    assert_eq!(r.cpu, Some(1));
    assert_eq!(r.kernel.as_deref(), Some("6.1.0-56-cloud-amd64"));
    assert_eq!(r.order, 1);
    assert_eq!(r.gfp, 0xb20);
    assert_eq!(r.gfp_printed.as_deref(), Some("GFP_ATOMIC|__GFP_ZERO"));
    assert!(!r.partial);
    // 39 frame lines between <TASK> and </TASK>, 20 of them `?`.
    assert_eq!(r.frames.len(), 39);
    assert_eq!(r.frames.iter().filter(|f| !f.reliable).count(), 20);
    let reliable = functions(r, true);
    assert_eq!(reliable[0], "dump_stack_lvl");
    assert_eq!(reliable[4], "__get_free_pages");
    assert_eq!(reliable[5], "neigh_hash_alloc");
    assert_eq!(reliable.last(), Some(&"entry_SYSCALL_64_after_hwframe"));
    assert!(reliable.contains(&"tcp_connect"));
    assert_eq!(r.frames[3].function, "__inet_dev_addr_type");
    assert!(!r.frames[3].reliable);
    assert_eq!(r.frames[3].offset.as_deref(), Some("+0xe8/0x180"));
    assert!(r.frames.iter().all(|f| f.section == Section::Task));
    let mem = r.mem.as_ref().unwrap();
    assert_eq!(mem.free_pages, Some(13301));
    assert_eq!(mem.zones.len(), 2);
    let dma = zone(r, "DMA");
    assert_eq!(
        (dma.min_kb, dma.low_kb, dma.high_kb),
        (Some(128), Some(160), Some(192))
    );
    assert_eq!(dma.free_blocks[0], 1661);
    let dma32 = zone(r, "DMA32");
    assert_eq!(dma32.free_kb, Some(46560));
    assert_eq!(
        (dma32.min_kb, dma32.low_kb, dma32.high_kb),
        (Some(5668), Some(6104), Some(6540))
    );
    assert_eq!(dma32.free_blocks.len(), 11);
    assert_eq!(dma32.free_blocks[0], 11640);
    assert_eq!(dma32.largest_free_order(), Some(0));
}

#[test]
fn real_6_1_reuseport_report_and_suppressed_line() {
    let p = parse(REAL_2);
    assert_eq!(p.suppressed, vec![11955]);
    assert_eq!(p.stats.suppressed, 11955);
    let r = &p.reports[0];
    assert_eq!(p.reports.len(), 1);
    assert_eq!(r.line, 2);
    assert_eq!(
        (r.comm.as_str(), r.pid, r.cpu),
        ("nettool", Some(189), Some(0))
    );
    assert_eq!((r.order, r.gfp), (3, 0x40b20));
    assert_eq!(
        r.gfp_printed.as_deref(),
        Some("GFP_ATOMIC|__GFP_COMP|__GFP_ZERO")
    );
    let reliable = functions(r, true);
    assert_eq!(
        &reliable[4..10],
        &[
            "__kmalloc_large_node",
            "__kmalloc",
            "__reuseport_alloc",
            "reuseport_grow",
            "reuseport_add_sock",
            "__inet_hash"
        ]
    );
    assert_eq!(zone(r, "DMA32").free_blocks[0], 8580);
    assert_eq!(r.mem.as_ref().unwrap().free_pages, Some(10235));
    assert!(!r.partial);
}

#[test]
fn v2_6_32_plain_dmesg() {
    let p = parse(V2632_DMESG);
    assert_eq!(p.reports.len(), 1);
    let r = &p.reports[0];
    assert_eq!(r.line, 4);
    assert_eq!((r.mono, r.wall_us), (None, None));
    assert_eq!(r.comm, "swapper");
    assert_eq!((r.pid, r.cpu), (Some(0), None));
    assert_eq!(r.kernel.as_deref(), Some("2.6.32-754.el6.x86_64"));
    assert_eq!((r.order, r.gfp, r.gfp_printed.as_deref()), (1, 0x20, None));
    assert!(!r.partial);
    assert_eq!(r.frames.len(), 39);
    assert!(r.frames.iter().all(|f| !f.reliable));
    assert_eq!(r.frames[0].function, "__alloc_pages_nodemask");
    assert_eq!(r.frames[0].section, Section::Irq);
    assert_eq!(r.frames[22].function, "xennet_poll");
    assert_eq!(r.frames[22].module.as_deref(), Some("xen_netfront"));
    assert_eq!(r.frames[29].section, Section::Irq);
    // `<EOI>` ends the interrupt stack.
    assert_eq!(r.frames[30].function, "xen_hypercall_sched_op");
    assert_eq!(r.frames[30].section, Section::Task);
    let mem = r.mem.as_ref().unwrap();
    assert_eq!(mem.free_pages, Some(9876));
    assert_eq!(mem.zones.len(), 3);
    let normal = zone(r, "Normal");
    assert_eq!(
        (normal.free_kb, normal.min_kb, normal.low_kb, normal.high_kb),
        (Some(3716), Some(1388), Some(1732), Some(2080))
    );
    assert_eq!(normal.largest_free_order(), Some(0));
    assert_eq!(zone(r, "DMA32").largest_free_order(), Some(2));
    assert_eq!(zone(r, "DMA").largest_free_order(), Some(10));
}

#[test]
fn v2_6_32_var_log_messages() {
    let r = one(V2632_MESSAGES);
    assert_eq!(r.line, 2);
    assert_eq!(r.host.as_deref(), Some("xen-web2"));
    assert_eq!(
        r.wall_us.map(crate::timestamp::rfc3339_us).as_deref(),
        Some("2026-11-03T14:22:01Z")
    );
    assert_eq!(r.mono, None);
    assert_eq!((r.comm.as_str(), r.order, r.gfp), ("swapper", 1, 0x20));
    assert_eq!(r.kernel.as_deref(), Some("2.6.32-754.el6.x86_64"));
    assert_eq!(r.frames.len(), 39);
    assert_eq!(zone(&r, "DMA32").free_blocks[1], 94);
    assert!(!r.partial);
}

#[test]
fn v3_4_kern_log_with_other_programs_interleaved() {
    let p = parse(V34_KERNLOG);
    // `net_ratelimit` is not the allocator's rate limit.
    assert_eq!(p.suppressed, vec![3]);
    assert_eq!(p.reports.len(), 1);
    let r = &p.reports[0];
    assert_eq!(r.line, 4);
    assert_eq!(r.host.as_deref(), Some("web3"));
    assert_eq!(r.mono, Some(1_234_570.001_24));
    assert_eq!(
        r.wall_us.map(crate::timestamp::rfc3339_us).as_deref(),
        Some("2026-11-22T03:00:05Z")
    );
    assert_eq!(r.comm, "swapper/1");
    assert_eq!((r.pid, r.cpu), (Some(0), None));
    assert_eq!(r.kernel.as_deref(), Some("3.4.2-1-amd64"));
    assert_eq!((r.order, r.gfp), (4, 0x4020));
    assert_eq!(r.frames.len(), 35);
    let reliable = functions(r, true);
    assert_eq!(reliable[0], "alloc_pages_current");
    assert_eq!(reliable[5], "bond_3ad_xmit_xor");
    assert_eq!(r.frames[7].module.as_deref(), Some("bonding"));
    assert!(reliable.contains(&"tcp_v4_rcv"));
    assert!(!reliable.contains(&"bond_handle_frame"));
    assert_eq!(reliable.last(), Some(&"common_interrupt"));
    assert!(
        r.frames
            .iter()
            .filter(|f| f.reliable)
            .all(|f| f.section == Section::Irq)
    );
    assert_eq!(zone(r, "Normal").largest_free_order(), Some(3));
    assert_eq!(zone(r, "DMA32").largest_free_order(), Some(2));
    assert_eq!(zone(r, "DMA").largest_free_order(), Some(10));
    assert_eq!(r.mem.as_ref().unwrap().free_pages, Some(24318));
    assert!(!r.partial);
}

#[test]
fn v4_9_journal_short_precise() {
    let p = parse(V49_JOURNAL);
    assert_eq!(p.suppressed, vec![27]);
    assert_eq!(p.reports.len(), 1);
    let r = &p.reports[0];
    assert_eq!(r.host.as_deref(), Some("db1"));
    assert_eq!(
        r.wall_us.map(crate::timestamp::rfc3339_us).as_deref(),
        Some("2026-11-22T03:10:04.881240Z")
    );
    assert_eq!(r.comm, "kworker/3:1H");
    assert_eq!((r.pid, r.cpu), (Some(412), Some(3)));
    assert_eq!(r.kernel.as_deref(), Some("4.9.0-8-amd64"));
    assert_eq!((r.order, r.gfp), (0, 0x208_0020));
    assert_eq!(r.gfp_printed.as_deref(), Some("GFP_ATOMIC"));
    // The raw stack words before `Call Trace:` are not frames.
    assert_eq!(r.frames.len(), 20);
    assert_eq!(r.frames[0].function, "dump_stack");
    assert_eq!(r.frames[0].section, Section::Irq);
    assert_eq!(r.frames[8].function, "ixgbe_clean_rx_irq");
    assert_eq!(r.frames[8].module.as_deref(), Some("ixgbe"));
    assert_eq!(r.frames[14].function, "common_interrupt");
    assert_eq!(r.frames[14].section, Section::Irq);
    assert_eq!(r.frames[15].section, Section::Task);
    assert_eq!(r.frames[15].function, "blk_mq_run_hw_queue");
    let normal = zone(r, "Normal");
    assert_eq!((normal.free_kb, normal.min_kb), (Some(54760), Some(54732)));
    assert_eq!(normal.largest_free_order(), Some(1));
    assert_eq!(zone(r, "DMA32").largest_free_order(), Some(4));
    assert!(!r.partial);
}

#[test]
fn v5_4_dmesg_human_stamps_irq_section() {
    let r = one(V54_DMESG_T);
    assert_eq!(r.line, 2);
    assert_eq!(
        r.wall_us.map(crate::timestamp::rfc3339_us).as_deref(),
        Some("2026-11-22T03:30:12Z")
    );
    assert_eq!(r.comm, "swapper/3");
    assert_eq!((r.pid, r.cpu), (Some(0), Some(3)));
    assert_eq!(r.kernel.as_deref(), Some("5.4.0-42-generic"));
    assert_eq!((r.order, r.gfp), (2, 0x40a20));
    assert_eq!(r.gfp_printed.as_deref(), Some("GFP_ATOMIC|__GFP_COMP"));
    let reliable = functions(&r, true);
    assert_eq!(reliable[1], "warn_alloc.cold");
    assert_eq!(reliable[8], "xennet_poll");
    // 26 `+0x` lines, one of them the RIP register line.
    assert_eq!(r.frames.len(), 25);
    let xennet = r
        .frames
        .iter()
        .find(|f| f.function == "xennet_poll")
        .unwrap();
    assert_eq!(xennet.section, Section::Irq);
    assert_eq!(xennet.module.as_deref(), Some("xen_netfront"));
    let idle = r.frames.iter().find(|f| f.function == "do_idle").unwrap();
    assert_eq!(idle.section, Section::Task);
    assert_eq!(zone(&r, "DMA32").largest_free_order(), Some(1));
    assert_eq!(zone(&r, "DMA32").min_kb, Some(67600));
    assert!(!r.partial);
}

#[test]
fn v5_10_journal_short_iso_task_context() {
    let r = one(V510_JOURNAL_ISO);
    assert_eq!(r.host.as_deref(), Some("pg-main"));
    // +0100 zone: 04:45:17 local is 03:45:17 UTC.
    assert_eq!(
        r.wall_us.map(crate::timestamp::rfc3339_us).as_deref(),
        Some("2026-11-22T03:45:17Z")
    );
    assert_eq!(
        (r.comm.as_str(), r.pid, r.cpu),
        ("postgres", Some(23817), Some(0))
    );
    assert_eq!(r.kernel.as_deref(), Some("5.10.0-32-cloud-amd64"));
    assert_eq!((r.order, r.gfp), (4, 0x40dc0));
    assert_eq!(
        r.gfp_printed.as_deref(),
        Some("GFP_KERNEL|__GFP_COMP|__GFP_ZERO")
    );
    assert_eq!(r.frames.len(), 15);
    assert!(r.frames.iter().all(|f| f.section == Section::None));
    assert_eq!(zone(&r, "Normal").largest_free_order(), Some(1));
    assert_eq!(zone(&r, "DMA32").largest_free_order(), Some(3));
    assert_eq!(zone(&r, "Normal").min_kb, Some(53888));
    assert!(!r.partial);
}

#[test]
fn mixed_log_with_a_cut_report() {
    let p = parse(MIXED_CUT);
    assert_eq!(p.suppressed, vec![5]);
    assert_eq!(p.reports.len(), 3);
    assert_eq!(p.stats.partial, 1);
    assert_eq!(p.stats.skipped, 0);
    let [a, b, c] = [&p.reports[0], &p.reports[1], &p.reports[2]];
    assert_eq!(
        (a.comm.as_str(), a.order, a.mono),
        ("swapper/3", 2, Some(5.1))
    );
    assert_eq!(a.kernel.as_deref(), Some("5.4.0-42-generic"));
    assert!(!a.partial);
    // The NIC line printed in the middle of Mem-Info did not disturb it.
    assert_eq!(a.mem.as_ref().unwrap().zones.len(), 2);
    assert_eq!(zone(a, "DMA32").free_blocks[1], 1451);

    assert_eq!((b.comm.as_str(), b.order, b.gfp), ("nettool", 3, 0x40b20));
    assert_eq!(b.mono, Some(12.309_89));
    assert!(b.partial);
    assert!(b.mem.is_none());
    assert_eq!(b.frames.len(), 7);

    assert_eq!((c.comm.as_str(), c.order, c.pid), ("nettool", 1, Some(177)));
    assert!(!c.partial);
    assert_eq!(c.frames.len(), 39);
}

#[test]
fn report_cut_at_end_of_input_is_partial() {
    let cut: String = REAL_1.lines().take(64).flat_map(|l| [l, "\n"]).collect();
    let r = one(&cut);
    assert!(r.partial);
    assert_eq!(r.order, 1);
    assert_eq!(r.frames.len(), 39);
    // Mem-Info started (free pages and the DMA zone), buddy lines not reached.
    let mem = r.mem.as_ref().unwrap();
    assert_eq!(mem.free_pages, Some(13301));
    assert_eq!(mem.zones.len(), 1);
    assert_eq!(mem.zones[0].min_kb, Some(128));
    assert!(mem.zones[0].free_blocks.is_empty());
}

#[test]
fn unknown_shape_counts_as_skipped() {
    let p = parse(
        "[ 1.0] foo: page allocation failure, no order here\n[ 2.0] bar: page allocation failure: order:x, mode:0x20\n",
    );
    assert_eq!(p.reports.len(), 0);
    assert_eq!(p.stats.skipped, 2);
}

#[test]
fn a_gap_in_time_closes_a_report() {
    let text = "[  100.000000] a: page allocation failure: order:2, mode:0x20\n\
                [  100.000100] Call Trace:\n\
                [  100.000200]  [<ffffffff81000000>] foo+0x1/0x2\n\
                [  200.000000]  [<ffffffff81000000>] bar+0x1/0x2\n";
    let r = one(text);
    assert!(r.partial);
    assert_eq!(functions(&r, false), vec!["foo"]);
}

#[test]
fn gzip_is_not_needed_here_but_crlf_and_no_final_newline_are_handled() {
    let crlf = REAL_2.replace('\n', "\r\n");
    let p = parse(crlf.trim_end());
    assert_eq!(p.reports.len(), 1);
    assert_eq!(p.reports[0].frames.len(), 25);
    assert!(!p.reports[0].partial);
}

#[test]
fn analysis_names_and_atomic_by_era() {
    let mut an = Analyzer::new(None);
    let r = one(V2632_DMESG);
    let a = an.analyze(&r);
    assert_eq!(a.gfp_names, "GFP_ATOMIC");
    assert!(!a.names_printed);
    assert!(a.atomic);
    assert!(!a.nowarn);
    assert_eq!(a.kernel, "2.6.32-754.el6.x86_64");

    let r = one(V34_KERNLOG);
    let a = an.analyze(&r);
    assert_eq!(a.gfp_names, "GFP_ATOMIC|__GFP_COMP");
    assert!(a.atomic);

    let r = one(V49_JOURNAL);
    let a = an.analyze(&r);
    assert_eq!(
        (a.gfp_names.as_str(), a.names_printed, a.atomic),
        ("GFP_ATOMIC", true, true)
    );

    let r = one(V510_JOURNAL_ISO);
    let a = an.analyze(&r);
    assert!(!a.atomic);
    assert_eq!(a.gfp_names, "GFP_KERNEL|__GFP_COMP|__GFP_ZERO");
    // Presented stack drops the reporting/allocator frames and is root first.
    assert!(
        a.stack
            .starts_with("entry_SYSCALL_64_after_hwframe;do_syscall_64;ksys_read")
    );
    assert!(a.stack.ends_with("kmalloc_order_trace;kmalloc_order"));

    let r = one(REAL_1);
    let a = an.analyze(&r);
    assert!(a.atomic);
    assert!(
        a.stack
            .ends_with("___neigh_create;neigh_hash_alloc;__get_free_pages")
    );
}

#[test]
fn kernel_override_redecodes() {
    let r = one(V2632_DMESG);
    // Read as a 4.9 kernel, 0x20 is a bare __GFP_HIGH.
    let a = Analyzer::new(Some("4.9.0".into())).analyze(&r);
    assert_eq!(a.gfp_names, "__GFP_HIGH");
    assert_eq!(a.kernel, "4.9.0");
    assert!(a.atomic);
    // A report without a version and without names: the <= 4.3 table.
    let mut r = r;
    r.kernel = None;
    let a = Analyzer::new(None).analyze(&r);
    assert_eq!(
        (a.gfp_names.as_str(), a.kernel.as_str()),
        ("GFP_ATOMIC", "")
    );
}

#[test]
fn summary_rows_and_text() {
    let mut an = Analyzer::new(None);
    let mut s = Summary::new();
    for text in ALL {
        let p = parse(text);
        for r in &p.reports {
            let a = an.analyze(r);
            s.add_report(r, &a);
        }
        s.add_stats(&p.stats);
    }
    // 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 3 reports.
    assert_eq!(s.reports(), 11);
    let rows = s.rows();
    let total: u64 = rows.iter().map(|r| r.failures).sum();
    assert_eq!(total, 11);
    // Only the postgres one is not atomic, and it sorts last.
    assert_eq!(rows.iter().filter(|r| r.atomic == Some(false)).count(), 1);
    assert_eq!(rows.last().map(|r| r.comm.as_str()), Some("postgres"));
    let pg = rows.last().unwrap();
    assert_eq!(pg.gfp, "0x40dc0");
    assert_eq!(pg.pid, "23817");
    assert_eq!(pg.first_seen, "2026-11-22T03:45:17Z");
    assert_eq!(pg.warned, 1);
    assert_eq!(pg.host, "pg-main");
    assert!(rows[0].window_start.starts_with("2026-11-"));
    let text = s.render();
    assert!(
        text.contains("11 page allocation failure reports"),
        "{text}"
    );
    // 11955 + 3 + 27 + 5
    assert!(text.contains("suppressed: 11990 more failures"), "{text}");
    assert!(
        text.contains("order-1 request; largest free block order 0 in DMA, order 0 in DMA32: no free block of order >= 1 outside DMA (fragmented); free 13301 pages"),
        "{text}"
    );
    assert!(
        text.contains("order-4 request; largest free block order 10 in DMA, order 2 in DMA32, order 3 in Normal: no free block of order >= 4 outside DMA"),
        "{text}"
    );
    // 4.9: order-0 request, DMA32 had order 4 free.
    assert!(
        text.contains("order-0 request; largest free block order 10 in DMA, order 4 in DMA32, order 1 in Normal: DMA32, Normal had a block of order >= 0"),
        "{text}"
    );
    assert!(text.contains("(below min)"), "{text}");
}

/// Never panics: garbage, cuts of every fixture at many points, bytes
/// flipped, lines shuffled. Bounded so it runs in well under a second.
#[test]
fn never_panics_on_garbage_and_truncations() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for text in ALL {
        let bytes = text.as_bytes();
        for i in 0..40 {
            let cut = usize::try_from(next() % (bytes.len() as u64 + 1)).unwrap();
            let p = parse_bytes(&bytes[..cut]);
            assert!(p.reports.len() <= 3);
            let start = if i % 2 == 0 { cut } else { cut / 2 };
            let _ = parse_bytes(&bytes[start..]);
        }
        for _ in 0..20 {
            let mut b = bytes.to_vec();
            for _ in 0..16 {
                let at = usize::try_from(next() % b.len() as u64).unwrap();
                b[at] = u8::try_from(next() & 0xff).unwrap();
            }
            let _ = parse_bytes(&b);
        }
        let mut lines: Vec<&str> = text.lines().collect();
        for i in (1..lines.len()).rev() {
            let j = usize::try_from(next() % (i as u64 + 1)).unwrap();
            lines.swap(i, j);
        }
        let _ = parse(&lines.join("\n"));
    }
    for _ in 0..200 {
        let len = usize::try_from(next() % 512).unwrap();
        let b: Vec<u8> = (0..len)
            .map(|_| u8::try_from(next() & 0xff).unwrap())
            .collect();
        let _ = parse_bytes(&b);
    }
    // Report-looking lines with hostile content.
    for s in [
        "x: page allocation failure: order:99999999999999999999, mode:0xffffffffffffffffffff\n",
        "x: page allocation failure: order:3, mode:0x(\n",
        ": page allocation failure: order:3, mode:0x20\n",
        "[99999999999999999999.1] a\n",
        "Nov 99 99:99:99 h kernel: x\n",
        "9999-99-99T99:99:99+9999 h kernel: x\n",
        "<\u{e9}\u{e9}\u{e9}>\n[\u{e9}\u{e9}\u{e9}\u{e9}]\n",
    ] {
        let _ = parse(s);
    }
}

#[test]
fn very_long_lines_are_cut_not_buffered_whole() {
    let mut text = String::from("[ 1.0] a: page allocation failure: order:1, mode:0x20\n");
    text.push_str(&"x".repeat(MAX_LINE * 3));
    text.push('\n');
    text.push_str("[ 1.1] Call Trace:\n");
    let mut lines = Vec::new();
    for_each_line(
        std::io::BufReader::with_capacity(4096, text.as_bytes()),
        &mut |l, cut| lines.push((l.len(), cut)),
    )
    .unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1], (MAX_LINE, true));
    assert_eq!(lines[2], (18, false));
    let p = parse(&text);
    assert_eq!(p.reports.len(), 1);
}

#[test]
fn context_and_path_from_the_shared_classifier() {
    let mut an = Analyzer::new(None);
    let labels =
        |a: &analyze::Analysis| -> Vec<String> { a.path.split('+').map(str::to_owned).collect() };
    // 2.6.32: every frame `?`, inside <IRQ>, through __do_softirq and xennet.
    let a = an.analyze(&one(V2632_DMESG));
    assert_eq!(a.context, crate::classify::Context::Softirq);
    assert!(labels(&a).contains(&"xennet".to_owned()), "{}", a.path);
    assert!(labels(&a).contains(&"tcp".to_owned()), "{}", a.path);
    // 3.4: bonding transmit from TCP receive, in softirq.
    let a = an.analyze(&one(V34_KERNLOG));
    assert_eq!(a.context, crate::classify::Context::Softirq);
    assert!(labels(&a).contains(&"bonding".to_owned()), "{}", a.path);
    // 4.9: frames all `?`, ixgbe receive inside <IRQ>.
    let a = an.analyze(&one(V49_JOURNAL));
    assert_eq!(a.context, crate::classify::Context::Softirq);
    assert!(labels(&a).contains(&"ixgbe".to_owned()), "{}", a.path);
    // 6.1 real: connect() syscall, task context, TCP.
    let a = an.analyze(&one(REAL_1));
    assert_eq!(a.context, crate::classify::Context::Task);
    assert!(labels(&a).contains(&"tcp".to_owned()), "{}", a.path);
    // 5.10: a read() of a sysctl, not network.
    let a = an.analyze(&one(V510_JOURNAL_ISO));
    assert_eq!(
        (a.context, a.path.as_str()),
        (crate::classify::Context::Task, "none")
    );
}

#[test]
fn real_reports_get_the_outcome_of_their_call_site() {
    use crate::verdict::Outcome;
    let mut an = Analyzer::new(None);
    // neigh_hash_alloc: the neighbour table keeps its old size.
    let a = an.analyze(&one(REAL_1));
    assert_eq!(a.outcome, Outcome::Fallback, "{}", a.stack);
    // __reuseport_alloc: listen() fails.
    let a = an.analyze(&one(REAL_2));
    assert_eq!(a.outcome, Outcome::Terminal, "{}", a.stack);
}

#[test]
fn irq_markers_refine_the_frames_context() {
    use crate::classify::Context;
    assert_eq!(
        analyze::combine_context(Section::Irq, Context::Task),
        Context::Softirq
    );
    assert_eq!(
        analyze::combine_context(Section::Irq, Context::Hardirq),
        Context::Hardirq
    );
    assert_eq!(
        analyze::combine_context(Section::Softirq, Context::Task),
        Context::Softirq
    );
    assert_eq!(
        analyze::combine_context(Section::Nmi, Context::Task),
        Context::Hardirq
    );
    assert_eq!(
        analyze::combine_context(Section::Task, Context::Task),
        Context::Task
    );
    assert_eq!(
        analyze::combine_context(Section::None, Context::Unknown),
        Context::Unknown
    );
}

#[test]
fn syslog_crossing_new_year_advances_the_year() {
    let text = "Dec 31 23:59:59 h kernel: [ 10.000000] hello\n\
                Jan  1 00:00:01 h kernel: [ 12.000000] a: page allocation failure: order:2, mode:0x20\n";
    let r = one(text);
    assert_eq!(
        r.wall_us.map(crate::timestamp::rfc3339_us).as_deref(),
        Some("2027-01-01T00:00:01Z")
    );
}

#[test]
fn printk_caller_ids_keep_other_cpus_out_of_a_report() {
    // Report 1 with caller ids added, and another CPU's lines in between.
    let mut text = String::new();
    for (i, line) in REAL_1.lines().enumerate() {
        let (stamp, rest) = line.split_at(14);
        text.push_str(&format!("{stamp}[  T177]{rest}\n"));
        if i == 10 {
            text.push_str("[   17.189000][    C0]  ? other_cpu_frame+0x1/0x2\n");
            text.push_str("[   17.189000][    C0] Mem-Info:\n");
        }
    }
    let r = one(&text);
    assert!(!r.partial);
    assert_eq!(r.frames.len(), 39);
    assert!(r.frames.iter().all(|f| f.function != "other_cpu_frame"));
    assert_eq!(zone(&r, "DMA32").free_blocks[0], 11640);
}

#[test]
fn syslog_stamps_later_in_the_year_than_today_are_last_years() {
    let text =
        "Dec  6 10:00:00 h kernel: [ 12.000000] a: page allocation failure: order:2, mode:0x20\n";
    let year_of = |p: Parser| {
        let mut p = p;
        let mut wall = None;
        p.parse_reader(text.as_bytes(), &mut |ev| {
            if let Event::Report(r) = ev {
                wall = r.wall_us.map(crate::timestamp::rfc3339_us);
            }
        })
        .unwrap();
        wall.unwrap_or_default()
    };
    // Read in November 2026: December's stamp is from 2025.
    assert!(year_of(Parser::new(2026).not_after(10)).starts_with("2025-12-06"));
    // Read in December: this year's.
    assert!(year_of(Parser::new(2026).not_after(11)).starts_with("2026-12-06"));
    assert!(year_of(Parser::new(2026)).starts_with("2026-12-06"));
}

#[test]
fn swapper_with_pid_1_is_the_boot_task_not_the_idle_one() {
    let text = |pid: u32| {
        format!(
            "[    4.79] swapper/0: page allocation failure: order:0, mode:0xcc4(GFP_KERNEL|GFP_DMA32), nodemask=(null)\n\
             [    4.80] CPU: 0 PID: {pid} Comm: swapper/0 Not tainted 5.15.68 #1\n\
             [    4.81] Call Trace:\n\
             [    4.82] [<ffffffff800fc00c>] warn_alloc+0xc6/0x138\n\
             [    4.83] [<ffffffff800fca44>] __alloc_pages+0x11e/0x170\n\
             [    4.84] [<ffffffff8005f866>] dma_alloc_attrs+0x70/0x7e\n\
             [    4.85] [<ffffffff80438e42>] ath10k_ce_alloc_src_ring+0x86/0x172\n"
        )
    };
    let context = |pid| Analyzer::new(None).analyze(&one(&text(pid))).context;
    assert_eq!(context(1), crate::classify::Context::Task);
    assert_eq!(context(0), crate::classify::Context::Softirq);
}
