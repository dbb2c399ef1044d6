//! The `show_mem()` block after a report (`Mem-Info:`): free pages, zone
//! watermarks, and the buddy lists that say which block sizes were free.
//! <https://elixir.bootlin.com/linux/v6.1/source/mm/page_alloc.c#L6020>

use serde::Serialize;

use super::lines::leading_u64;
use crate::{
    kernel_version::KernelVersion,
    memory::{BuddyZone, Snapshot, Sysctls, VmStat, ZoneInfo, advice::Recorded},
};

/// Most zones a report keeps (nodes x zones); more are counted, not stored.
const MAX_ZONES: usize = 32;
/// Orders kept per zone (`MAX_ORDER` is 11 on x86, up to 14 elsewhere).
const MAX_ORDERS: usize = 16;

/// One zone of one node at the failure time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Zone {
    pub node: u32,
    /// `DMA`, `DMA32`, `Normal`, `HighMem`, `Movable`.
    pub name: String,
    pub free_kb: Option<u64>,
    pub min_kb: Option<u64>,
    pub low_kb: Option<u64>,
    pub high_kb: Option<u64>,
    /// `boost:` (printed since about 5.5; before that a boost, if any, is
    /// already inside min/low/high and cannot be told apart).
    pub boost_kb: Option<u64>,
    /// `present:`: pages the zone has (printed by every era).
    pub present_kb: Option<u64>,
    /// `managed:`: pages the allocator manages (printed since about 3.10).
    pub managed_kb: Option<u64>,
    /// Free blocks per order from the buddy line (`385*4kB 160*8kB ...`);
    /// empty when the buddy line was not printed.
    pub free_blocks: Vec<u64>,
}

impl Zone {
    /// The highest order with a free block, `None` when no block is free or
    /// the buddy line is missing.
    #[must_use]
    pub fn largest_free_order(&self) -> Option<u32> {
        self.free_blocks
            .iter()
            .rposition(|n| *n > 0)
            .and_then(|o| u32::try_from(o).ok())
    }
}

/// The memory state printed with a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemInfo {
    /// `free:13301` of the summary, in pages.
    pub free_pages: Option<u64>,
    pub zones: Vec<Zone>,
    /// Page size in KiB: the block size of order 0 in the buddy lines.
    pub page_kb: Option<u64>,
}

impl MemInfo {
    fn zone_mut(&mut self, node: u32, name: &str) -> Option<&mut Zone> {
        if let Some(i) = self
            .zones
            .iter()
            .position(|z| z.node == node && z.name == name)
        {
            return self.zones.get_mut(i);
        }
        if self.zones.len() >= MAX_ZONES {
            return None;
        }
        self.zones.push(Zone {
            node,
            name: name.to_owned(),
            ..Zone::default()
        });
        self.zones.last_mut()
    }

    /// Take one line of the block; returns whether it was understood.
    pub fn feed(&mut self, body: &str) -> bool {
        let t = body.trim();
        if let Some(r) = t.strip_prefix("free:") {
            if let (Some(n), _) = leading_u64(r) {
                self.free_pages = Some(n);
                return true;
            }
            return false;
        }
        // `Node 0 DMA32 free:...` / `Node 0 DMA32: 11640*4kB ...`; very old
        // 32-bit kernels omit `Node N `.
        let (node, rest) = match t.strip_prefix("Node ") {
            Some(r) => {
                let (n, r) = leading_u64(r);
                match n.and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => (n, r.trim_start()),
                    None => return false,
                }
            }
            None => (0, t),
        };
        let Some((name, tail)) = rest.split_once([' ', ':']) else {
            return false;
        };
        if !is_zone_name(name) {
            return false;
        }
        if rest.as_bytes().get(name.len()) == Some(&b':') {
            return self.buddy(node, name, tail);
        }
        if tail.trim_start().starts_with("free:") {
            return self.watermarks(node, name, tail);
        }
        false
    }

    fn watermarks(&mut self, node: u32, name: &str, tail: &str) -> bool {
        let Some(zone) = self.zone_mut(node, name) else {
            return false;
        };
        for field in tail.split_whitespace() {
            let Some((key, value)) = field.split_once(':') else {
                continue;
            };
            let kb = || value.strip_suffix("kB").and_then(|v| v.parse::<u64>().ok());
            match key {
                "free" => zone.free_kb = kb(),
                "min" => zone.min_kb = kb(),
                "low" => zone.low_kb = kb(),
                "high" => zone.high_kb = kb(),
                "boost" => zone.boost_kb = kb(),
                "present" => zone.present_kb = kb(),
                "managed" => zone.managed_kb = kb(),
                _ => {}
            }
        }
        true
    }

    fn buddy(&mut self, node: u32, name: &str, tail: &str) -> bool {
        let mut blocks = Vec::new();
        for tok in tail.split_whitespace() {
            if tok == "=" || tok.starts_with('(') {
                if tok == "=" {
                    break;
                }
                continue;
            }
            let Some((count, size)) = tok.split_once('*') else {
                continue;
            };
            if !size.ends_with("kB") {
                continue;
            }
            let Ok(count) = count.parse::<u64>() else {
                return false;
            };
            if blocks.is_empty()
                && let Some(kb) = size.strip_suffix("kB").and_then(|v| v.parse::<u64>().ok())
                && kb > 0
            {
                self.page_kb = Some(kb);
            }
            if blocks.len() < MAX_ORDERS {
                blocks.push(count);
            }
        }
        if blocks.is_empty() {
            return false;
        }
        match self.zone_mut(node, name) {
            Some(zone) => {
                zone.free_blocks = blocks;
                true
            }
            None => false,
        }
    }
}

