//! Memory state worth showing with allocation failures: free blocks per
//! order (`/proc/buddyinfo`), zone watermarks (`/proc/zoneinfo`), the
//! high-order atomic reserve (`/proc/pagetypeinfo`, root only), reclaim and
//! compaction counters (`/proc/vmstat`), and the reclaim sysctls; plus the
//! advice that follows from them ([`advice`]).
//!
//! One file per source. Parsers take the file's text and return a
//! [`MemoryError`] that names the file and line for bad or partial input.

pub mod advice;
pub mod buddyinfo;
pub mod netdrops;
pub mod pagetypeinfo;
pub mod sysctls;
pub mod vmstat;
pub mod zoneinfo;

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use thiserror::Error;

pub use self::{
    buddyinfo::BuddyZone, netdrops::NetDrops, pagetypeinfo::PageTypeInfo, sysctls::Sysctls,
    vmstat::VmStat, zoneinfo::ZoneInfo,
};

/// Reading or parsing a memory-state file failed.
#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{file} is empty (is procfs mounted, and is this the right file?)")]
    Empty { file: &'static str },
    #[error("{file} line {line}: {reason}")]
    Parse {
        file: &'static str,
        line: usize,
        reason: String,
    },
    #[error("{file} and {other} disagree: {reason}")]
    Mismatch {
        file: &'static str,
        other: &'static str,
        reason: String,
    },
}

impl MemoryError {
    pub(crate) fn parse(file: &'static str, line: usize, reason: String) -> Self {
        Self::Parse { file, line, reason }
    }
}

pub(crate) fn parse_u64(file: &'static str, line: usize, token: &str) -> Result<u64, MemoryError> {
    token
        .parse()
        .map_err(|_| MemoryError::parse(file, line, format!("`{token}` is not a number")))
}

pub(crate) fn read(path: impl AsRef<Path>) -> Result<String, MemoryError> {
    let path = path.as_ref();
    fs::read_to_string(path).map_err(|source| MemoryError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The running kernel's page size in bytes (4096 when it cannot be told).
fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n >= 1024).unwrap_or(4096)
}

/// Where the files are: `/proc` on a live system, or a directory holding
/// copies under their base names (the test fixtures' layout).
#[derive(Debug, Clone)]
pub struct Sources {
    pub buddyinfo: PathBuf,
    pub zoneinfo: PathBuf,
    pub pagetypeinfo: PathBuf,
    pub vmstat: PathBuf,
    pub min_free_kbytes: PathBuf,
    pub watermark_scale_factor: PathBuf,
    pub watermark_boost_factor: PathBuf,
    /// Bytes per page (the running kernel's, or 4096 for a directory).
    pub page_size: u64,
}

impl Sources {
    /// The running system's files.
    #[must_use]
    pub fn proc() -> Self {
        Self {
            buddyinfo: "/proc/buddyinfo".into(),
            zoneinfo: "/proc/zoneinfo".into(),
            pagetypeinfo: "/proc/pagetypeinfo".into(),
            vmstat: "/proc/vmstat".into(),
            min_free_kbytes: "/proc/sys/vm/min_free_kbytes".into(),
            watermark_scale_factor: "/proc/sys/vm/watermark_scale_factor".into(),
            watermark_boost_factor: "/proc/sys/vm/watermark_boost_factor".into(),
            page_size: page_size(),
        }
    }

    /// Copies in one directory, named like the files (`buddyinfo`,
    /// `min_free_kbytes`, ...), with 4 KiB pages.
    #[must_use]
    pub fn dir(dir: &Path) -> Self {
        Self {
            buddyinfo: dir.join("buddyinfo"),
            zoneinfo: dir.join("zoneinfo"),
            pagetypeinfo: dir.join("pagetypeinfo"),
            vmstat: dir.join("vmstat"),
            min_free_kbytes: dir.join("min_free_kbytes"),
            watermark_scale_factor: dir.join("watermark_scale_factor"),
            watermark_boost_factor: dir.join("watermark_boost_factor"),
            page_size: 4096,
        }
    }
}

