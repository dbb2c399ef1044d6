//! Parsers on the real files of every fixture kernel (expected values read
//! off the files by hand), bad and partial input, the snapshot summary, the
//! rate limiter and the one-line view.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::*;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/proc")
        .join(name)
}

fn text(version: &str, file: &str) -> String {
    std::fs::read_to_string(fixture_dir(version).join(file)).unwrap()
}

pub(super) fn snapshot(name: &str) -> Snapshot {
    Snapshot::read(&Sources::dir(&fixture_dir(name))).unwrap()
}

fn zone<'a>(zones: &'a [ZoneInfo], name: &str) -> &'a ZoneInfo {
    zones.iter().find(|z| z.zone == name).unwrap()
}

#[test]
fn buddyinfo_every_version() {
    let b = buddyinfo::parse(&text("6.18", "buddyinfo")).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!((b[2].node, b[2].zone.as_str()), (0, "Normal"));
    assert_eq!(b[2].free, [3, 2, 1, 85, 47, 96, 56, 41, 24, 25, 26]);
    assert_eq!(b[1].free, [1, 1, 4, 2, 5, 4, 3, 3, 4, 2, 752]);
    assert_eq!(b[0].free, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3]);
    assert_eq!(b[2].largest_free_order(), Some(10));
    assert_eq!(b[2].blocks_at_least(9), 51);
    assert_eq!(b[0].pages_at_least(8), 256 + 512 + 3 * 1024);

    let b = buddyinfo::parse(&text("5.10", "buddyinfo")).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].zone, "DMA");
    assert_eq!(b[0].free, [1, 0, 0, 1, 2, 0, 1, 0, 1, 1, 3]);
    assert_eq!(b[1].free, [13, 8, 7, 6, 6, 9, 5, 7, 5, 5, 42]);

    let b = buddyinfo::parse(&text("6.1", "buddyinfo")).unwrap();
    assert_eq!(b[1].free, [5, 6, 8, 4, 7, 10, 7, 10, 7, 3, 39]);
    assert_eq!(b[0].largest_free_order(), Some(10));

    let b = buddyinfo::parse(&text("6.12", "buddyinfo")).unwrap();
    assert_eq!(b[1].zone, "DMA32");
    assert_eq!(b[1].free, [2, 1, 1, 1, 3, 7, 6, 6, 7, 5, 39]);
    // 45728 pages, against 45720 in zoneinfo: the two files are not read atomically.
    assert_eq!(b[1].pages_at_least(0), 45_728);
}

#[test]
fn zoneinfo_6_18() {
    let z = zoneinfo::parse(&text("6.18", "zoneinfo")).unwrap();
    let names: Vec<&str> = z.iter().map(|z| z.zone.as_str()).collect();
    assert_eq!(names, ["DMA", "DMA32", "Normal", "Movable", "Device"]);
    let dma = zone(&z, "DMA");
    assert_eq!(
        (dma.free, dma.boost, dma.min, dma.low, dma.high, dma.promo),
        (3840, Some(0), 25, 31, 37, Some(43))
    );
    assert_eq!(
        (dma.spanned, dma.present, dma.managed),
        (Some(4095), Some(3998), 3840)
    );
    assert_eq!(dma.protection, [0, 3019, 9931, 9931, 9931]);
    let n = zone(&z, "Normal");
    assert_eq!(
        (n.free, n.min, n.low, n.high),
        (58_932, 11_741, 14_676, 17_611)
    );
    assert_eq!((n.managed, n.spanned), (1_769_472, Some(5_505_024)));
    assert_eq!(n.protection, [0, 0, 0, 0, 0]);
    assert_eq!(n.free_above_min(), 58_932 - 11_741);
    let d32 = zone(&z, "DMA32");
    assert_eq!((d32.free, d32.min, d32.managed), (772_915, 5128, 772_915));
    assert_eq!(d32.protection, [0, 0, 6912, 6912, 6912]);
    let m = zone(&z, "Movable");
    assert_eq!((m.min, m.managed), (32, 0));
    assert!(!m.is_populated());
}

