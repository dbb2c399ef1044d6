//! Advice: why the observed failures happened, and which sysctl values (if
//! any) would have kept a reserve of blocks of the failing order.
//!
//! Plain functions of (summary rows, memory snapshot, packet drops), so every
//! rule is unit-tested without root. The rules, in order:
//!
//! 1. **memcg limit**: gfp has `__GFP_ACCOUNT` or the stack goes through memcg
//!    charging, while the key zone is above its high watermark and has a free
//!    block of the order: the page allocator could have served it; the
//!    cgroup's limit refused it. No sysctl helps.
//! 2. **expected, with a fallback**: `__GFP_NOWARN`, or an opportunistic
//!    high-order `__GFP_NORETRY` try, or a `kvmalloc` (falls back to vmalloc):
//!    the caller asked not to be warned because it copes. No change needed.
//! 3. **exhaustion**: free pages at or below the low watermark: kswapd is
//!    behind, atomic requests live on the reserve under min.
//! 4. **fragmentation**: free pages above the low watermark but no free block
//!    of the order.
//! 5. otherwise **not explained by the state now** (a transient burst).
//!
//! Watermark arithmetic follows `__setup_per_zone_wmarks` and
//! `__zone_watermark_ok` in `mm/page_alloc.c`
//! (<https://elixir.bootlin.com/linux/v6.18/source/mm/page_alloc.c>):
//! a zone's min is `min_free_kbytes` (in pages) times its share of lowmem;
//! `low - min = high - low = max(min / 4, managed * watermark_scale_factor / 10000)`;
//! `__GFP_HIGH` may take half of min, a non-blocking `GFP_ATOMIC` a further
//! quarter of the rest (down to 3/8 of min); requests without `__GFP_HIGH`
//! (`GFP_NOWAIT`) may not go below min at all.

use serde::Serialize;

use super::{NetDrops, Snapshot, ZoneInfo, pages_text};
use crate::{export::SummaryRow, gfp::GfpSemantics, timestamp};

/// Lower clamp of the boot-time default `min_free_kbytes`.
pub const MIN_FREE_KBYTES_DEFAULT_FLOOR: u64 = 128;
/// Upper clamp of the boot-time default since Linux 5.7 (65536 before).
/// Writes by the user are not capped by the kernel.
pub const MIN_FREE_KBYTES_DEFAULT_CEILING: u64 = 262_144;
/// `vm.watermark_scale_factor` accepted range (the maximum was 1000 before
/// about 5.18), in units of 0.01% of a zone's memory.
pub const WATERMARK_SCALE_FACTOR_MIN: u64 = 1;
pub const WATERMARK_SCALE_FACTOR_MAX: u64 = 3000;
/// pagefail never advises more than this share of lowmem for `min_free_kbytes`
/// (khugepaged caps its own raise of `min_free_kbytes` at 5% of lowmem too).
pub const ADVISED_MAX_PERCENT: u64 = 5;

/// The kernel's boot-time default: `int_sqrt(lowmem_kb * 16)` = 4 * sqrt(lowmem kB),
/// clamped to [128, 262144] (`calculate_min_free_kbytes`). khugepaged raises
/// it further when transparent huge pages are enabled.
#[must_use]
pub fn default_min_free_kbytes(lowmem_kb: u64) -> u64 {
    lowmem_kb.saturating_mul(16).isqrt().clamp(
        MIN_FREE_KBYTES_DEFAULT_FLOOR,
        MIN_FREE_KBYTES_DEFAULT_CEILING,
    )
}

/// `vm.watermark_scale_factor` appeared in Linux 4.6.
const WSF_SINCE: (u32, u32) = (4, 6);
/// Before about Linux 5.18 the sysctl accepted at most 1000.
const WSF_MAX_BEFORE_5_18: u64 = 1000;

/// Where the memory state the advice judges came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Read from `/proc` on this machine (now, or at the end of a sample).
    Live,
    /// Printed by the kernel with a failure report (`Mem-Info:`).
    Report(Recorded),
}

/// What a report's `Mem-Info:` told, and what it did not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// Which report: `2026-11-22T03:00:05Z, line 4 of kern.log`.
    pub at: String,
    pub host: Option<String>,
    /// The report's kernel release (or `--kernel`).
    pub kernel: Option<String>,
    /// `vm.min_free_kbytes` derived from the lowmem zones' min watermarks
    /// (the kernel does not print it).
    pub min_free_kbytes: Option<u64>,
    /// `vm.watermark_scale_factor` derived from a zone's low-min gap, when
    /// the gap shows it (not when min/4 dominates, nor before 4.6).
    pub watermark_scale_factor: Option<u64>,
    /// What the report does not tell, one sentence each.
    pub unknown: Vec<String>,
}

impl Source {
    fn recorded(&self) -> Option<&Recorded> {
        match self {
            Self::Live => None,
            Self::Report(r) => Some(r),
        }
    }

    fn version(&self) -> Option<crate::kernel_version::KernelVersion> {
        self.recorded()
            .and_then(|r| r.kernel.as_deref())
            .and_then(crate::kernel_version::KernelVersion::parse)
    }

    /// `Some(false)` when the report's kernel predates the sysctl, `None`
    /// when its kernel is unknown.
    fn has_scale_factor(&self) -> Option<bool> {
        match self {
            Self::Live => Some(true),
            Self::Report(_) => self.version().map(|v| v.at_least(WSF_SINCE.0, WSF_SINCE.1)),
        }
    }

    fn scale_factor_max(&self) -> u64 {
        match self {
            Self::Live => WATERMARK_SCALE_FACTOR_MAX,
            Self::Report(_) => match self.version() {
                Some(v) if v.at_least(5, 18) => WATERMARK_SCALE_FACTOR_MAX,
                _ => WSF_MAX_BEFORE_5_18,
            },
        }
    }

