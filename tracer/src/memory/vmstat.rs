//! `/proc/vmstat`: counters since boot; pagefail shows deltas over a window.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{MemoryError, parse_u64};

const FILE: &str = "/proc/vmstat";

/// Counters worth showing with allocation failures: direct reclaim stalls,
/// compaction, kswapd waking too often, reclaim scanning and stealing.
/// Prefixes: `allocstall` matches `allocstall_dma32`, `allocstall_normal`, ...
pub const WATCHED: [&str; 9] = [
    "allocstall",
    "compact_stall",
    "compact_fail",
    "compact_success",
    "kswapd_low_wmark_hit_quickly",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgsteal_kswapd",
    "pgsteal_direct",
];

/// All counters by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VmStat(pub BTreeMap<String, u64>);

impl VmStat {
    /// A counter, if this kernel has it.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied()
    }

    /// The change from `earlier` to `self` (counters never go back; a
    /// counter absent earlier counts from 0).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.get(k).unwrap_or(0))))
                .collect(),
        )
    }

    /// The watched counters, `allocstall_*` summed into `allocstall`, in
    /// [`WATCHED`] order; those this kernel lacks are left out.
    #[must_use]
    pub fn watched(&self) -> Vec<(&'static str, u64)> {
        WATCHED
            .iter()
            .filter_map(|&name| {
                if name == "allocstall" {
                    let mut any = false;
                    let sum = self
                        .0
                        .iter()
                        .filter(|(k, _)| k.starts_with("allocstall"))
                        .map(|(_, v)| {
                            any = true;
                            *v
                        })
                        .sum();
                    any.then_some((name, sum))
                } else {
                    self.get(name).map(|v| (name, v))
                }
            })
            .collect()
    }
}

/// Parse `/proc/vmstat`.
///
/// # Errors
/// An empty file, a line that is not `name value`, or a value that is not a number.
pub fn parse(text: &str) -> Result<VmStat, MemoryError> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(MemoryError::parse(
                FILE,
                line_no,
                format!("expected `name value`: `{line}`"),
            ));
        };
        map.insert(name.to_owned(), parse_u64(FILE, line_no, value)?);
    }
    if map.is_empty() {
        return Err(MemoryError::Empty { file: FILE });
    }
    Ok(VmStat(map))
}
