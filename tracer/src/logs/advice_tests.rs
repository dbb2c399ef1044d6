//! Advice from the memory a report printed: real reports of 2.6, 3.x, 4.x
//! and 6.x (tests/fixtures/logs/meminfo/SOURCES.md, and the 6.1 guest's
//! dmesg), plus the hand-written 3.4 report. Expected numbers were read off
//! the fixture files.

use super::*;
use crate::{
    logs::{Event, Parser, analyze::Analyzer},
    memory::advice::Cause,
};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/logs/", $name))
    };
}

const V2628_LKML: &str = fixture!("meminfo/v2.6.28-lkml-bug14403.txt");
const V32_LKML: &str = fixture!("meminfo/v3.2-linux-mm-debian-numa.txt");
const V48_LKML: &str = fixture!("meminfo/v4.8-linux-mm-highatomic.txt");
const V61_GUEST: &str = fixture!("dmesg-01-neigh_hash-tcp_connect-bond0.txt");
const V34_HAND: &str = fixture!("v3.4-kern.log");

fn judge(text: &str) -> Vec<GroupAdvice> {
    let mut analyzer = Analyzer::new(None);
    let mut summary = Summary::new();
    let mut advice = LogAdvice::new();
    let mut parser = Parser::new(2026);
    parser
        .parse_reader(text.as_bytes(), &mut |ev| {
            if let Event::Report(r) = ev {
                let a = analyzer.analyze(&r);
                summary.add_report(&r, &a);
                advice.add(&r, &a, "kern.log");
            }
        })
        .unwrap();
    advice.advise(&summary.rows())
}

fn one(text: &str) -> (GroupAdvice, Advice) {
    let groups = judge(text);
    assert_eq!(groups.len(), 1, "{groups:?}");
    let g = groups.into_iter().next().unwrap();
    let a = g.advice.clone().expect("advice from the report's Mem-Info");
    (g, a)
}

fn recorded(a: &Advice) -> &advice::Recorded {
    match &a.source {
        Source::Report(r) => r,
        Source::Live => panic!("judged against this machine"),
    }
}

#[test]
fn v2_6_28_below_min_with_blocks_of_the_order_is_exhaustion() {
    let (g, a) = one(V2628_LKML);
    assert_eq!((g.order, g.kernel.as_str()), (1, "2.6.28.10-v3500-1"));
    assert_eq!(g.one_by_one.get(&Cause::Exhaustion), Some(&1));
    let f = &a.findings[0];
    assert_eq!(f.cause, Cause::Exhaustion);
    // DMA32 free 2128 kB under min 5712 kB, yet 6+4+8+1+1+1 = 21 blocks of order >= 1.
    assert!(
        f.explanation
            .contains("node0 DMA32: free 2128 KiB, min 5712 KiB, low 7140 KiB, high 8568 KiB; 21 free blocks of order >= 1"),
        "{}",
        f.explanation
    );
    let r = &a.recommendations[0];
    assert_eq!(r.zone, "node0 DMA32");
    assert!(
        r.watermark_scale_factor.is_none(),
        "no such sysctl before 4.6"
    );
    // DMA min 24 kB + DMA32 min 5712 kB.
    assert_eq!(r.min_free_kbytes.current, Some(5736));
    let rec = recorded(&a);
    assert_eq!(rec.min_free_kbytes, Some(5736));
    assert_eq!(rec.watermark_scale_factor, None);
    let text = a.to_text();
    assert!(
        text.contains("does not exist on this kernel (before 4.6)"),
        "{text}"
    );
    assert!(
        a.cautions
            .iter()
            .any(|c| c.contains("present pages stand in")),
        "{:?}",
        a.cautions
    );
    assert!(text.contains("65536] KiB on that kernel"), "{text}");
}

#[test]
fn v6_1_free_memory_without_blocks_is_fragmentation() {
    let (g, a) = one(V61_GUEST);
    assert_eq!(g.one_by_one.get(&Cause::Fragmentation), Some(&1));
    let f = &a.findings[0];
    assert_eq!((f.order, f.cause), (1, Cause::Fragmentation));
    assert!(
        f.explanation.contains(
            "node0 DMA32: free 45.5 MiB, min 5668 KiB, low 6104 KiB, high 6540 KiB; 0 free blocks of order >= 1"
        ),
        "{}",
        f.explanation
    );
    let rec = recorded(&a);
    // Boost taken out of DMA32's min: (5668 - 3924) + DMA's 128.
    assert_eq!(rec.min_free_kbytes, Some(1872));
    // The gap is min/4: the factor cannot be read off it.
    assert_eq!(rec.watermark_scale_factor, None);
    assert!(
        rec.unknown
            .iter()
            .any(|u| u.contains("hides any factor up to 21")),
        "{:?}",
        rec.unknown
    );
    let r = &a.recommendations[0];
    let wsf = r
        .watermark_scale_factor
        .as_ref()
        .expect("6.1 has the sysctl");
    assert_eq!(wsf.current, None);
    assert!(a.to_text().contains("vm.watermark_scale_factor = unknown"));
}

