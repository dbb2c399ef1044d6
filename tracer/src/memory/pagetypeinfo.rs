//! `/proc/pagetypeinfo` (root only): free blocks per migrate type, and
//! pageblocks per type, including the high-order atomic reserve
//! (`HighAtomic`), which the kernel builds after high-order atomic
//! allocations succeed, up to about 1% of a zone (`reserve_highatomic_pageblock`).

use serde::Serialize;

use super::{MemoryError, buddyinfo::node_zone, parse_u64};

const FILE: &str = "/proc/pagetypeinfo";

/// Free blocks of one migrate type in one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeFree {
    pub node: u32,
    pub zone: String,
    pub migrate_type: String,
    /// Free blocks per order. Newer kernels stop counting at 100000 and print
    /// `>100000`; that is read as 100000.
    pub free: Vec<u64>,
}

/// Pageblocks per migrate type in one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneBlocks {
    pub node: u32,
    pub zone: String,
    /// `(migrate type, pageblocks)`, in the file's column order.
    pub blocks: Vec<(String, u64)>,
}

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageTypeInfo {
    pub pageblock_order: u32,
    pub pages_per_block: u64,
    pub free: Vec<TypeFree>,
    pub blocks: Vec<ZoneBlocks>,
}

impl PageTypeInfo {
    /// Pageblocks of `migrate_type` in a zone.
    #[must_use]
    pub fn blocks_of(&self, node: u32, zone: &str, migrate_type: &str) -> Option<u64> {
        self.blocks
            .iter()
            .find(|b| b.node == node && b.zone == zone)?
            .blocks
            .iter()
            .find(|(t, _)| t == migrate_type)
            .map(|(_, n)| *n)
    }

    /// Free pages of `migrate_type` in a zone.
    #[must_use]
    pub fn free_pages_of(&self, node: u32, zone: &str, migrate_type: &str) -> Option<u64> {
        self.free
            .iter()
            .find(|f| f.node == node && f.zone == zone && f.migrate_type == migrate_type)
            .map(|f| f.free.iter().enumerate().map(|(o, n)| n << o).sum())
    }
}

fn count(line_no: usize, token: &str) -> Result<u64, MemoryError> {
    // `>100000`: the kernel stopped counting (5.5+, to bound the time spent under the zone lock).
    parse_u64(FILE, line_no, token.strip_prefix('>').unwrap_or(token))
}

/// A row of the block-count table: `Node 0, zone Normal  1043 12 ...`, one
/// count per type of the table's header.
fn block_row(
    line_no: usize,
    node: u32,
    zone: &str,
    tail: &str,
    types: &[String],
) -> Result<ZoneBlocks, MemoryError> {
    let counts = tail
        .split_whitespace()
        .map(|c| count(line_no, c))
        .collect::<Result<Vec<_>, _>>()?;
    if counts.len() != types.len() {
        return Err(MemoryError::parse(
            FILE,
            line_no,
            format!(
                "{} block counts for {} types (truncated file?)",
                counts.len(),
                types.len()
            ),
        ));
    }
    Ok(ZoneBlocks {
        node,
        zone: zone.to_owned(),
        blocks: types.iter().cloned().zip(counts).collect(),
    })
}

/// A row of the free-count table: `Node 0, zone Normal, type Movable  3 2 ...`,
/// free blocks per order of one migrate type (`line` is the whole line, for
/// errors).
fn free_row(
    line_no: usize,
    node: u32,
    zone: &str,
    tail: &str,
    line: &str,
) -> Result<TypeFree, MemoryError> {
    let rest = tail
        .trim_start()
        .strip_prefix(',')
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("type"))
        .ok_or_else(|| MemoryError::parse(FILE, line_no, format!("no `type` column: `{line}`")))?;
    let mut words = rest.split_whitespace();
    let migrate_type = words
        .next()
        .ok_or_else(|| MemoryError::parse(FILE, line_no, "no type name".to_owned()))?;
    let counts = words
        .map(|c| count(line_no, c))
        .collect::<Result<Vec<_>, _>>()?;
    if counts.is_empty() {
        return Err(MemoryError::parse(
            FILE,
            line_no,
            "no free counts (truncated file?)".to_owned(),
        ));
    }
    Ok(TypeFree {
        node,
        zone: zone.to_owned(),
        migrate_type: migrate_type.to_owned(),
        free: counts,
    })
}

/// Parse `/proc/pagetypeinfo`.
///
/// # Errors
/// An empty file, no `Page block order` line, no free-count or block-count
/// table, or a value that is not a number.
pub fn parse(text: &str) -> Result<PageTypeInfo, MemoryError> {
    if text.trim().is_empty() {
        return Err(MemoryError::Empty { file: FILE });
    }
    let mut pageblock_order = None;
    let mut pages_per_block = None;
    let mut free = Vec::new();
    let mut blocks = Vec::new();
    let mut block_types: Option<Vec<String>> = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with("Free pages count per migrate type") {
            continue;
        }
        if let Some(v) = t.strip_prefix("Page block order:") {
            pageblock_order = Some(parse_u64(FILE, line_no, v.trim())?);
        } else if let Some(v) = t.strip_prefix("Pages per block:") {
            pages_per_block = Some(parse_u64(FILE, line_no, v.trim())?);
        } else if let Some(v) = t.strip_prefix("Number of blocks type") {
            block_types = Some(v.split_whitespace().map(str::to_owned).collect());
        } else if t.starts_with("Node") {
            let (node, zone, tail) = node_zone(FILE, line_no, t)?;
            if let Some(types) = &block_types {
                blocks.push(block_row(line_no, node, zone, tail, types)?);
            } else {
                free.push(free_row(line_no, node, zone, tail, t)?);
            }
        } else {
            return Err(MemoryError::parse(
                FILE,
                line_no,
                format!("unexpected line `{t}`"),
            ));
        }
    }
    let pageblock_order = pageblock_order
        .ok_or_else(|| MemoryError::parse(FILE, 1, "no `Page block order:` line".to_owned()))?;
    if free.is_empty() || blocks.is_empty() {
        return Err(MemoryError::parse(
            FILE,
            text.lines().count(),
            "missing the free-count or the block-count table (truncated file?)".to_owned(),
        ));
    }
    Ok(PageTypeInfo {
        pageblock_order: u32::try_from(pageblock_order).map_err(|_| {
            MemoryError::parse(FILE, 1, format!("page block order {pageblock_order}"))
        })?,
        pages_per_block: pages_per_block.unwrap_or(1 << pageblock_order.min(63)),
        free,
        blocks,
    })
}