    fn scale_factor_now(&self, snap: &Snapshot) -> Option<u64> {
        match self {
            Self::Live => Some(snap.sysctls.watermark_scale_factor),
            Self::Report(r) => r.watermark_scale_factor,
        }
    }

    fn min_free_now(&self, snap: &Snapshot) -> Option<u64> {
        match self {
            Self::Live => Some(snap.sysctls.min_free_kbytes),
            Self::Report(r) => r.min_free_kbytes,
        }
    }

    /// "now" or "at the report".
    fn when(&self) -> &'static str {
        match self {
            Self::Live => "now",
            Self::Report(_) => "at the report",
        }
    }
}

/// Why failures happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    MemcgLimit,
    ExpectedFallback,
    Exhaustion,
    Fragmentation,
    NotExplainedNow,
}

impl Cause {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MemcgLimit => "memcg limit",
            Self::ExpectedFallback => "expected (caller has a fallback)",
            Self::Exhaustion => "exhaustion",
            Self::Fragmentation => "fragmentation",
            Self::NotExplainedNow => "not explained by the memory state",
        }
    }
}

/// The gfp facts of a row: its flag names joined with its hex mask decoded
/// for its kernel ([`GfpSemantics::of_printed`]).
fn semantics_of(row: &SummaryRow) -> GfpSemantics {
    GfpSemantics::of_printed(&row.gfp_flags, &row.gfp, &row.kernel)
}

/// Stack frames that mean memcg charging.
const MEMCG_FRAMES: [&str; 4] = ["memcg", "mem_cgroup", "obj_cgroup", "try_charge"];

fn frames(row: &SummaryRow) -> impl Iterator<Item = &str> {
    row.top_stack.split(';').filter(|f| !f.is_empty())
}

fn memcg_stack(row: &SummaryRow) -> bool {
    frames(row).any(|f| MEMCG_FRAMES.iter().any(|m| f.contains(m)))
}

fn kvmalloc_stack(row: &SummaryRow) -> bool {
    frames(row).any(|f| f.contains("kvmalloc"))
}

/// What the rules found for one (order, cause).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub order: u32,
    pub cause: Cause,
    pub failures: u64,
    pub rows: usize,
    /// Up to three `comm[pid] order N gfp: caller <- caller` lines.
    pub examples: Vec<String>,
    pub explanation: String,
}

/// A sysctl value that would have kept a reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub name: &'static str,
    /// `None` when the value is unknown (a kernel log does not print it).
    pub current: Option<u64>,
    /// Equal to `current` when no change is advised.
    pub suggested: u64,
    /// Extra memory kept free by the change, KiB.
    pub cost_kb: u64,
    /// The demand needed more than pagefail's bound; `suggested` is the bound.
    pub capped: bool,
    pub note: String,
}

/// Values for one order that failed from exhaustion or fragmentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    pub order: u32,
    pub cause: Cause,
    /// `node0 Normal`.
    pub zone: String,
    /// Peak failures per second of this order (at least 1).
    pub blocks_per_second: u64,
    /// Pages the reserve must hold: blocks per second times `2^order`.
    pub demand_pages: u64,
    /// `None` where the sysctl does not exist (kernels before 4.6).
    pub watermark_scale_factor: Option<Setting>,
    pub min_free_kbytes: Setting,
}

/// The whole advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// The memory state judged: this machine's, or a report's.
    pub source: Source,
    pub findings: Vec<Finding>,
    pub recommendations: Vec<Recommendation>,
    pub cautions: Vec<String>,
    /// Packet drops over the window, when measured live.
    pub drops: Option<NetDrops>,
    /// One sentence.
    pub verdict: String,
}

/// Peak failures per second of a group: failures over their seen span (at
/// least one second), else over the window, else per second as is.
fn blocks_per_second(rows: &[&SummaryRow]) -> u64 {
    let failures: u64 = rows.iter().map(|r| r.failures).sum();
    let span = |start: fn(&SummaryRow) -> &str, end: fn(&SummaryRow) -> &str| {
        let first = rows
            .iter()
            .filter_map(|r| timestamp::parse(start(r)))
            .min()?;
        let last = rows.iter().filter_map(|r| timestamp::parse(end(r))).max()?;
        last.duration_since(first).ok()
    };
    let secs = span(|r| &r.first_seen, |r| &r.last_seen)
        .or_else(|| span(|r| &r.window_start, |r| &r.window_end))
        .map_or(1.0, |d| d.as_secs_f64().max(1.0));
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative rate far below 2^64; `as` saturates"
    )]
    let rate = (failures as f64 / secs).ceil() as u64;
    rate.max(1)
}

fn example(row: &SummaryRow, order: u32) -> String {
    let callers: Vec<&str> = row.top_stack.rsplit(';').take(3).collect();
    format!(
        "{}[{}] order {} {} ({} failures): {}",
        row.comm,
        row.pid,
        order,
        row.gfp_flags,
        row.failures,
        if callers.is_empty() || callers == [""] {
            "no stack".to_owned()
        } else {
            callers.join(" <- ")
        }
    )
}

fn zone_label(z: &ZoneInfo) -> String {
    format!("node{} {}", z.node, z.zone)
}

/// Whether the key zone could serve an order-`order` request: above the
/// high watermark with a free block of that order.
fn zone_has_room(snap: &Snapshot, z: &ZoneInfo, order: u32) -> bool {
    z.free > z.high
        && snap
            .buddy_of(z.node, &z.zone)
            .is_some_and(|b| b.blocks_at_least(order) > 0)
}