impl MemInfo {
    /// The memory state this block printed, in the form the advice judges
    /// (`memory::Snapshot`, sizes in pages), with what it does not tell.
    /// `kernel` is the report's release (it decides which sysctls existed);
    /// `at` names the report. `None` when no zone printed its watermarks
    /// and size.
    #[must_use]
    pub fn memory_state(
        &self,
        kernel: Option<&str>,
        host: Option<&str>,
        at: &str,
    ) -> Option<(Snapshot, Recorded)> {
        let mut unknown = Vec::new();
        let page_kb = self.page_kb.unwrap_or_else(|| {
            unknown.push(
                "the report printed no free blocks per order (its buddy lines are missing): \
                 fragmentation cannot be judged, and 4 KiB pages are assumed"
                    .to_owned(),
            );
            4
        });
        let pages = |kb: u64| kb / page_kb;
        let mut zones = Vec::new();
        let mut present_for_managed = false;
        for z in &self.zones {
            let (Some(free), Some(min), Some(low), Some(high)) =
                (z.free_kb, z.min_kb, z.low_kb, z.high_kb)
            else {
                if !z.free_blocks.is_empty() {
                    unknown.push(format!(
                        "node{} {}: the report printed its free blocks but not its watermarks",
                        z.node, z.name
                    ));
                }
                continue;
            };
            let Some(size) = z.managed_kb.or(z.present_kb) else {
                unknown.push(format!(
                    "node{} {}: the report printed no size (present/managed), so the zone is left out",
                    z.node, z.name
                ));
                continue;
            };
            present_for_managed |= z.managed_kb.is_none() && pages(size) > 0;
            zones.push(ZoneInfo {
                node: z.node,
                zone: z.name.clone(),
                free: pages(free),
                boost: z.boost_kb.map(pages),
                min: pages(min),
                low: pages(low),
                high: pages(high),
                promo: None,
                spanned: None,
                present: z.present_kb.map(pages),
                managed: pages(size),
                protection: Vec::new(),
            });
        }
        if zones.is_empty() {
            return None;
        }
        if present_for_managed {
            unknown.push(
                "this kernel prints no managed pages per zone (before about 3.10): present pages \
                 stand in for them; they include pages the allocator never manages, so the \
                 suggested values come out a little low"
                    .to_owned(),
            );
        }
        let buddy: Vec<BuddyZone> = self
            .zones
            .iter()
            .filter(|z| {
                !z.free_blocks.is_empty()
                    && zones
                        .iter()
                        .any(|zi| zi.node == z.node && zi.zone == z.name)
            })
            .map(|z| BuddyZone {
                node: z.node,
                zone: z.name.clone(),
                free: z.free_blocks.clone(),
            })
            .collect();
        let version = kernel.and_then(KernelVersion::parse);
        let lowmem = || {
            zones
                .iter()
                .filter(|z| z.is_populated() && z.zone != "HighMem" && z.zone != "Movable")
        };
        // __setup_per_zone_wmarks spreads min_free_kbytes over the lowmem
        // zones by size, each share rounded down to whole pages: their min
        // watermarks (boost taken out) add up to it, short by at most a page
        // per zone.
        let min_free: u64 = lowmem()
            .map(|z| z.min.saturating_sub(z.boost.unwrap_or(0)))
            .sum::<u64>()
            * page_kb;
        let zones_n = lowmem().count() as u64;
        unknown.push(format!(
            "vm.min_free_kbytes is not in a kernel log: {min_free} KiB is the sum of the lowmem \
             zones' min watermarks, which the kernel derives from it (up to {} KiB short from \
             rounding{})",
            zones_n * page_kb,
            if version.is_some_and(|v| v.at_least(5, 0))
                && self.zones.iter().all(|z| z.boost_kb.is_none())
            {
                "; a watermark boost, which this kernel does not print, would be inside it"
            } else {
                ""
            }
        ));
        let wsf = match version {
            None => {
                unknown.push(
                    "the report names no kernel version (pass --kernel): whether \
                     vm.watermark_scale_factor existed (4.6+) cannot be told"
                        .to_owned(),
                );
                None
            }
            Some(v) if !v.at_least(4, 6) => None,
            Some(_) => scale_factor_of(lowmem(), page_kb, &mut unknown),
        };
        let recorded = Recorded {
            at: at.to_owned(),
            host: host.map(str::to_owned),
            kernel: kernel.map(str::to_owned),
            min_free_kbytes: Some(min_free),
            watermark_scale_factor: wsf,
            unknown,
        };
        let snap = Snapshot {
            taken: at.to_owned(),
            page_kb,
            buddy,
            zones,
            pagetype: None,
            pagetype_note: Some("a kernel log does not print the pageblock types".to_owned()),
            vmstat: VmStat::default(),
            sysctls: Sysctls {
                min_free_kbytes: min_free,
                watermark_scale_factor: wsf.unwrap_or(0),
                watermark_boost_factor: None,
            },
        };
        Some((snap, recorded))
    }
}

