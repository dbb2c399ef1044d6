//! `/proc/zoneinfo`: watermarks, managed and free pages, lowmem reserves.
//!
//! Each zone starts with `Node N, zone NAME`; the lines read here are
//! `pages free`, `boost` (5.0+), `min`, `low`, `high`, `promo` (6.11+),
//! `spanned`, `present`, `managed`, and `protection: (a, b, ...)` (the
//! `lowmem_reserve` array). Per-node and per-cpu statistics are skipped.
//! Watermarks are computed in `__setup_per_zone_wmarks`:
//! <https://elixir.bootlin.com/linux/v6.18/source/mm/page_alloc.c>.

use serde::Serialize;

use super::{MemoryError, buddyinfo::node_zone, parse_u64};

const FILE: &str = "/proc/zoneinfo";

/// One zone's watermarks and sizes, in pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneInfo {
    pub node: u32,
    pub zone: String,
    pub free: u64,
    /// Temporary watermark boost after fragmentation events (absent before 5.0
    /// and on some distribution kernels).
    pub boost: Option<u64>,
    pub min: u64,
    pub low: u64,
    pub high: u64,
    /// Watermark for NUMA promotion (6.11+).
    pub promo: Option<u64>,
    pub spanned: Option<u64>,
    pub present: Option<u64>,
    pub managed: u64,
    /// `lowmem_reserve[]`: pages kept back from allocations that could have used a higher zone.
    pub protection: Vec<u64>,
}

impl ZoneInfo {
    /// Free pages above the min watermark (negative below it).
    #[must_use]
    pub fn free_above_min(&self) -> i64 {
        i64::try_from(self.free).unwrap_or(i64::MAX) - i64::try_from(self.min).unwrap_or(i64::MAX)
    }

    /// Whether the zone has memory the allocator manages.
    #[must_use]
    pub fn is_populated(&self) -> bool {
        self.managed > 0
    }
}

#[derive(Default)]
struct Partial {
    node: u32,
    zone: String,
    line: usize,
    free: Option<u64>,
    boost: Option<u64>,
    min: Option<u64>,
    low: Option<u64>,
    high: Option<u64>,
    promo: Option<u64>,
    spanned: Option<u64>,
    present: Option<u64>,
    managed: Option<u64>,
    protection: Option<Vec<u64>>,
}

impl Partial {
    fn finish(self) -> Result<ZoneInfo, MemoryError> {
        let missing = |what: &str| {
            MemoryError::parse(
                FILE,
                self.line,
                format!(
                    "zone {} of node {} has no `{what}` line (truncated file?)",
                    self.zone, self.node
                ),
            )
        };
        Ok(ZoneInfo {
            free: self.free.ok_or_else(|| missing("pages free"))?,
            min: self.min.ok_or_else(|| missing("min"))?,
            low: self.low.ok_or_else(|| missing("low"))?,
            high: self.high.ok_or_else(|| missing("high"))?,
            managed: self.managed.ok_or_else(|| missing("managed"))?,
            protection: self.protection.clone().unwrap_or_default(),
            boost: self.boost,
            promo: self.promo,
            spanned: self.spanned,
            present: self.present,
            node: self.node,
            zone: self.zone,
        })
    }
}

fn parse_protection(line_no: usize, text: &str) -> Result<Vec<u64>, MemoryError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| {
            MemoryError::parse(
                FILE,
                line_no,
                format!("protection is not `(a, b, ...)`: `{}`", text.trim()),
            )
        })?;
    inner
        .split(',')
        .map(|t| parse_u64(FILE, line_no, t.trim()))
        .collect()
}

/// Parse `/proc/zoneinfo`.
///
/// # Errors
/// An empty file, no zone header, a value that is not a number, or a zone
/// without its `pages free`, `min`, `low`, `high` or `managed` line.
pub fn parse(text: &str) -> Result<Vec<ZoneInfo>, MemoryError> {
    let mut zones = Vec::new();
    let mut cur: Option<Partial> = None;
    if text.trim().is_empty() {
        return Err(MemoryError::Empty { file: FILE });
    }
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.starts_with("Node") {
            let (node, zone, _) = node_zone(FILE, line_no, line)?;
            if let Some(done) = cur.take() {
                zones.push(done.finish()?);
            }
            cur = Some(Partial {
                node,
                zone: zone.to_owned(),
                line: line_no,
                ..Partial::default()
            });
            continue;
        }
        let Some(z) = cur.as_mut() else {
            return Err(MemoryError::parse(
                FILE,
                line_no,
                format!(
                    "`{}` before the first `Node N, zone NAME` line",
                    line.trim()
                ),
            ));
        };
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("protection:") {
            z.protection = Some(parse_protection(line_no, rest)?);
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let slot = match (key, value) {
            ("pages", "free") => {
                let v = words.next().ok_or_else(|| {
                    MemoryError::parse(FILE, line_no, "`pages free` without a value".to_owned())
                })?;
                z.free = Some(parse_u64(FILE, line_no, v)?);
                continue;
            }
            ("boost", _) => &mut z.boost,
            ("min", _) => &mut z.min,
            ("low", _) => &mut z.low,
            ("high", _) => &mut z.high,
            ("promo", _) => &mut z.promo,
            ("spanned", _) => &mut z.spanned,
            ("present", _) => &mut z.present,
            ("managed", _) => &mut z.managed,
            _ => continue,
        };
        *slot = Some(parse_u64(FILE, line_no, value)?);
    }
    match cur {
        Some(done) => zones.push(done.finish()?),
        None => {
            return Err(MemoryError::parse(
                FILE,
                1,
                "no `Node N, zone NAME` line".to_owned(),
            ));
        }
    }
    Ok(zones)
}