/// The cause of one row's failures given the memory state `snap` (this
/// machine's or a report's): the rules of the module documentation.
#[must_use]
pub fn cause_of(row: &SummaryRow, order: u32, snap: &Snapshot, source: &Source) -> Cause {
    classify(row, order, snap, source, snap.key_zone())
}

/// Kernels before 4.4 checked high-order watermarks per order
/// (`__zone_watermark_ok`): after the atomic allowances, the free pages in
/// blocks of order >= o had to exceed `min >> o` for each `o` up to the
/// request's order. `Some((o, pages in blocks >= o, min >> o))` for the
/// first order `o` where that check fails.
fn old_high_order_shortfall(
    z: &ZoneInfo,
    blocks: &super::BuddyZone,
    order: u32,
    marks: GfpSemantics,
) -> Option<(u32, u64, u64)> {
    let mut min = z.min;
    if marks.high {
        min -= min / 2;
        if !marks.direct_reclaim {
            min -= min / 4;
        }
    }
    let mut free = z.free.saturating_sub((1 << order.min(20)) - 1);
    for o in 0..order.min(20) {
        let in_order = blocks
            .free
            .get(o as usize)
            .copied()
            .unwrap_or(0)
            .saturating_mul(1 << o);
        free = free.saturating_sub(in_order);
        min >>= 1;
        if free <= min {
            return Some((o + 1, free, min));
        }
    }
    None
}

/// Whether the per-order check of kernels before 4.4 applies to `source`.
fn per_order_watermarks(source: &Source) -> bool {
    source.version().is_some_and(|v| !v.at_least(4, 4))
}

fn classify(
    row: &SummaryRow,
    order: u32,
    snap: &Snapshot,
    source: &Source,
    key: Option<&ZoneInfo>,
) -> Cause {
    let m = semantics_of(row);
    let memcg = m.account || memcg_stack(row);
    if memcg && key.is_some_and(|z| zone_has_room(snap, z, order)) {
        return Cause::MemcgLimit;
    }
    if m.nowarn || (m.noretry && order > 0) || kvmalloc_stack(row) {
        return Cause::ExpectedFallback;
    }
    let Some(z) = key else {
        return Cause::NotExplainedNow;
    };
    if z.free <= z.low {
        return Cause::Exhaustion;
    }
    // Without free blocks per order (a report whose buddy lines were cut)
    // fragmentation cannot be told.
    match snap.buddy_of(z.node, &z.zone) {
        Some(b) if b.blocks_at_least(order) == 0 => Cause::Fragmentation,
        Some(b)
            if per_order_watermarks(source)
                && old_high_order_shortfall(z, b, order, m).is_some() =>
        {
            Cause::Fragmentation
        }
        _ => Cause::NotExplainedNow,
    }
}

fn explanation(
    cause: Cause,
    order: u32,
    snap: &Snapshot,
    source: &Source,
    key: Option<&ZoneInfo>,
    rows: &[&SummaryRow],
) -> String {
    let kb = snap.page_kb;
    let state = key.map_or_else(String::new, |z| {
        let blocks = snap.buddy_of(z.node, &z.zone).map_or_else(
            || "free blocks per order not printed".to_owned(),
            |b| {
                format!(
                    "{} free blocks of order >= {order}",
                    b.blocks_at_least(order)
                )
            },
        );
        format!(
            " ({}: free {}, min {}, low {}, high {}; {blocks})",
            zone_label(z),
            pages_text(z.free, kb),
            pages_text(z.min, kb),
            pages_text(z.low, kb),
            pages_text(z.high, kb),
        )
    });
    let log = matches!(source, Source::Report(_));
    let (is, has) = if log { ("was", "had") } else { ("is", "has") };
    match cause {
        Cause::MemcgLimit => format!(
            "the memory cgroup's limit refused the charge: the zone {has} free memory far above its \
             watermarks and blocks of this order{state}. No sysctl change helps; raise the \
             cgroup's memory limit (memory.max / memory.limit_in_bytes) or reduce its usage."
        ),
        Cause::ExpectedFallback => {
            "the caller asked not to be warned (__GFP_NOWARN, an opportunistic \
             __GFP_NORETRY high-order try, or kvmalloc's vmalloc fallback) and falls back to a \
             smaller or virtually contiguous allocation: no change needed unless packet drops \
             line up with them."
                .to_owned()
        }
        Cause::Exhaustion => format!(
            "free memory {is} at or below the low watermark{state}: kswapd could not keep up and \
             atomic requests were living on the reserve below min."
        ),
        Cause::Fragmentation => {
            // Blocks existed: the per-order check of kernels before 4.4 refused them.
            let shortfall = key.filter(|_| per_order_watermarks(source)).and_then(|z| {
                let b = snap.buddy_of(z.node, &z.zone)?;
                let marks = GfpSemantics {
                    high: rows.iter().all(|r| semantics_of(r).high),
                    direct_reclaim: rows.iter().any(|r| semantics_of(r).direct_reclaim),
                    ..GfpSemantics::default()
                };
                (b.blocks_at_least(order) > 0)
                    .then(|| old_high_order_shortfall(z, b, order, marks))
                    .flatten()
            });
            match shortfall {
                Some((o, pages, needed)) => format!(
                    "free memory {is} above the low watermark{state}, but the free blocks of \
                     order >= {o} held only {}, not above {} (min, after the atomic allowances, \
                     halved {o} time(s)): kernels before 4.4 require that for each order up to \
                     the request's, so memory {is} too fragmented for order {order}.",
                    pages_text(pages, kb),
                    pages_text(needed, kb)
                ),
                None => format!(
                    "free memory {is} above the low watermark but no free block of order >= \
                     {order} existed{state}: memory {is} fragmented; compaction had not rebuilt \
                     blocks of this order."
                ),
            }
        }
        Cause::NotExplainedNow if log => format!(
            "the report's memory state does not explain it{state}: the zone {has} free memory above \
             the low watermark and, if its buddy lines were printed, a block of this order; the \
             request was probably kept from that zone (GFP_DMA/GFP_DMA32, a cpuset or mempolicy \
             node, or lowmem_reserve), or the block appeared between the failure and the print."
        ),
        Cause::NotExplainedNow => format!(
            "the zone has room for this order now{state}: the failures came from a transient \
             state; sample while they happen (`pagefail check --sample 10s`) to see it."
        ),
    }
}