/// `vm.watermark_scale_factor` from the largest lowmem zone's low-min gap
/// (`max(min / 4, managed * factor / 10000)`), when the factor term shows;
/// a note says why not otherwise.
fn scale_factor_of<'a>(
    lowmem: impl Iterator<Item = &'a ZoneInfo>,
    page_kb: u64,
    unknown: &mut Vec<String>,
) -> Option<u64> {
    let z = lowmem.max_by_key(|z| z.managed)?;
    let gap = z.low.saturating_sub(z.min);
    let quarter = z.min.saturating_sub(z.boost.unwrap_or(0)) / 4;
    // One page of slack for the kernel's rounding.
    if gap > quarter + 1 {
        let wsf = (gap * 10_000 + z.managed / 2) / z.managed.max(1);
        unknown.push(format!(
            "vm.watermark_scale_factor is not in a kernel log: {wsf} is what node{} {}'s \
             low-min gap ({} KiB of {} KiB) implies",
            z.node,
            z.zone,
            gap * page_kb,
            z.managed * page_kb
        ));
        Some(wsf)
    } else {
        let hidden = (quarter + 1) * 10_000 / z.managed.max(1);
        unknown.push(format!(
            "vm.watermark_scale_factor is not in a kernel log, and node{} {}'s low-min gap is \
             min/4, which hides any factor up to {hidden} (the default is 10)",
            z.node, z.zone
        ));
        None
    }
}

fn is_zone_name(s: &str) -> bool {
    matches!(
        s,
        "DMA" | "DMA32" | "Normal" | "HighMem" | "Movable" | "Device"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_watermarks_and_buddy_lists() {
        let mut m = MemInfo::default();
        assert!(m.feed(" free:13301 free_pcp:85 free_cma:0"));
        assert!(m.feed("Node 0 DMA32 free:46560kB boost:3924kB min:5668kB low:6104kB high:6540kB reserved_highatomic:0KB"));
        assert!(m.feed("Node 0 DMA32: 11640*4kB (UME) 0*8kB 0*16kB 0*32kB 0*64kB 0*128kB 0*256kB 0*512kB 0*1024kB 0*2048kB 0*4096kB = 46560kB"));
        assert!(m.feed("Node 0 Normal: 385*4kB (UMEH) 160*8kB (UM) 22*16kB 3*32kB 0*64kB 0*128kB 0*256kB 0*512kB 0*1024kB 0*2048kB 0*4096kB = 4964kB"));
        assert!(!m.feed("Node 0 active_anon:6764kB inactive_anon:4548kB"));
        assert!(!m.feed("Node 0 hugepages_total=0 hugepages_free=0"));
        assert!(!m.feed("lowmem_reserve[]: 0 190 190 190 190"));
        assert_eq!(m.free_pages, Some(13301));
        assert_eq!(m.zones.len(), 2);
        let dma32 = &m.zones[0];
        assert_eq!(dma32.name, "DMA32");
        assert_eq!(
            (dma32.free_kb, dma32.min_kb, dma32.low_kb, dma32.high_kb),
            (Some(46560), Some(5668), Some(6104), Some(6540))
        );
        assert_eq!(dma32.free_blocks.len(), 11);
        assert_eq!(dma32.largest_free_order(), Some(0));
        assert_eq!(m.zones[1].largest_free_order(), Some(3));
        assert_eq!(m.zones[1].free_blocks[1], 160);
    }

    #[test]
    fn old_32bit_lines_without_node() {
        let mut m = MemInfo::default();
        assert!(m.feed("DMA free:3496kB min:64kB low:80kB high:96kB active:0kB"));
        assert!(m.feed("DMA: 4*4kB 3*8kB 0*16kB = 40kB"));
        assert_eq!(m.zones[0].largest_free_order(), Some(1));
        let empty = Zone::default();
        assert_eq!(empty.largest_free_order(), None);
    }
}