#[test]
fn zoneinfo_older_versions() {
    // 5.10 prints no `boost` and no `promo` line.
    let z = zoneinfo::parse(&text("5.10", "zoneinfo")).unwrap();
    assert_eq!(z.len(), 5);
    let dma = zone(&z, "DMA");
    assert_eq!(
        (dma.free, dma.boost, dma.min, dma.low, dma.high),
        (3945, None, 33, 41, 49)
    );
    assert_eq!(dma.managed, 3977);
    assert_eq!(dma.protection, [0, 198, 198, 198, 198]);
    let d32 = zone(&z, "DMA32");
    assert_eq!(
        (d32.free, d32.min, d32.low, d32.high, d32.managed),
        (48_533, 434, 542, 650, 53_327)
    );
    assert_eq!(d32.promo, None);

    let z = zoneinfo::parse(&text("6.1", "zoneinfo")).unwrap();
    let d32 = zone(&z, "DMA32");
    assert_eq!(
        (d32.free, d32.boost, d32.min, d32.low, d32.high),
        (45_490, Some(0), 427, 533, 639)
    );
    assert_eq!((d32.managed, d32.present), (52_007, Some(61_408)));
    assert_eq!(zone(&z, "DMA").protection, [0, 192, 192, 192, 192]);

    let z = zoneinfo::parse(&text("6.12", "zoneinfo")).unwrap();
    let d32 = zone(&z, "DMA32");
    assert_eq!(
        (d32.free, d32.min, d32.low, d32.high, d32.promo),
        (45_720, 422, 527, 632, Some(737))
    );
    assert_eq!(d32.managed, 50_640);
    assert_eq!(zone(&z, "DMA").protection, [0, 188, 188, 188, 188]);
}

#[test]
fn pagetypeinfo_every_version() {
    let p = pagetypeinfo::parse(&text("6.18", "pagetypeinfo")).unwrap();
    assert_eq!((p.pageblock_order, p.pages_per_block), (9, 512));
    assert_eq!(p.free.len(), 15);
    let unmov = p
        .free
        .iter()
        .find(|f| f.zone == "Normal" && f.migrate_type == "Unmovable")
        .unwrap();
    assert_eq!(unmov.free, [1, 1, 0, 84, 46, 32, 14, 20, 11, 0, 0]);
    assert_eq!(p.blocks_of(0, "Normal", "Unmovable"), Some(92));
    assert_eq!(p.blocks_of(0, "Normal", "Movable"), Some(3243));
    assert_eq!(p.blocks_of(0, "Normal", "HighAtomic"), Some(0));
    assert_eq!(p.blocks_of(0, "DMA32", "Movable"), Some(1528));
    assert_eq!(p.free_pages_of(0, "DMA", "Unmovable"), Some(256));

    let p = pagetypeinfo::parse(&text("5.10", "pagetypeinfo")).unwrap();
    assert_eq!(p.blocks_of(0, "DMA32", "Unmovable"), Some(6));
    assert_eq!(p.blocks_of(0, "DMA32", "Reclaimable"), Some(4));
    let f = p
        .free
        .iter()
        .find(|f| f.zone == "DMA32" && f.migrate_type == "Unmovable")
        .unwrap();
    assert_eq!(f.free, [1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0]);

    let p = pagetypeinfo::parse(&text("6.1", "pagetypeinfo")).unwrap();
    assert_eq!(p.blocks_of(0, "DMA32", "Movable"), Some(106));
    let p = pagetypeinfo::parse(&text("6.12", "pagetypeinfo")).unwrap();
    assert_eq!(p.blocks_of(0, "DMA32", "Unmovable"), Some(10));
    assert_eq!(p.blocks_of(0, "DMA32", "HighAtomic"), Some(0));
}

#[test]
fn pagetypeinfo_reads_capped_counts() {
    let t = "Page block order: 9\nPages per block:  512\n\n\
             Free pages count per migrate type at order       0      1\n\
             Node    0, zone   Normal, type      Movable >100000      3\n\n\
             Number of blocks type     Unmovable      Movable\n\
             Node 0, zone   Normal            1            2\n";
    let p = pagetypeinfo::parse(t).unwrap();
    assert_eq!(p.free[0].free, [100_000, 3]);
}

#[test]
fn vmstat_and_sysctls_every_version() {
    let expect = [
        ("5.10", 52_478, 6352, 1874),
        ("6.1", 49_298, 8953, 1845),
        ("6.12", 49_528, 7322, 1827),
        ("6.18", 835_687, 0, 67_584),
    ];
    for (v, free, dma32, min_free) in expect {
        let s = vmstat::parse(&text(v, "vmstat")).unwrap();
        assert_eq!(s.get("nr_free_pages"), Some(free), "{v}");
        assert_eq!(s.get("pgalloc_dma32"), Some(dma32), "{v}");
        assert_eq!(s.get("compact_stall"), Some(0), "{v}");
        let watched: Vec<&str> = s.watched().iter().map(|(n, _)| *n).collect();
        assert_eq!(watched, vmstat::WATCHED, "{v}");
        let snap = snapshot(v);
        assert_eq!(snap.sysctls.min_free_kbytes, min_free, "{v}");
        assert_eq!(snap.sysctls.watermark_scale_factor, 10, "{v}");
        assert_eq!(snap.sysctls.watermark_boost_factor, Some(15_000), "{v}");
        assert!(snap.pagetype.is_some(), "{v}");
    }
    let s = vmstat::parse(&text("6.18", "vmstat")).unwrap();
    assert_eq!(s.get("pgalloc_normal"), Some(22_317_050));
    assert_eq!(s.get("pgfault"), Some(23_132_026));
}