/// Watermark gap `low - min` a zone would get with `wsf`.
fn gap_with(z: &ZoneInfo, wsf: u64) -> u64 {
    (z.min / 4).max(z.managed.saturating_mul(wsf) / 10_000)
}

fn scale_factor_setting(
    snap: &Snapshot,
    source: &Source,
    z: &ZoneInfo,
    demand: u64,
) -> Option<Setting> {
    if source.has_scale_factor() == Some(false) {
        return None;
    }
    let current = source.scale_factor_now(snap);
    let max = source.scale_factor_max();
    let gap_now = z.low.saturating_sub(z.min);
    let lowmem_zones = || {
        snap.zones
            .iter()
            .filter(|z| z.is_populated() && z.zone != "HighMem" && z.zone != "Movable")
    };
    if gap_now >= demand {
        return Some(Setting {
            name: "vm.watermark_scale_factor",
            current,
            suggested: current.unwrap_or(0),
            cost_kb: 0,
            capped: false,
            note: format!(
                "the low-min gap ({}) already covered the demand: no change",
                pages_text(gap_now, snap.page_kb)
            ),
        });
    }
    let needed = demand
        .saturating_mul(10_000)
        .div_ceil(z.managed.max(1))
        .max(current.map_or(WATERMARK_SCALE_FACTOR_MIN, |c| c + 1));
    let suggested = needed.clamp(WATERMARK_SCALE_FACTOR_MIN, max);
    let capped = needed > max;
    // kswapd reclaims each zone up to high = min + 2 * gap.
    let extra_pages: u64 = lowmem_zones()
        .map(|zz| 2 * gap_with(zz, suggested).saturating_sub(zz.low.saturating_sub(zz.min)))
        .sum();
    Some(Setting {
        name: "vm.watermark_scale_factor",
        current,
        suggested,
        cost_kb: extra_pages * snap.page_kb,
        capped,
        note: format!(
            "kswapd (and kcompactd after it) then starts {} earlier in {} and keeps that much more \
             free; the cost is page cache reclaimed, not memory lost{}",
            pages_text(gap_with(z, suggested).saturating_sub(gap_now), snap.page_kb),
            zone_label(z),
            if capped {
                format!(
                    "; the demand needs more than the maximum {max}: watermarks alone cannot \
                     cover this burst"
                )
            } else {
                String::new()
            }
        ),
    })
}

fn min_free_setting(
    snap: &Snapshot,
    source: &Source,
    z: &ZoneInfo,
    demand: u64,
    marks: GfpSemantics,
) -> Setting {
    let current = source.min_free_now(snap);
    let keep = |note: String| Setting {
        name: "vm.min_free_kbytes",
        current,
        suggested: current.unwrap_or(0),
        cost_kb: 0,
        capped: false,
        note,
    };
    if !marks.high {
        return keep(
            "no change: these requests lack __GFP_HIGH and may not use memory below min, so a \
             higher min reserves nothing for them (watermark_scale_factor wakes kswapd earlier \
             at lower cost)"
                .to_owned(),
        );
    }
    // Share of min an atomic request may use: GFP_ATOMIC (no direct reclaim) 5/8, __GFP_HIGH 1/2.
    let (num, den) = if marks.direct_reclaim { (1, 2) } else { (5, 8) };
    let zone_min = demand.saturating_mul(den).div_ceil(num);
    if z.min >= zone_min {
        return keep(format!(
            "the reserve under min ({}) already covered the demand: no change",
            pages_text(z.min * num / den, snap.page_kb)
        ));
    }
    let lowmem = snap.lowmem_pages().max(1);
    let pages_min = zone_min.saturating_mul(lowmem).div_ceil(z.managed.max(1));
    let wanted_kb = pages_min.saturating_mul(snap.page_kb);
    let cap_kb = lowmem * snap.page_kb * ADVISED_MAX_PERCENT / 100;
    let capped = wanted_kb > cap_kb;
    let suggested = wanted_kb
        .min(cap_kb)
        .max(current.unwrap_or(0))
        .max(MIN_FREE_KBYTES_DEFAULT_FLOOR);
    Setting {
        name: "vm.min_free_kbytes",
        current,
        suggested,
        cost_kb: suggested.saturating_sub(current.unwrap_or(0)),
        capped,
        note: format!(
            "memory below min is never used by ordinary allocations; low and high rise by as \
             much, so kswapd keeps that much more free too{}",
            if capped {
                format!(
                    "; the demand needs {wanted_kb} KiB, over pagefail's bound of \
                     {ADVISED_MAX_PERCENT}% of lowmem ({cap_kb} KiB): watermarks alone cannot \
                     cover this burst"
                )
            } else {
                String::new()
            }
        ),
    }
}