#[test]
fn v4_8_room_in_the_zone_is_not_explained_and_the_factor_is_read_off_the_gap() {
    let (g, a) = one(V48_LKML);
    assert_eq!(g.kernel, "4.8.0-rc7-00217-g266ef83c51e5-dirty");
    assert_eq!(a.findings[0].cause, Cause::NotExplainedNow);
    assert!(a.recommendations.is_empty());
    let e = &a.findings[0].explanation;
    assert!(
        e.contains("node0 DMA32: free 29.4 MiB, min 5628 KiB, low 7624 KiB, high 9620 KiB"),
        "{e}"
    );
    assert!(
        e.contains("the report's memory state does not explain it"),
        "{e}"
    );
    assert!(
        a.verdict
            .contains("not explained by the memory state at the report")
    );
    // DMA32: gap 499 pages of 507533 managed, above min/4 (351): factor 10.
    assert_eq!(recorded(&a).watermark_scale_factor, Some(10));
    assert_eq!(recorded(&a).min_free_kbytes, Some(44 + 5628));
}

#[test]
fn v3_4_hand_written_order_4_without_blocks_is_fragmentation() {
    let (g, a) = one(V34_HAND);
    assert_eq!((g.order, g.host.as_str()), (4, "web3"));
    assert_eq!(a.findings[0].cause, Cause::Fragmentation);
    assert!(
        a.findings[0]
            .explanation
            .contains("node0 Normal: free 21.7 MiB, min 13.3 MiB, low 16.7 MiB"),
        "{}",
        a.findings[0].explanation
    );
    assert_eq!(a.recommendations[0].zone, "node0 Normal");
    assert!(a.recommendations[0].watermark_scale_factor.is_none());
}

#[test]
fn reports_without_mem_info_are_not_judged() {
    let cut: String = V2628_LKML
        .lines()
        .take_while(|l| !l.starts_with("Mem-Info"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let groups = judge(&cut);
    assert_eq!(groups.len(), 1);
    assert!(groups[0].advice.is_none());
    assert!(
        groups[0]
            .unknown
            .as_deref()
            .unwrap()
            .starts_with("cannot judge the memory: none of the 1 report(s) printed a Mem-Info")
    );
    let text = render_advice(&groups, 0, 0, true);
    assert!(text.contains("cannot judge the memory"), "{text}");
}

#[test]
fn the_summary_verdict_and_the_full_advice() {
    let groups = judge(&format!("{V2628_LKML}{V61_GUEST}"));
    assert_eq!(groups.len(), 2);
    let short = render_advice(&groups, 0, 7, false);
    assert!(short.contains("order 1 (kernel 2.6.28.10-v3500-1): 1 report(s), 1 with Mem-Info; each judged against its own: 1 exhaustion"), "{short}");
    assert!(
        short.contains("verdict: fragmentation: free memory but too few blocks"),
        "{short}"
    );
    assert!(!short.contains("vm.min_free_kbytes ="), "{short}");
    assert!(
        short.contains("the kernel hid 7 more failure(s)"),
        "{short}"
    );
    let full = render_advice(&groups, 0, 0, true);
    assert!(full.contains("vm.min_free_kbytes = 5736 (keep)"), "{full}");
    assert!(
        full.contains("EXHAUSTION") && full.contains("FRAGMENTATION"),
        "{full}"
    );
}

#[test]
fn v3_2_blocks_of_the_order_too_few_for_the_old_per_order_check_is_fragmentation() {
    let (g, a) = one(V32_LKML);
    assert_eq!((g.order, g.kernel.as_str()), (1, "3.2.0-0.bpo.1-amd64"));
    let f = &a.findings[0];
    assert_eq!(f.cause, Cause::Fragmentation);
    // Two nodes: node0 Normal is the one closest to its min.
    assert!(
        f.explanation.contains(
            "node0 Normal: free 52.1 MiB, min 41.6 MiB, low 52.0 MiB, high 62.4 MiB; 18 free blocks of order >= 1"
        ),
        "{}",
        f.explanation
    );
    // 13332 free pages - 1 - 12305 of order 0 = 1026 pages; min 10648 pages
    // -1/2 (__GFP_HIGH) -1/4 (atomic) = 3993, halved once = 1996 pages.
    assert!(
        f.explanation
            .contains("the free blocks of order >= 1 held only 4104 KiB, not above 7984 KiB"),
        "{}",
        f.explanation
    );
    // min_free_kbytes is spread over every lowmem zone of both nodes.
    assert_eq!(recorded(&a).min_free_kbytes, Some(8 + 2444 + 42592 + 45056));
    assert_eq!(a.recommendations[0].zone, "node0 Normal");
}