/// The memory state at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// RFC 3339 UTC.
    pub taken: String,
    /// KiB per page.
    pub page_kb: u64,
    pub buddy: Vec<BuddyZone>,
    pub zones: Vec<ZoneInfo>,
    /// `None` where the file is unreadable (it is root-only) or odd; see
    /// `pagetype_note`.
    pub pagetype: Option<PageTypeInfo>,
    pub pagetype_note: Option<String>,
    #[serde(skip)]
    pub vmstat: VmStat,
    pub sysctls: Sysctls,
}

impl Snapshot {
    /// Read everything from `/proc` now.
    ///
    /// # Errors
    /// When buddyinfo, zoneinfo, vmstat or the sysctls cannot be read or parsed.
    pub fn take() -> Result<Self, MemoryError> {
        Self::read(&Sources::proc())
    }

    /// Read everything from `sources`.
    ///
    /// # Errors
    /// When buddyinfo, zoneinfo, vmstat or the sysctls cannot be read or
    /// parsed, or a buddyinfo zone is missing from zoneinfo. pagetypeinfo is
    /// optional: its problem goes to `pagetype_note`.
    pub fn read(sources: &Sources) -> Result<Self, MemoryError> {
        let buddy = buddyinfo::parse(&read(&sources.buddyinfo)?)?;
        let zones = zoneinfo::parse(&read(&sources.zoneinfo)?)?;
        let vmstat = vmstat::parse(&read(&sources.vmstat)?)?;
        let sysctls = Sysctls {
            min_free_kbytes: sysctls::parse_value(
                "vm.min_free_kbytes",
                &read(&sources.min_free_kbytes)?,
            )?,
            watermark_scale_factor: sysctls::parse_value(
                "vm.watermark_scale_factor",
                &read(&sources.watermark_scale_factor)?,
            )?,
            watermark_boost_factor: match fs::read_to_string(&sources.watermark_boost_factor) {
                Ok(t) => Some(sysctls::parse_value("vm.watermark_boost_factor", &t)?),
                Err(_) => None, // before 5.0
            },
        };
        for b in &buddy {
            if !zones.iter().any(|z| z.node == b.node && z.zone == b.zone) {
                return Err(MemoryError::Mismatch {
                    file: "/proc/buddyinfo",
                    other: "/proc/zoneinfo",
                    reason: format!(
                        "zone {} of node {} is missing from zoneinfo",
                        b.zone, b.node
                    ),
                });
            }
        }
        let (pagetype, pagetype_note) =
            match read(&sources.pagetypeinfo).and_then(|t| pagetypeinfo::parse(&t)) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e.to_string())),
            };
        Ok(Self {
            taken: crate::timestamp::rfc3339(SystemTime::now()),
            page_kb: (sources.page_size / 1024).max(1),
            buddy,
            zones,
            pagetype,
            pagetype_note,
            vmstat,
            sysctls,
        })
    }

    /// The free blocks of a zone.
    #[must_use]
    pub fn buddy_of(&self, node: u32, zone: &str) -> Option<&BuddyZone> {
        self.buddy.iter().find(|b| b.node == node && b.zone == zone)
    }

    /// Pages of all lowmem zones (what `min_free_kbytes` is spread over):
    /// managed pages of every zone but `HighMem` and Movable, as in
    /// `__setup_per_zone_wmarks`.
    #[must_use]
    pub fn lowmem_pages(&self) -> u64 {
        self.zones
            .iter()
            .filter(|z| z.zone != "HighMem" && z.zone != "Movable")
            .map(|z| z.managed)
            .sum()
    }

    /// The zone that matters for kernel (and so atomic) allocations: the
    /// highest populated zone kernel memory can come from (Normal, else
    /// DMA32, else DMA; never Movable or Device), and among several nodes the
    /// one closest to its min watermark.
    #[must_use]
    pub fn key_zone(&self) -> Option<&ZoneInfo> {
        let rank = |z: &ZoneInfo| match z.zone.as_str() {
            "Normal" => 3,
            "DMA32" => 2,
            "DMA" => 1,
            _ => 0,
        };
        self.zones
            .iter()
            .filter(|z| z.is_populated() && rank(z) > 0)
            .max_by(|a, b| {
                rank(a)
                    .cmp(&rank(b))
                    .then_with(|| b.free_above_min().cmp(&a.free_above_min()))
            })
    }

    /// One summary per populated zone.
    #[must_use]
    pub fn summaries(&self) -> Vec<SnapshotSummary> {
        self.zones
            .iter()
            .filter(|z| z.is_populated())
            .map(|z| {
                let buddy = self.buddy_of(z.node, &z.zone);
                SnapshotSummary {
                    taken: self.taken.clone(),
                    node: z.node,
                    zone: z.zone.clone(),
                    managed: z.managed,
                    free: z.free,
                    min: z.min,
                    low: z.low,
                    high: z.high,
                    boost: z.boost.unwrap_or(0),
                    free_above_min: z.free_above_min(),
                    largest_free_order: buddy.and_then(BuddyZone::largest_free_order),
                    free_blocks: buddy.map(BuddyZone::free_blocks_text).unwrap_or_default(),
                    highatomic_blocks: self
                        .pagetype
                        .as_ref()
                        .and_then(|p| p.blocks_of(z.node, &z.zone, "HighAtomic")),
                    min_free_kbytes: self.sysctls.min_free_kbytes,
                    watermark_scale_factor: self.sysctls.watermark_scale_factor,
                }
            })
            .collect()
    }
}