/// Work out the advice for `rows` given this machine's memory state `snap`
/// and, when sampled live, the packet drops over the same window. Rows
/// without an order (summaries not grouped by order) cannot be judged and
/// are left out.
#[must_use]
pub fn advise(rows: &[SummaryRow], snap: &Snapshot, drops: Option<NetDrops>) -> Advice {
    advise_from(rows, snap, Source::Live, drops)
}

/// [`advise`] for a memory state from any [`Source`]: this machine's, or
/// the one a failure report printed (its kernel version decides which
/// sysctls exist and their bounds; what the report does not tell is said).
#[must_use]
pub fn advise_from(
    rows: &[SummaryRow],
    snap: &Snapshot,
    source: Source,
    drops: Option<NetDrops>,
) -> Advice {
    let key = snap.key_zone();
    let mut groups: std::collections::BTreeMap<(u32, Cause), Vec<&SummaryRow>> =
        std::collections::BTreeMap::new();
    for row in rows.iter().filter(|r| r.failures > 0) {
        let Some(order) = row.order else { continue };
        groups
            .entry((order, classify(row, order, snap, &source, key)))
            .or_default()
            .push(row);
    }
    let mut findings = Vec::new();
    let mut recommendations = Vec::new();
    for ((order, cause), group) in &groups {
        let mut sorted = group.clone();
        sorted.sort_by_key(|r| std::cmp::Reverse(r.failures));
        findings.push(Finding {
            order: *order,
            cause: *cause,
            failures: group.iter().map(|r| r.failures).sum(),
            rows: group.len(),
            examples: sorted.iter().take(3).map(|r| example(r, *order)).collect(),
            explanation: explanation(*cause, *order, snap, &source, key, group),
        });
        if let (Cause::Exhaustion | Cause::Fragmentation, Some(z)) = (cause, key) {
            let per_sec = blocks_per_second(group);
            let demand = per_sec.saturating_mul(1 << (*order).min(20));
            // The reserve must serve every request, so it is sized for the weakest marks.
            let marks = GfpSemantics {
                high: group.iter().all(|r| semantics_of(r).high),
                direct_reclaim: group.iter().any(|r| semantics_of(r).direct_reclaim),
                ..GfpSemantics::default()
            };
            recommendations.push(Recommendation {
                order: *order,
                cause: *cause,
                zone: zone_label(z),
                blocks_per_second: per_sec,
                demand_pages: demand,
                watermark_scale_factor: scale_factor_setting(snap, &source, z, demand),
                min_free_kbytes: min_free_setting(snap, &source, z, demand, marks),
            });
        }
    }
    let cautions = cautions(&findings, &recommendations, snap, &source, drops);
    let verdict = verdict(&findings, &source);
    Advice {
        source,
        findings,
        recommendations,
        cautions,
        drops,
        verdict,
    }
}

fn verdict(findings: &[Finding], source: &Source) -> String {
    if findings.is_empty() {
        return "no failures to explain: nothing to change".to_owned();
    }
    let has = |c: Cause| findings.iter().any(|f| f.cause == c);
    let mut parts = Vec::new();
    if has(Cause::MemcgLimit) {
        parts.push("memcg limit, not zone watermarks: no sysctl change helps".to_owned());
    }
    if has(Cause::Exhaustion) {
        parts.push("exhaustion: free memory near the min watermark".to_owned());
    }
    if has(Cause::Fragmentation) {
        parts.push("fragmentation: free memory but too few blocks of the needed order".to_owned());
    }
    if has(Cause::NotExplainedNow) {
        parts.push(format!(
            "some failures are not explained by the memory state {}",
            source.when()
        ));
    }
    if parts.is_empty() {
        return "all failures had a fallback (NOWARN/NORETRY/kvmalloc): no change needed"
            .to_owned();
    }
    if has(Cause::ExpectedFallback) {
        parts.push("the rest had a fallback and need no change".to_owned());
    }
    parts.join("; ")
}