#[test]
fn vmstat_deltas_and_allocstall_sum() {
    let a = vmstat::parse("allocstall_dma32 1\nallocstall_normal 2\ncompact_stall 5\n").unwrap();
    let b =
        vmstat::parse("allocstall_dma32 4\nallocstall_normal 2\ncompact_stall 9\nnew 3\n").unwrap();
    let d = b.since(&a);
    assert_eq!(d.get("compact_stall"), Some(4));
    assert_eq!(d.get("new"), Some(3));
    assert_eq!(d.watched(), [("allocstall", 3), ("compact_stall", 4)]);
}

#[test]
fn watermarks_follow_the_kernel_formula() {
    // min = pages_min * managed / lowmem; low - min = max(min / 4, managed * wsf / 10000).
    let snap = snapshot("6.18");
    let pages_min = snap.sysctls.min_free_kbytes / snap.page_kb;
    let lowmem = snap.lowmem_pages();
    assert_eq!(lowmem, 3840 + 772_915 + 1_769_472);
    for z in snap.zones.iter().filter(|z| z.is_populated()) {
        assert_eq!(z.min, pages_min * z.managed / lowmem, "{}", z.zone);
        let gap = (z.min / 4).max(z.managed * snap.sysctls.watermark_scale_factor / 10_000);
        assert_eq!(z.low - z.min, gap, "{}", z.zone);
        assert_eq!(z.high - z.low, gap, "{}", z.zone);
    }
}