/// One zone at one moment, as written to the memory CSV (columns in
/// [`crate::export::memory::MEMORY_CSV_HEADER`]). Sizes are in pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SnapshotSummary {
    /// When the snapshot was taken, RFC 3339 UTC.
    pub taken: String,
    pub node: u32,
    pub zone: String,
    pub managed: u64,
    pub free: u64,
    pub min: u64,
    pub low: u64,
    pub high: u64,
    pub boost: u64,
    /// `free - min`; negative when below the min watermark.
    pub free_above_min: i64,
    /// Largest order with a free block; empty when the zone has none.
    pub largest_free_order: Option<u32>,
    /// Free blocks of order 0, 1, 2, ... separated by spaces.
    pub free_blocks: String,
    /// Pageblocks in the high-order atomic reserve; empty when pagetypeinfo is unreadable.
    pub highatomic_blocks: Option<u64>,
    pub min_free_kbytes: u64,
    pub watermark_scale_factor: u64,
}

/// At most one snapshot per interval (1 s by default), the first one as
/// soon as a burst of failures starts: call [`SnapshotLimiter::on_failure`]
/// for each failure (or batch of them), take a snapshot when it says so.
#[derive(Debug, Clone)]
pub struct SnapshotLimiter {
    interval: Duration,
    last: Option<Instant>,
    /// Failures that did not trigger a snapshot (inside an interval).
    pub suppressed: u64,
}

impl Default for SnapshotLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(1))
    }
}

impl SnapshotLimiter {
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// A failure happened at `now`: whether to take a snapshot now.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

fn kib_text(kib: u64) -> String {
    if kib >= 10 * 1024 * 1024 {
        format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
    } else if kib >= 10 * 1024 {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    } else {
        format!("{kib} KiB")
    }
}

/// Human size of `pages` pages of `page_kb` KiB.
#[must_use]
pub fn pages_text(pages: u64, page_kb: u64) -> String {
    kib_text(pages.saturating_mul(page_kb))
}

/// One line for under `pagefail watch`'s live table: the key zone's free
/// blocks per order, how many could serve an order-`order` request, and the
/// distance to the min watermark.
#[must_use]
pub fn one_line(snapshot: &Snapshot, order: u32) -> String {
    let Some(z) = snapshot.key_zone() else {
        return "memory: no populated zone in /proc/zoneinfo".to_owned();
    };
    let kb = snapshot.page_kb;
    let above = z.free_above_min();
    let distance = if above >= 0 {
        format!("{} above min", pages_text(above.unsigned_abs(), kb))
    } else {
        format!("{} BELOW min", pages_text(above.unsigned_abs(), kb))
    };
    let blocks = snapshot.buddy_of(z.node, &z.zone).map_or_else(
        || "no buddyinfo".to_owned(),
        |b| {
            let per_order: Vec<String> = b
                .free
                .iter()
                .enumerate()
                .map(|(o, n)| format!("o{o}:{n}"))
                .collect();
            format!(
                "order>={order} blocks {}; free {}",
                b.blocks_at_least(order),
                per_order.join(" ")
            )
        },
    );
    format!(
        "memory node{} {}: free {} ({distance}, min {}); {blocks}",
        z.node,
        z.zone,
        pages_text(z.free, kb),
        pages_text(z.min, kb),
    )
}

#[cfg(test)]
mod tests;
