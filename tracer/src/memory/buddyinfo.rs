//! `/proc/buddyinfo`: free blocks per order, per zone.
//!
//! One line per populated zone: `Node 0, zone   Normal   3 2 1 85 ...`, the
//! counts being free blocks of order 0, 1, 2, ... An order-N request needs a
//! free block of order N or larger.

use serde::Serialize;

use super::{MemoryError, parse_u64};

const FILE: &str = "/proc/buddyinfo";

/// Free blocks of one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuddyZone {
    pub node: u32,
    pub zone: String,
    /// `free[n]`: free blocks of order `n` (each `2^n` pages).
    pub free: Vec<u64>,
}

impl BuddyZone {
    /// The largest order with a free block, if any.
    #[must_use]
    pub fn largest_free_order(&self) -> Option<u32> {
        self.free
            .iter()
            .rposition(|&n| n > 0)
            .and_then(|o| u32::try_from(o).ok())
    }

    /// The free block counts by order, space-separated (the memory CSV's
    /// `free_blocks` column).
    #[must_use]
    pub fn free_blocks_text(&self) -> String {
        self.free
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Free blocks of order `order` or larger (each can serve an order-`order` request).
    #[must_use]
    pub fn blocks_at_least(&self, order: u32) -> u64 {
        self.free.iter().skip(order as usize).sum()
    }

    /// Free pages in blocks of order `order` or larger.
    #[must_use]
    pub fn pages_at_least(&self, order: u32) -> u64 {
        self.free
            .iter()
            .enumerate()
            .skip(order as usize)
            .map(|(o, n)| n << o)
            .sum()
    }
}

/// Parse the `Node N, zone NAME` head shared by buddyinfo and pagetypeinfo:
/// returns the node, the zone name and what follows the name.
pub(super) fn node_zone<'a>(
    file: &'static str,
    line_no: usize,
    line: &'a str,
) -> Result<(u32, &'a str, &'a str), MemoryError> {
    let bad = |reason: &str| MemoryError::parse(file, line_no, format!("{reason}: `{line}`"));
    let rest = line
        .trim_start()
        .strip_prefix("Node")
        .ok_or_else(|| bad("expected `Node N, zone NAME`"))?;
    let (node, rest) = rest
        .split_once(',')
        .ok_or_else(|| bad("no comma after the node number"))?;
    let node: u32 = node
        .trim()
        .parse()
        .map_err(|_| bad("the node is not a number"))?;
    let rest = rest
        .trim_start()
        .strip_prefix("zone")
        .ok_or_else(|| bad("expected `zone` after the node"))?
        .trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ',')
        .unwrap_or(rest.len());
    let (zone, tail) = rest.split_at(end);
    if zone.is_empty() {
        return Err(bad("no zone name"));
    }
    Ok((node, zone, tail))
}

/// Order-`order` requests free lists of counts `free` (index = order)
/// could serve: each free block of order `k >= order` holds `2^(k - order)`
/// of them. Saturates instead of overflowing.
#[must_use]
pub fn order_capacity(free: &[u64], order: usize) -> u64 {
    free.iter()
        .enumerate()
        .skip(order)
        .map(|(k, n)| n.saturating_mul(1u64 << (k - order).min(63)))
        .fold(0, u64::saturating_add)
}

/// Parse `/proc/buddyinfo`.
///
/// # Errors
/// An empty file, a line that is not `Node N, zone NAME counts...`, a count
/// that is not a number, or lines with different numbers of orders (a
/// truncated file).
pub fn parse(text: &str) -> Result<Vec<BuddyZone>, MemoryError> {
    let mut zones = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (node, zone, tail) = node_zone(FILE, line_no, line)?;
        let free = tail
            .split_whitespace()
            .map(|t| parse_u64(FILE, line_no, t))
            .collect::<Result<Vec<_>, _>>()?;
        if free.is_empty() {
            return Err(MemoryError::parse(
                FILE,
                line_no,
                format!("zone {zone} has no free counts (truncated file?)"),
            ));
        }
        if let Some(first) = zones.first().map(|z: &BuddyZone| z.free.len())
            && first != free.len()
        {
            return Err(MemoryError::parse(
                FILE,
                line_no,
                format!(
                    "zone {zone} lists {} orders, the first zone {first} (truncated file?)",
                    free.len()
                ),
            ));
        }
        zones.push(BuddyZone {
            node,
            zone: zone.to_owned(),
            free,
        });
    }
    if zones.is_empty() {
        return Err(MemoryError::Empty { file: FILE });
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_capacity_counts_requests_each_block_serves() {
        assert_eq!(order_capacity(&[5, 2, 0, 1], 0), 5 + 4 + 8);
        assert_eq!(order_capacity(&[5, 2, 0, 1], 1), 2 + 4);
        assert_eq!(order_capacity(&[5, 2, 0, 1], 2), 2);
        assert_eq!(order_capacity(&[5, 2, 0, 0], 2), 0);
        assert_eq!(order_capacity(&[], 3), 0);
    }
}