fn cautions(
    findings: &[Finding],
    recs: &[Recommendation],
    snap: &Snapshot,
    source: &Source,
    drops: Option<NetDrops>,
) -> Vec<String> {
    let mut out = Vec::new();
    let lowmem_kb = snap.lowmem_pages() * snap.page_kb;
    let log = matches!(source, Source::Report(_));
    if !recs.is_empty() {
        match drops {
            Some(d) if d.total() == 0 => out.push(
                "no packet drops were counted over the window (softnet backlog, ListenDrops, \
                 TCPBacklogDrop): upstream reviewers ask for real loss before reserves are raised; \
                 these failures may be harmless"
                    .to_owned(),
            ),
            Some(_) => {}
            None if log => out.push(
                "a kernel log does not say whether packets were dropped: check \
                 /proc/net/softnet_stat and `nstat -az TcpExtListenDrops TcpExtTCPBacklogDrop` on \
                 that machine (or run `pagefail check --sample`) before raising reserves"
                    .to_owned(),
            ),
            None => out.push(
                "packet drops were not measured (use --sample): check /proc/net/softnet_stat and \
                 `nstat -az TcpExtListenDrops TcpExtTCPBacklogDrop` before raising reserves"
                    .to_owned(),
            ),
        }
        let old_kernel = source.version().is_some_and(|v| !v.at_least(5, 7));
        let ceiling = if old_kernel {
            format!(
                "{MIN_FREE_KBYTES_DEFAULT_FLOOR}, 65536] KiB on that kernel (262144 since Linux 5.7)"
            )
        } else {
            format!(
                "{MIN_FREE_KBYTES_DEFAULT_FLOOR}, {MIN_FREE_KBYTES_DEFAULT_CEILING}] KiB (65536 \
                 before Linux 5.7)"
            )
        };
        out.push(format!(
            "too high a min_free_kbytes OOMs the machine: memory under min is unusable for \
             ordinary allocations. The kernel's boot default is 4*sqrt(lowmem kB) clamped to \
             [{ceiling}, {} KiB {}; khugepaged raises it when THP is on, and values written by \
             hand are not capped by the kernel: pagefail never advises more than \
             {ADVISED_MAX_PERCENT}% of lowmem ({} KiB)",
            default_min_free_kbytes(lowmem_kb),
            if log { "on that machine" } else { "here" },
            lowmem_kb * ADVISED_MAX_PERCENT / 100
        ));
        match source.has_scale_factor() {
            Some(false) => out.push(format!(
                "vm.watermark_scale_factor does not exist before Linux 4.6 (the report's kernel \
                 is {}): low and high sit at min + min/4 and min + min/2, so only \
                 vm.min_free_kbytes moves them",
                source
                    .recorded()
                    .and_then(|r| r.kernel.as_deref())
                    .unwrap_or("older")
            )),
            None => out.push(
                "the report's kernel version is unknown (pass --kernel): \
                 vm.watermark_scale_factor exists only since Linux 4.6 and accepted at most 1000 \
                 before about 5.18, so the value above stays within 1000"
                    .to_owned(),
            ),
            Some(true) => out.push(format!(
                "vm.watermark_scale_factor accepts {WATERMARK_SCALE_FACTOR_MIN}..{} (units of \
                 0.01% of each zone; the maximum was 1000 before about Linux 5.18); it moves low \
                 and high, not min, so it costs page cache, not usable memory. Change one value \
                 at a time (sysctl -w), watch the failures, then persist it in /etc/sysctl.d/",
                source.scale_factor_max()
            )),
        }
        out.push(
            "the demand is a heuristic: the peak failures per second times the block size, a \
             reserve that outlasts one second of the burst while kswapd and kcompactd catch up"
                .to_owned(),
        );
    }
    if findings.iter().any(|f| f.cause == Cause::Fragmentation) {
        out.push(
            "watermarks count pages, not blocks: for fragmentation, a larger \
             watermark_scale_factor gives kswapd/kcompactd room to rebuild blocks; also see \
             compact_stall/compact_fail in vmstat, vm.compaction_proactiveness (5.9+), and \
             `echo 1 > /proc/sys/vm/compact_memory` for relief now"
                .to_owned(),
        );
    }
    if let Some(r) = source.recorded() {
        out.extend(r.unknown.iter().cloned());
    }
    out
}

fn known(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
}

