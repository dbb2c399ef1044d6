//! The `skb:kfree_skb` program: attach it where the kernel has drop reasons,
//! read its counters and its attribution map.

use std::{collections::BTreeMap, os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf,
    maps::{PerCpuArray, PerCpuHashMap, StackTraceMap},
    programs::{RawTracePoint, raw_trace_point::RawTracePointLinkId},
};
use tracer_common::{
    DROP_SLOTS, DropKey, MAP_DROP_COUNTS, MAP_DROP_SITES, MAP_DROP_STACKS, MAP_DROP_STATS,
    PROG_KFREE_SKB, drop_slot, drop_stat,
};

use super::{ProbeError, Tracer, info};
use crate::drops::reasons::{DropReasons, ReasonTable};

/// Whether drops are counted, and if not, why.
#[derive(Debug)]
pub enum DropProbe {
    /// Attached; counting these reasons.
    Attached(DropAttach),
    /// The kernel cannot (no reasons before 5.17, or the attach failed).
    Unavailable(String),
    /// `--drop-reasons off`.
    Disabled,
}

/// The attached drop program.
#[derive(Debug)]
pub struct DropAttach {
    pub which: DropReasons,
    pub table: ReasonTable,
    /// Counted reasons: number and name (with [`DropReasons::All`]: every
    /// reason of the table).
    pub counted: Vec<(u32, String)>,
    link: Option<RawTracePointLinkId>,
}

/// Totals of the drop program's counters, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Drops by reason number (counted reasons only; with `all`, every
    /// reason at or beyond the last slot is counted under that slot's number).
    pub by_reason: BTreeMap<u32, u64>,
    /// Drops counted by reason that found the attribution map full.
    pub site_lost: u64,
    /// Drops whose stack could not be stored (attributed without a path).
    pub stack_errors: u64,
    /// `kfree_skb` events the kernel skipped because the program was already
    /// running on the CPU (`recursion_misses`): their reasons are unknown.
    pub unseen: Option<u64>,
}

impl DropCounts {
    /// The change from `earlier` to `self`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            by_reason: self
                .by_reason
                .iter()
                .map(|(r, n)| {
                    (
                        *r,
                        n.saturating_sub(earlier.by_reason.get(r).copied().unwrap_or(0)),
                    )
                })
                .collect(),
            site_lost: self.site_lost.saturating_sub(earlier.site_lost),
            stack_errors: self.stack_errors.saturating_sub(earlier.stack_errors),
            unseen: self
                .unseen
                .zip(earlier.unseen)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }

    /// All counted drops.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }
}

/// One attribution entry: its key, drops, and its stack (innermost first;
/// empty when it could not be stored or read).
#[derive(Debug, Clone)]
pub struct DropSiteRaw {
    pub key: DropKey,
    pub count: u64,
    pub stack: Vec<u64>,
}

/// Read the drop reasons of the running kernel from tracefs.
///
/// # Errors
/// A message saying why drop reasons are not available.
pub fn reason_table(tracefs: &str) -> Result<ReasonTable, String> {
    let path = Path::new(tracefs).join("events/skb/kfree_skb/format");
    let format = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ReasonTable::from_format(&format).map_err(|e| e.to_string())
}

/// Attach the drop program for `which` (the mask was set at load time).
pub(super) fn attach(
    ebpf: &mut Ebpf,
    which: DropReasons,
    table: Result<ReasonTable, String>,
) -> DropProbe {
    if which == DropReasons::Off {
        return DropProbe::Disabled;
    }
    let table = match table {
        Ok(t) => t,
        Err(why) => return DropProbe::Unavailable(why),
    };
    let attached = (|| -> Result<RawTracePointLinkId, String> {
        let p: &mut RawTracePoint = ebpf
            .program_mut(PROG_KFREE_SKB)
            .ok_or_else(|| format!("program {PROG_KFREE_SKB} missing from the object"))?
            .try_into()
            .map_err(|_| format!("program {PROG_KFREE_SKB} has an unexpected type"))?;
        p.load()
            .map_err(|e| format!("load {PROG_KFREE_SKB}: {e}"))?;
        p.attach("kfree_skb")
            .map_err(|e| format!("attach {PROG_KFREE_SKB} to kfree_skb: {e}"))
    })();
    match attached {
        Ok(link) => DropProbe::Attached(DropAttach {
            which,
            counted: table.counted(which),
            table,
            link: Some(link),
        }),
        Err(e) => DropProbe::Unavailable(e),
    }
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |source| ProbeError::Map { name, source }
}