fn err_text(r: Result<impl std::fmt::Debug, MemoryError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_and_partial_input_is_a_clear_error() {
    let e = err_text(buddyinfo::parse(""));
    assert!(e.contains("/proc/buddyinfo is empty"), "{e}");
    let e = err_text(buddyinfo::parse("hello world\n"));
    assert!(
        e.contains("/proc/buddyinfo line 1") && e.contains("Node N, zone"),
        "{e}"
    );
    let e = err_text(buddyinfo::parse("Node 0, zone DMA 1 2 x 4\n"));
    assert!(e.contains("`x` is not a number"), "{e}");
    // Truncated: the last line lost its tail.
    let full = text("6.18", "buddyinfo");
    let cut = &full[..full.len() - 20];
    let e = err_text(buddyinfo::parse(cut));
    assert!(e.contains("line 3") && e.contains("truncated"), "{e}");
    let e = err_text(buddyinfo::parse("Node 0, zone Normal\n"));
    assert!(e.contains("no free counts"), "{e}");

    let e = err_text(zoneinfo::parse(""));
    assert!(e.contains("/proc/zoneinfo is empty"), "{e}");
    let e = err_text(zoneinfo::parse("  pages free 3\n"));
    assert!(e.contains("before the first `Node N, zone NAME`"), "{e}");
    // Truncated in the middle of the Normal zone, before its watermarks.
    let full = text("6.18", "zoneinfo");
    let at = full.find("Node 0, zone   Normal").unwrap();
    let cut = &full[..at + "Node 0, zone   Normal\n  pages free     58932\n".len()];
    let e = err_text(zoneinfo::parse(cut));
    assert!(e.contains("zone Normal of node 0 has no `min` line"), "{e}");
    let e = err_text(zoneinfo::parse(
        "Node 0, zone DMA\n  pages free 12\n  min lots\n",
    ));
    assert!(
        e.contains("line 3") && e.contains("`lots` is not a number"),
        "{e}"
    );
    let e = err_text(zoneinfo::parse(
        "Node 0, zone DMA\n pages free 1\n min 1\n low 1\n high 1\n managed 1\n protection: 0, 1\n",
    ));
    assert!(e.contains("protection is not"), "{e}");
    let e = err_text(zoneinfo::parse("\u{0}\u{1}garbage\n"));
    assert!(e.contains("/proc/zoneinfo line 1"), "{e}");

    let e = err_text(pagetypeinfo::parse(""));
    assert!(e.contains("empty"), "{e}");
    let full = text("6.18", "pagetypeinfo");
    let cut = &full[..full.find("Number of blocks").unwrap()];
    let e = err_text(pagetypeinfo::parse(cut));
    assert!(e.contains("truncated"), "{e}");
    let e = err_text(pagetypeinfo::parse("random text\n"));
    assert!(e.contains("unexpected line"), "{e}");

    let e = err_text(vmstat::parse(""));
    assert!(e.contains("/proc/vmstat is empty"), "{e}");
    let e = err_text(vmstat::parse("nr_free_pages 12\npgfault\n"));
    assert!(
        e.contains("line 2") && e.contains("expected `name value`"),
        "{e}"
    );
    let e = err_text(vmstat::parse("nr_free_pages -3\n"));
    assert!(e.contains("`-3` is not a number"), "{e}");

    let e = err_text(sysctls::parse_value("vm.min_free_kbytes", "\n"));
    assert!(e.contains("vm.min_free_kbytes is empty"), "{e}");
    let e = err_text(sysctls::parse_value("vm.min_free_kbytes", "lots"));
    assert!(e.contains("`lots` is not a number"), "{e}");
    let e = err_text(sysctls::parse_value("vm.min_free_kbytes", "1\n2\n"));
    assert!(e.contains("single number"), "{e}");
}

#[test]
fn snapshot_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("pagefail-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "buddyinfo",
        "zoneinfo",
        "vmstat",
        "min_free_kbytes",
        "watermark_scale_factor",
    ] {
        std::fs::copy(fixture_dir("6.1").join(f), dir.join(f)).unwrap();
    }
    // No pagetypeinfo (unreadable for non-root): a note, not an error.
    let snap = Snapshot::read(&Sources::dir(&dir)).unwrap();
    assert!(snap.pagetype.is_none());
    assert!(
        snap.pagetype_note
            .as_deref()
            .unwrap()
            .contains("pagetypeinfo")
    );
    assert_eq!(snap.sysctls.watermark_boost_factor, None);
    // A buddyinfo zone that zoneinfo lacks.
    std::fs::write(dir.join("buddyinfo"), "Node 1, zone Normal 1 2 3\n").unwrap();
    let e = Snapshot::read(&Sources::dir(&dir)).unwrap_err().to_string();
    assert!(
        e.contains("zone Normal of node 1 is missing from zoneinfo"),
        "{e}"
    );
    std::fs::remove_file(dir.join("vmstat")).unwrap();
    let e = Snapshot::read(&Sources::dir(&dir)).unwrap_err().to_string();
    assert!(e.contains("cannot read") && e.contains("vmstat"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn summaries_per_populated_zone() {
    let snap = snapshot("6.18");
    let s = snap.summaries();
    assert_eq!(s.len(), 3, "Movable and Device have no managed pages");
    let n = s.iter().find(|s| s.zone == "Normal").unwrap();
    assert_eq!(
        (n.free, n.min, n.free_above_min),
        (58_932, 11_741, 58_932 - 11_741)
    );
    assert_eq!(n.largest_free_order, Some(10));
    assert_eq!(n.free_blocks, "3 2 1 85 47 96 56 41 24 25 26");
    assert_eq!(n.highatomic_blocks, Some(0));
    assert_eq!((n.min_free_kbytes, n.watermark_scale_factor), (67_584, 10));
    let frag = snapshot("advice-fragmented");
    let d = frag
        .summaries()
        .into_iter()
        .find(|s| s.zone == "DMA32")
        .unwrap();
    assert_eq!(d.largest_free_order, Some(1));
}

#[test]
fn key_zone_is_the_highest_kernel_zone() {
    assert_eq!(snapshot("6.18").key_zone().unwrap().zone, "Normal");
    // The 256 MB guests have an empty Normal zone.
    assert_eq!(snapshot("6.1").key_zone().unwrap().zone, "DMA32");
    assert_eq!(snapshot("5.10").key_zone().unwrap().zone, "DMA32");
}

#[test]
fn limiter_takes_the_first_of_a_burst_then_one_per_second() {
    let mut l = SnapshotLimiter::default();
    let t0 = Instant::now();
    assert!(
        l.on_failure(t0),
        "the first failure of a burst takes a snapshot"
    );
    assert!(!l.on_failure(t0 + Duration::from_millis(10)));
    assert!(!l.on_failure(t0 + Duration::from_millis(999)));
    assert!(l.on_failure(t0 + Duration::from_secs(1)));
    assert!(!l.on_failure(t0 + Duration::from_millis(1500)));
    assert!(
        l.on_failure(t0 + Duration::from_mins(1)),
        "a new burst after quiet"
    );
    assert_eq!(l.suppressed, 3);
}

#[test]
fn one_line_shows_the_key_zone() {
    let line = one_line(&snapshot("6.18"), 3);
    assert_eq!(
        line,
        "memory node0 Normal: free 230.2 MiB (184.3 MiB above min, min 45.9 MiB); order>=3 blocks 400; \
         free o0:3 o1:2 o2:1 o3:85 o4:47 o5:96 o6:56 o7:41 o8:24 o9:25 o10:26"
    );
    let line = one_line(&snapshot("advice-exhausted"), 3);
    assert!(
        line.starts_with("memory node0 DMA32: free 1920 KiB (212 KiB above min"),
        "{line}"
    );
    assert!(line.contains("order>=3 blocks 0"), "{line}");
}

#[test]
fn memory_csv_has_the_documented_columns() {
    let rows = snapshot("6.18").summaries();
    let mut buf = Vec::new();
    crate::export::memory::write_memory_csv(&mut buf, &rows, true).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(
        crate::export::memory::read_memory_csv("m.csv", text.as_bytes()).unwrap(),
        rows,
        "the reader reads what the writer wrote"
    );
    let appended: String = text.lines().flat_map(|l| [l, ",later\n"]).collect();
    assert_eq!(
        crate::export::memory::read_memory_csv("m.csv", appended.as_bytes()).unwrap(),
        rows,
        "a column appended later is ignored"
    );
    let e = crate::export::memory::read_memory_csv("x.csv", "a,b\n1,2\n".as_bytes()).unwrap_err();
    assert!(
        e.to_string().contains("x.csv: not a pagefail memory CSV"),
        "{e}"
    );
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        crate::export::memory::MEMORY_CSV_HEADER.join(",")
    );
    let normal = lines.find(|l| l.contains(",Normal,")).unwrap();
    let cols: Vec<&str> = normal.split(',').collect();
    assert_eq!(cols.len(), crate::export::memory::MEMORY_CSV_HEADER.len());
    assert_eq!(
        &cols[1..],
        [
            "0",
            "Normal",
            "1769472",
            "58932",
            "11741",
            "14676",
            "17611",
            "0",
            "47191",
            "10",
            "3 2 1 85 47 96 56 41 24 25 26",
            "0",
            "67584",
            "10"
        ]
    );
    // Unknown values are empty cells.
    let mut snap = snapshot("6.1");
    snap.pagetype = None;
    let mut buf = Vec::new();
    crate::export::memory::write_memory_csv(&mut buf, &snap.summaries(), false).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(!text.starts_with("taken"));
    assert!(
        text.lines().all(|l| l.split(',').nth(12) == Some("")),
        "{text}"
    );

    let mut buf = Vec::new();
    crate::export::memory::write_memory_json_lines(&mut buf, &rows).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8(buf).unwrap().lines().nth(2).unwrap()).unwrap();
    assert_eq!(v["zone"], "Normal");
    assert_eq!(v["free_above_min"], 47_191);
    for key in crate::export::memory::MEMORY_CSV_HEADER {
        assert!(v.get(key).is_some(), "{key}");
    }
}

#[test]
fn net_drops_parse_and_subtract() {
    let softnet = "0000000f 00000002 00000000\n00003faf 00000010 00000001\n";
    let netstat = "TcpExt: ListenOverflows ListenDrops TCPBacklogDrop\nTcpExt: 1 2 3\n\
                   IpExt: InNoRoutes\nIpExt: 0\n";
    let d = NetDrops::parse(softnet, netstat).unwrap();
    assert_eq!(d.softnet_dropped, 0x12);
    assert_eq!(
        (d.listen_overflows, d.listen_drops, d.backlog_drops),
        (Some(1), Some(2), Some(3))
    );
    let later = NetDrops::parse(
        "0 20\n",
        "TcpExt: ListenDrops TCPBacklogDrop\nTcpExt: 7 3\n",
    )
    .unwrap();
    let delta = later.since(&d);
    assert_eq!(
        (
            delta.softnet_dropped,
            delta.listen_drops,
            delta.backlog_drops
        ),
        (0x0e, Some(5), Some(0))
    );
    assert_eq!(delta.total(), 0x0e + 5);
    assert!(
        NetDrops::parse("zz\n", "")
            .unwrap_err()
            .to_string()
            .contains("fewer than two columns")
    );
    assert!(
        NetDrops::parse("", "TcpExt: A B\n")
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
}
