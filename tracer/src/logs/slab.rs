//! `SLUB: Unable to allocate memory` failures: the slab allocator could not
//! get pages for a new slab (`slab_out_of_memory`,
//! <https://elixir.bootlin.com/linux/v6.1/source/mm/slub.c#L2813>). It is the
//! same incident as a `page allocation failure` seen one level up, printed
//! also when the page allocator was asked not to warn:
//!
//! ```text
//! SLUB: Unable to allocate memory on node -1, gfp=0x900(GFP_NOWAIT|__GFP_ZERO)   (4.6+)
//! SLUB: Unable to allocate memory on node -1 (gfp=0x20)                          (3.x to 4.5)
//!   cache: kmalloc-1024(1793:c8ed...), object size: 1024, buffer size: 1024, default order: 3, min order: 0
//!   node 0: slabs: 663, objs: 20964, free: 0
//! ```
//!
//! The cache name may carry a memory cgroup (`(id:name)`), which is dropped.
//! The failed order is the cache's `min order`: the last one tried.

use serde::Serialize;

use super::{Report, lines::leading_u64};

pub const SLUB: &str = "SLUB: Unable to allocate memory";

/// One slab failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlabFailure {
    /// 1-based line number of the `SLUB:` line.
    pub line: u64,
    /// Seconds since boot of the `SLUB:` line.
    pub mono: Option<f64>,
    pub wall_us: Option<i64>,
    pub host: Option<String>,
    /// NUMA node asked for (`-1`: any).
    pub node: Option<i64>,
    pub gfp: u64,
    /// Names as printed (4.6+).
    pub gfp_printed: Option<String>,
    /// From the `cache:` line; `None` when the log was cut before it.
    pub cache: Option<String>,
    /// The cache's `min order`, the last order tried.
    pub order: Option<u32>,
    /// The cache's `default order`, tried first.
    pub default_order: Option<u32>,
}

impl SlabFailure {
    /// The task name a slab failure takes in the CSV summary and tables:
    /// `[slab:CACHE]` (like `[other]`, a name no task has), so that slab
    /// rows keep the CSV's columns and sort apart from tasks.
    #[must_use]
    pub fn comm(&self) -> String {
        format!("[slab:{}]", self.cache.as_deref().unwrap_or("?"))
    }

    /// As a frameless report (pid unknown, context `unknown`, path `none`),
    /// for the gfp decoding and the summary rows shared with page reports.
    #[must_use]
    pub fn as_report(&self) -> Report {
        Report {
            line: self.line,
            mono: self.mono,
            wall_us: self.wall_us,
            host: self.host.clone(),
            comm: self.comm(),
            pid: None,
            cpu: None,
            kernel: None,
            order: self.order.unwrap_or(0),
            gfp: self.gfp,
            gfp_printed: self.gfp_printed.clone(),
            frames: Vec::new(),
            frames_dropped: 0,
            mem: None,
            partial: self.cache.is_none(),
        }
    }
}

/// Recognize the `SLUB: Unable to allocate memory` line: (node, gfp, names).
#[must_use]
pub fn slub_line(body: &str) -> Option<(Option<i64>, u64, Option<&str>)> {
    let t = body.trim();
    let rest = t.strip_prefix(SLUB)?;
    let rest = rest.trim_start().strip_prefix("on node ")?;
    let (neg, digits) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (n, rest) = leading_u64(digits);
    let node = n
        .and_then(|n| i64::try_from(n).ok())
        .map(|n| if neg { -n } else { n });
    let at = rest.find("gfp=0x")?;
    let m = &rest[at + "gfp=0x".len()..];
    let hex_len = m.bytes().take_while(u8::is_ascii_hexdigit).count();
    let gfp = u64::from_str_radix(&m[..hex_len], 16).ok()?;
    let names = m[hex_len..]
        .strip_prefix('(')
        .and_then(|r| r.find(')').map(|end| &r[..end]))
        .filter(|n| !n.is_empty());
    Some((node, gfp, names))
}

/// The `cache:` line: (name, default order, min order).
#[must_use]
pub fn cache_line(body: &str) -> Option<(&str, Option<u32>, Option<u32>)> {
    let rest = body.trim().strip_prefix("cache: ")?;
    let (name, fields) = rest.split_once(", ")?;
    // `kmalloc-1024(1793:c8ed...)`: the memory cgroup's copy of the cache.
    let name = match name.find('(') {
        Some(at) if name.ends_with(')') && name[at..].contains(':') => &name[..at],
        _ => name,
    };
    let num = |key: &str| {
        fields
            .find(key)
            .and_then(|at| leading_u64(&fields[at + key.len()..]).0)
            .and_then(|n| u32::try_from(n).ok())
    };
    Some((name, num("default order: "), num("min order: ")))
}

/// `node 0: slabs: 663, objs: 20964, free: 0`, the last lines of a failure.
#[must_use]
pub fn is_node_line(body: &str) -> bool {
    let t = body.trim_start();
    t.starts_with("node ") && t.contains(": slabs: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_eras() {
        assert_eq!(
            slub_line("SLUB: Unable to allocate memory on node -1 (gfp=0x20)"),
            Some((Some(-1), 0x20, None))
        );
        assert_eq!(
            slub_line(
                "SLUB: Unable to allocate memory on node -1, gfp=0x900(GFP_NOWAIT|__GFP_ZERO)"
            ),
            Some((Some(-1), 0x900, Some("GFP_NOWAIT|__GFP_ZERO")))
        );
        assert_eq!(slub_line("SLUB: Unable to allocate memory on node"), None);
        assert_eq!(
            cache_line(
                "  cache: kmalloc-1024(1793:c8edefa905), object size: 1024, buffer size: 1024, default order: 3, min order: 0"
            ),
            Some(("kmalloc-1024", Some(3), Some(0)))
        );
        assert_eq!(
            cache_line(
                "cache: page->ptl, object size: 72, buffer size: 72, default order: 0, min order: 0"
            ),
            Some(("page->ptl", Some(0), Some(0)))
        );
        assert!(is_node_line("  node 1: slabs: 14, objs: 556, free: 0"));
        assert!(!is_node_line("Node 0 DMA free:13312kB"));
    }
}