fn missing(name: &'static str) -> ProbeError {
    ProbeError::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        },
    }
}

impl Tracer {
    /// The drop program's counters; `None` when it is not attached.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn drop_counts(&self) -> Result<Option<DropCounts>, ProbeError> {
        let DropProbe::Attached(a) = &self.drops else {
            return Ok(None);
        };
        let counts = self
            .ebpf
            .map(MAP_DROP_COUNTS)
            .ok_or_else(|| missing(MAP_DROP_COUNTS))?;
        let counts = PerCpuArray::<_, u64>::try_from(counts).map_err(map_err(MAP_DROP_COUNTS))?;
        let read = |arr: &PerCpuArray<&aya::maps::MapData, u64>, slot: u32, name| {
            arr.get(&slot, 0)
                .map(|v| v.iter().sum::<u64>())
                .map_err(map_err(name))
        };
        let mut by_reason = BTreeMap::new();
        // Only the counted slots: a handful of reads with the memory reasons.
        let mut slots: Vec<u32> = a.counted.iter().map(|(n, _)| drop_slot(*n)).collect();
        if a.which == DropReasons::All {
            slots.push(DROP_SLOTS - 1);
        }
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            by_reason.insert(slot, read(&counts, slot, MAP_DROP_COUNTS)?);
        }
        let stats = self
            .ebpf
            .map(MAP_DROP_STATS)
            .ok_or_else(|| missing(MAP_DROP_STATS))?;
        let stats = PerCpuArray::<_, u64>::try_from(stats).map_err(map_err(MAP_DROP_STATS))?;
        let unseen = self
            .ebpf
            .program(PROG_KFREE_SKB)
            .and_then(|p| p.fd().ok())
            .and_then(|fd| info::recursion_misses(fd.as_fd()));
        Ok(Some(DropCounts {
            by_reason,
            site_lost: read(&stats, drop_stat::SITE_LOST, MAP_DROP_STATS)?,
            stack_errors: read(&stats, drop_stat::STACK_ERROR, MAP_DROP_STATS)?,
            unseen,
        }))
    }

    /// Every attribution entry with its cumulative drops since attach.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn drop_sites(&self) -> Result<Vec<DropSiteRaw>, ProbeError> {
        if !matches!(self.drops, DropProbe::Attached(_)) {
            return Ok(Vec::new());
        }
        let sites = self
            .ebpf
            .map(MAP_DROP_SITES)
            .ok_or_else(|| missing(MAP_DROP_SITES))?;
        let sites =
            PerCpuHashMap::<_, DropKey, u64>::try_from(sites).map_err(map_err(MAP_DROP_SITES))?;
        let stacks = self
            .ebpf
            .map(MAP_DROP_STACKS)
            .ok_or_else(|| missing(MAP_DROP_STACKS))?;
        let stacks = StackTraceMap::try_from(stacks).map_err(map_err(MAP_DROP_STACKS))?;
        let mut out = Vec::new();
        for entry in &sites {
            let (key, values) = entry.map_err(map_err(MAP_DROP_SITES))?;
            let count = values.iter().sum();
            let stack = u32::try_from(key.stack_id)
                .ok()
                .and_then(|id| stacks.get(&id, 0).ok())
                .map(|s| s.frames().iter().map(|f| f.ip).collect())
                .unwrap_or_default();
            out.push(DropSiteRaw { key, count, stack });
        }
        Ok(out)
    }

    /// Detach the drop program (counters stay readable).
    pub(super) fn detach_drops(&mut self) {
        if let DropProbe::Attached(a) = &mut self.drops
            && let Some(link) = a.link.take()
        {
            let r = self
                .ebpf
                .program_mut(PROG_KFREE_SKB)
                .and_then(|p| <&mut RawTracePoint>::try_from(p).ok())
                .map(|p| p.detach(link));
            if let Some(Err(e)) = r {
                log::warn!("detaching {PROG_KFREE_SKB}: {e}");
            }
        }
    }
}