impl Advice {
    /// The advice as text for people.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Source::Report(r) = &self.source {
            s.push_str(&format!(
                "memory: as the kernel printed it with the report at {}{}\n",
                r.at,
                r.kernel
                    .as_deref()
                    .map_or_else(String::new, |k| format!(" (kernel {k})"))
            ));
        }
        s.push_str(&format!("verdict: {}\n", self.verdict));
        for f in &self.findings {
            s.push_str(&format!(
                "\norder {}: {} failures in {} rows: {}\n  {}\n",
                f.order,
                f.failures,
                f.rows,
                f.cause.as_str().to_uppercase(),
                f.explanation
            ));
            for e in &f.examples {
                s.push_str(&format!("  e.g. {e}\n"));
            }
        }
        for r in &self.recommendations {
            s.push_str(&format!(
                "\nto keep a reserve of order-{} blocks in {} ({} blocks/s = {} pages):\n",
                r.order, r.zone, r.blocks_per_second, r.demand_pages
            ));
            if r.watermark_scale_factor.is_none() {
                s.push_str(
                    "  vm.watermark_scale_factor: does not exist on this kernel (before 4.6)\n",
                );
            }
            for set in r
                .watermark_scale_factor
                .iter()
                .chain(std::iter::once(&r.min_free_kbytes))
            {
                if set.current == Some(set.suggested)
                    || (set.current.is_none() && set.suggested == 0)
                {
                    s.push_str(&format!(
                        "  {} = {} (keep): {}\n",
                        set.name,
                        known(set.current),
                        set.note
                    ));
                } else {
                    s.push_str(&format!(
                        "  {} {} -> {} (costs {} KiB kept free{}): {}\n",
                        set.name,
                        known(set.current),
                        set.suggested,
                        set.cost_kb,
                        if set.capped { ", CAPPED" } else { "" },
                        set.note
                    ));
                }
            }
        }
        if let Some(d) = &self.drops {
            let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
            s.push_str(&format!(
                "\npacket drops over the window: softnet backlog {}, ListenDrops {}, \
                 ListenOverflows {}, TCPBacklogDrop {}\n",
                d.softnet_dropped,
                opt(d.listen_drops),
                opt(d.listen_overflows),
                opt(d.backlog_drops)
            ));
        }
        if !self.cautions.is_empty() {
            s.push_str("\ncautions:\n");
            for c in &self.cautions {
                s.push_str(&format!("  - {c}\n"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::snapshot;

    /// A row as `watch`/`logs` write it; `span_s` seconds from first to last failure.
    fn row(
        kernel: &str,
        order: u32,
        gfp: &str,
        flags: &str,
        failures: u64,
        span_s: u32,
        stack: &str,
    ) -> SummaryRow {
        SummaryRow {
            window_start: "2026-03-01T10:00:00Z".into(),
            window_end: "2026-03-01T10:01:00Z".into(),
            host: "guest".into(),
            kernel: kernel.into(),
            comm: "ksoftirqd/0".into(),
            pid: "12".into(),
            cgroup: "/".into(),
            context: "softirq".into(),
            path: "tcp".into(),
            order: Some(order),
            gfp: gfp.into(),
            gfp_flags: flags.into(),
            atomic: Some(true),
            failures,
            warned: 0,
            first_seen: "2026-03-01T10:00:10Z".into(),
            last_seen: format!("2026-03-01T10:00:{}Z", 10 + span_s),
            top_stack: stack.into(),
        }
    }

    const K61: &str = "6.1.0-56-cloud-amd64";
    const NET_STACK: &str = "ret_from_fork;kthread;smpboot_thread_fn;run_ksoftirqd;__do_softirq;net_rx_action;bond_start_xmit;skb_segment;__alloc_skb;kmalloc_reserve";

    fn atomic_order3(failures: u64, span_s: u32) -> SummaryRow {
        row(K61, 3, "0xa20", "GFP_ATOMIC", failures, span_s, NET_STACK)
    }

    fn assert_within_bounds(a: &Advice, snap: &Snapshot) {
        let cap = snap.lowmem_pages() * snap.page_kb * ADVISED_MAX_PERCENT / 100;
        for r in &a.recommendations {
            let w = r.watermark_scale_factor.as_ref().unwrap();
            assert!(
                (WATERMARK_SCALE_FACTOR_MIN..=WATERMARK_SCALE_FACTOR_MAX).contains(&w.suggested),
                "{w:?}"
            );
            assert!(Some(w.suggested) >= w.current);
            let m = &r.min_free_kbytes;
            assert!(m.suggested >= MIN_FREE_KBYTES_DEFAULT_FLOOR, "{m:?}");
            assert!(
                Some(m.suggested) == m.current || m.suggested <= cap,
                "{m:?} over {cap}"
            );
        }
    }

    #[test]
    fn fragmented_zone_is_fragmentation_with_values_in_bounds() {
        // advice-fragmented: the 6.1 guest with DMA32's free pages all in order 0 and 1.
        let snap = snapshot("advice-fragmented");
        // 500 failures over 5 s: 100 order-3 blocks/s = 800 pages.
        let a = advise(&[atomic_order3(500, 5)], &snap, None);
        assert_eq!(a.findings.len(), 1);
        assert_eq!(a.findings[0].cause, Cause::Fragmentation);
        assert!(
            a.findings[0]
                .explanation
                .contains("0 free blocks of order >= 3"),
            "{}",
            a.findings[0].explanation
        );
        assert!(a.verdict.starts_with("fragmentation"), "{}", a.verdict);
        let r = &a.recommendations[0];
        assert_eq!(
            (r.zone.as_str(), r.blocks_per_second, r.demand_pages),
            ("node0 DMA32", 100, 800)
        );
        // gap 800 pages of 52007 managed: ceil(800 * 10000 / 52007) = 154.
        assert_eq!(r.watermark_scale_factor.as_ref().unwrap().suggested, 154);
        // GFP_ATOMIC may use 5/8 of min: min 1280; min_free_kbytes = ceil(1280 * 55847 / 52007) pages * 4.
        assert_eq!(r.min_free_kbytes.suggested, 1375 * 4);
        assert_eq!(r.min_free_kbytes.cost_kb, 1375 * 4 - 1845);
        assert!(r.watermark_scale_factor.as_ref().unwrap().cost_kb > 0);
        assert_within_bounds(&a, &snap);
        assert!(a.cautions.iter().any(|c| c.contains("not measured")));
        assert!(
            a.cautions
                .iter()
                .any(|c| c.contains("watermarks count pages, not blocks"))
        );
        let text = a.to_text();
        assert!(
            text.contains("vm.watermark_scale_factor 10 -> 154"),
            "{text}"
        );
        assert!(text.contains("FRAGMENTATION"), "{text}");
    }

    #[test]
    fn exhausted_zone_is_exhaustion() {
        // advice-exhausted: the 6.1 guest with DMA32 at 480 free pages (min 427, low 533).
        let snap = snapshot("advice-exhausted");
        let a = advise(&[atomic_order3(500, 5)], &snap, None);
        assert_eq!(a.findings[0].cause, Cause::Exhaustion);
        assert!(a.verdict.starts_with("exhaustion"), "{}", a.verdict);
        assert_eq!(a.recommendations.len(), 1);
        assert_within_bounds(&a, &snap);
    }

    #[test]
    fn nowarn_only_failures_need_no_change() {
        let snap = snapshot("advice-fragmented");
        let rows = [
            row(
                K61,
                3,
                "0x2a20",
                "GFP_ATOMIC|__GFP_NOWARN",
                40_000,
                2,
                NET_STACK,
            ),
            // An opportunistic order-3 try: GFP_NOWAIT|__GFP_NORETRY (tcp_sendmsg's page frag).
            row(
                K61,
                3,
                "0x10800",
                "GFP_NOWAIT|__GFP_NORETRY",
                9000,
                2,
                "tcp_sendmsg;skb_page_frag_refill",
            ),
        ];
        let a = advise(&rows, &snap, None);
        assert!(
            a.findings
                .iter()
                .all(|f| f.cause == Cause::ExpectedFallback),
            "{a:?}"
        );
        assert!(a.recommendations.is_empty());
        assert!(a.verdict.contains("no change needed"), "{}", a.verdict);
        assert!(a.cautions.is_empty());
    }

    #[test]
    fn accounted_failures_with_free_memory_are_the_memcg_limit() {
        // 6.18 host: Normal has 58932 free pages (high 17611) and order >= 6 blocks.
        let snap = snapshot("6.18");
        let trigger = row(
            "6.18.44-fc-v669",
            6,
            "0x4428c0",
            "GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_COMP|__GFP_ACCOUNT",
            1,
            0,
            "entry_SYSCALL_64;do_syscall_64;__x64_sys_dup2;ksys_dup3;expand_files;alloc_fdtable;__kvmalloc_node_noprof;__kmalloc_large_node_noprof;___kmalloc_large_node",
        );
        let a = advise(&[trigger], &snap, None);
        assert_eq!(a.findings[0].cause, Cause::MemcgLimit);
        assert!(
            a.recommendations.is_empty(),
            "no sysctl change for a memcg limit"
        );
        assert!(
            a.verdict.contains("memcg limit, not zone watermarks"),
            "{}",
            a.verdict
        );
        assert!(a.findings[0].explanation.contains("cgroup"));
        // The same accounted request where the zone has no room is judged by the zone.
        let frag = snapshot("advice-fragmented");
        let mut r = row(
            K61,
            3,
            "0x400a20",
            "GFP_ATOMIC|__GFP_ACCOUNT",
            10,
            1,
            NET_STACK,
        );
        r.kernel = K61.into();
        assert_eq!(
            advise(&[r], &frag, None).findings[0].cause,
            Cause::Fragmentation
        );
    }

    #[test]
    fn nowait_requests_get_no_min_free_raise() {
        // GFP_NOWAIT lacks __GFP_HIGH: memory below min is closed to it.
        let snap = snapshot("advice-fragmented");
        let a = advise(
            &[row(K61, 2, "0x800", "GFP_NOWAIT", 300, 3, NET_STACK)],
            &snap,
            None,
        );
        let r = &a.recommendations[0];
        assert_eq!(Some(r.min_free_kbytes.suggested), r.min_free_kbytes.current);
        assert!(r.min_free_kbytes.note.contains("lack __GFP_HIGH"));
        assert!(r.watermark_scale_factor.as_ref().unwrap().suggested > 10);
    }

    #[test]
    fn huge_bursts_are_capped_at_the_bounds() {
        let snap = snapshot("advice-exhausted");
        let a = advise(
            &[row(K61, 4, "0xa20", "GFP_ATOMIC", 1_000_000, 1, NET_STACK)],
            &snap,
            None,
        );
        let r = &a.recommendations[0];
        assert!(
            r.min_free_kbytes.capped && r.watermark_scale_factor.as_ref().unwrap().capped,
            "{r:?}"
        );
        assert_eq!(
            r.watermark_scale_factor.as_ref().unwrap().suggested,
            WATERMARK_SCALE_FACTOR_MAX
        );
        assert_eq!(r.min_free_kbytes.suggested, 55_847 * 4 * 5 / 100);
        assert_within_bounds(&a, &snap);
        assert!(a.to_text().contains("CAPPED"));
    }

    #[test]
    fn drops_are_reported_and_their_absence_cautions() {
        let snap = snapshot("advice-fragmented");
        let none = NetDrops {
            softnet_dropped: 0,
            listen_drops: Some(0),
            listen_overflows: Some(0),
            backlog_drops: Some(0),
        };
        let a = advise(&[atomic_order3(50, 5)], &snap, Some(none));
        assert!(
            a.cautions
                .iter()
                .any(|c| c.contains("no packet drops were counted")),
            "{:?}",
            a.cautions
        );
        let some = NetDrops {
            listen_drops: Some(7),
            ..none
        };
        let a = advise(&[atomic_order3(50, 5)], &snap, Some(some));
        assert!(!a.cautions.iter().any(|c| c.contains("packet drops")));
        assert!(a.to_text().contains("ListenDrops 7"));
    }

    #[test]
    fn transient_failures_are_not_explained_by_the_state_now() {
        let a = advise(
            &[row("6.18.44", 3, "0x820", "GFP_ATOMIC", 5, 1, NET_STACK)],
            &snapshot("6.18"),
            None,
        );
        assert_eq!(a.findings[0].cause, Cause::NotExplainedNow);
        assert!(a.recommendations.is_empty());
    }

    #[test]
    fn gfp_marks_from_names_and_bits() {
        let r = row(
            "6.18.44",
            6,
            "0x4428c0",
            "GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_COMP|__GFP_ACCOUNT",
            1,
            0,
            "",
        );
        let m = semantics_of(&r);
        assert!(
            m.account && m.nowarn && !m.high && !m.direct_reclaim,
            "{m:?}"
        );
        // 4.9: the mask is decoded with the 4.9 table. GFP_ATOMIC was 0x2080020 there.
        let r = row("4.9.0", 1, "0x2080020", "GFP_ATOMIC", 1, 0, "");
        assert_eq!(
            semantics_of(&r),
            GfpSemantics {
                high: true,
                ..GfpSemantics::default()
            }
        );
        let r = row(
            "4.9.0",
            1,
            "0x14000c0",
            "GFP_KERNEL_ACCOUNT|__GFP_NOWARN",
            1,
            0,
            "",
        );
        let m = semantics_of(&r);
        assert!(m.account && m.nowarn && m.direct_reclaim && !m.high);
    }

    #[test]
    fn default_min_free_kbytes_follows_the_kernel() {
        assert_eq!(
            default_min_free_kbytes(1 << 20),
            4096,
            "1 GiB: 4 * sqrt(1048576)"
        );
        assert_eq!(default_min_free_kbytes(16 << 20), 16_384);
        assert_eq!(default_min_free_kbytes(512), MIN_FREE_KBYTES_DEFAULT_FLOOR);
        assert_eq!(
            default_min_free_kbytes(16 << 30),
            MIN_FREE_KBYTES_DEFAULT_CEILING
        );
    }

    #[test]
    fn no_rows_no_change() {
        let a = advise(&[], &snapshot("6.18"), None);
        assert!(a.findings.is_empty() && a.recommendations.is_empty());
        assert!(a.verdict.contains("nothing to change"));
    }
}
