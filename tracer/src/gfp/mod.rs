//! gfp masks: decoding by the running kernel's own table.
//!
//! Bit values of gfp flags changed many times across kernel versions, so a
//! live trace is decoded with the table the kernel itself prints with: the
//! `__print_flags(REC->gfp_flags, "|", {mask, "NAME"}, ...)` list in the
//! `kmem/mm_page_alloc` format file. Masks there are C constant expressions
//! (`(( gfp_t)((((1UL))) << (5)))|...`), evaluated by [`expr`].
//! Offline logs use the names the kernel printed, or the per-version tables of
//! [`versions`]. What a mask means (atomic, nowarn, accounted, ...) is
//! answered by [`semantics`] alone.

mod expr;
pub mod semantics;
pub mod versions;

pub use semantics::GfpSemantics;
use semantics::Masks;

use thiserror::Error;

/// Errors reading a gfp table out of a tracepoint format file.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GfpError {
    #[error("the format file has no __print_flags list for gfp_flags")]
    NoPrintFlags,
    #[error("gfp table entry {index}: {reason}")]
    BadEntry { index: usize, reason: String },
    #[error("the gfp table lists none of __GFP_HIGH, __GFP_DIRECT_RECLAIM/__GFP_WAIT")]
    MissingBits,
}

/// A kernel's gfp flag names, in the order the kernel prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GfpTable {
    entries: Vec<(u64, String)>,
    /// The masks the collector tests on every record, looked up by name once.
    masks: Masks,
}

impl GfpTable {
    /// Build a table from `(mask, name)` pairs in print order.
    #[must_use]
    pub fn from_entries(entries: Vec<(u64, String)>) -> Self {
        let masks = Masks::of(&entries);
        Self { entries, masks }
    }

    /// The `(mask, name)` pairs, in print order.
    #[must_use]
    pub fn entries(&self) -> &[(u64, String)] {
        &self.entries
    }

    /// Parse the `__print_flags` list of gfp names out of a tracepoint format
    /// file (`/sys/kernel/tracing/events/kmem/mm_page_alloc/format`).
    ///
    /// # Errors
    /// When the file holds no such list or an entry cannot be evaluated.
    pub fn from_format(format: &str) -> Result<Self, GfpError> {
        let start = format
            .find("__print_flags(")
            .ok_or(GfpError::NoPrintFlags)?;
        let rest = &format[start + "__print_flags(".len()..];
        // Skip the first two arguments: the value and the delimiter string.
        let list_start = rest.find('{').ok_or(GfpError::NoPrintFlags)?;
        let mut entries = Vec::new();
        let bytes = rest.as_bytes();
        let mut i = list_start;
        let mut index = 0;
        while i < bytes.len() && bytes[i] == b'{' {
            let end = matching_brace(rest, i).ok_or_else(|| GfpError::BadEntry {
                index,
                reason: "unbalanced braces".to_owned(),
            })?;
            let body = &rest[i + 1..end];
            let comma = body.rfind(',').ok_or_else(|| GfpError::BadEntry {
                index,
                reason: format!("no comma in {{{body}}}"),
            })?;
            let (mask_text, name_text) = (&body[..comma], body[comma + 1..].trim());
            // The list ends with `{ 0, ((void *)0) }` (or `{ -1, NULL }` on old kernels).
            if let Some(name) = name_text
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
            {
                let mask = expr::eval(mask_text).map_err(|reason| GfpError::BadEntry {
                    index,
                    reason: format!("{reason} in `{}`", mask_text.trim()),
                })?;
                entries.push((mask, name.to_owned()));
            }
            index += 1;
            i = end + 1;
            while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
                i += 1;
            }
        }
        if entries.is_empty() {
            return Err(GfpError::NoPrintFlags);
        }
        let table = Self::from_entries(entries);
        if table.bit("__GFP_HIGH").is_none() || table.direct_reclaim_mask() == 0 {
            return Err(GfpError::MissingBits);
        }
        Ok(table)
    }

    /// The mask of a flag by its name (`__GFP_HIGH`, `GFP_ATOMIC`, ...).
    #[must_use]
    pub fn bit(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, n)| n == name)
            .map(|(mask, _)| *mask)
    }

    /// `__GFP_HIGH`: the marker of an atomic request in every kernel era.
    #[must_use]
    pub fn high_mask(&self) -> u64 {
        self.masks.high
    }

    /// `__GFP_DIRECT_RECLAIM` (4.4+) or `__GFP_WAIT` (before): the caller may sleep.
    #[must_use]
    pub fn direct_reclaim_mask(&self) -> u64 {
        self.masks.direct_reclaim
    }

    /// `__GFP_NOWARN` (0 when the table does not list it).
    #[must_use]
    pub fn nowarn_mask(&self) -> u64 {
        self.masks.nowarn
    }

    /// `__GFP_ACCOUNT` (memory-cgroup charged; `__GFP_KMEMCG` before 4.5).
    #[must_use]
    pub fn account_mask(&self) -> u64 {
        self.masks.account
    }

    /// What a mask of this kernel means ([`GfpSemantics`]).
    #[must_use]
    pub fn semantics(&self, gfp: u64) -> GfpSemantics {
        self.masks.semantics(gfp)
    }

    /// Atomic: the request cannot sleep ([`GfpSemantics::atomic`]).
    #[must_use]
    pub fn is_atomic(&self, gfp: u64) -> bool {
        self.semantics(gfp).atomic()
    }

    /// Whether the caller asked the kernel not to warn (`__GFP_NOWARN`).
    #[must_use]
    pub fn is_nowarn(&self, gfp: u64) -> bool {
        self.semantics(gfp).nowarn
    }

    /// Names as the kernel's `__print_flags` would print them: composite names
    /// first when all their bits are set, each bit used once, unknown bits
    /// appended in hex. Zero decodes as `none`, as the kernel prints it.
    #[must_use]
    pub fn decode(&self, gfp: u64) -> String {
        if gfp == 0 {
            return "none".to_owned();
        }
        let mut left = gfp;
        let mut names: Vec<&str> = Vec::new();
        for (mask, name) in &self.entries {
            if *mask != 0 && left & mask == *mask {
                names.push(name);
                left &= !mask;
            }
        }
        let mut out = names.join("|");
        if left != 0 {
            if !out.is_empty() {
                out.push('|');
            }
            out.push_str(&format!("{left:#x}"));
        }
        out
    }
}

fn matching_brace(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    for (i, c) in s.bytes().enumerate().skip(open) {
        match c {
            b'"' => in_str = !in_str,
            b'{' if !in_str => depth += 1,
            b'}' if !in_str => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Format a gfp mask as the CSV's `gfp` column does: `0x820`.
#[must_use]
pub fn hex(gfp: u64) -> String {
    format!("{gfp:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str = include_str!("../../../tests/fixtures/format/mm_page_alloc-6.18.txt");
    // Captured from Debian cloud kernels booted under qemu (`cargo xtask vm-capture`).
    const FORMAT_5_10: &str = include_str!("../../../tests/fixtures/format/mm_page_alloc-5.10.txt");
    const FORMAT_6_1: &str = include_str!("../../../tests/fixtures/format/mm_page_alloc-6.1.txt");
    const FORMAT_6_12: &str = include_str!("../../../tests/fixtures/format/mm_page_alloc-6.12.txt");

    #[test]
    fn parses_6_18_table() {
        let t = GfpTable::from_format(FORMAT_6_18).unwrap();
        assert_eq!(t.bit("__GFP_HIGH"), Some(0x20));
        assert_eq!(t.bit("__GFP_NOWARN"), Some(0x2000));
        assert_eq!(t.bit("GFP_ATOMIC"), Some(0x820));
        assert_eq!(t.bit("GFP_KERNEL"), Some(0xcc0));
        assert_eq!(t.bit("GFP_KERNEL_ACCOUNT"), Some(0x400cc0));
        assert_eq!(t.bit("GFP_NOWAIT"), Some(0x2800));
        assert_eq!(t.bit("__GFP_NO_OBJ_EXT"), Some(1 << 24));
        assert_eq!(t.direct_reclaim_mask(), 0x400);
        assert_eq!(t.decode(0x820), "GFP_ATOMIC");
        assert_eq!(t.decode(0x920), "GFP_ATOMIC|__GFP_ZERO");
        assert_eq!(t.decode(0x400cc0), "GFP_KERNEL_ACCOUNT");
        assert_eq!(t.decode(0x40_2cc0), "GFP_KERNEL_ACCOUNT|__GFP_NOWARN");
        assert_eq!(t.decode(0), "none");
        assert_eq!(t.decode(1 << 40 | 0x820), "GFP_ATOMIC|0x10000000000");
        // GFP_TRANSHUGE is listed first and wins over its parts.
        let th = t.bit("GFP_TRANSHUGE").unwrap();
        assert!(t.decode(th).starts_with("GFP_TRANSHUGE"));
        assert!(t.is_atomic(0x820));
        assert!(t.is_atomic(0x2800)); // GFP_NOWAIT: no direct reclaim
        assert!(!t.is_atomic(0xcc0));
        assert!(t.is_nowarn(0x2820));
        assert_eq!(t.account_mask(), 0x400000);
    }

    #[test]
    fn parses_5_10_table() {
        // 5.10 prints the masks as plain hex constants: (( gfp_t)0x20u).
        let t = GfpTable::from_format(FORMAT_5_10).unwrap();
        assert_eq!(t.bit("GFP_ATOMIC"), Some(0xa20));
        assert_eq!(t.bit("__GFP_ATOMIC"), Some(0x200));
        assert_eq!(t.bit("__GFP_HIGH"), Some(0x20));
        assert_eq!(t.bit("GFP_KERNEL"), Some(0xcc0));
        assert_eq!(t.bit("GFP_KERNEL_ACCOUNT"), Some(0x400cc0));
        assert_eq!(t.bit("GFP_NOWAIT"), Some(0x800));
        assert_eq!(t.bit("__GFP_NOWARN"), Some(0x2000));
        assert_eq!(t.direct_reclaim_mask(), 0x400);
        assert_eq!(t.decode(0xa20), "GFP_ATOMIC");
        assert_eq!(t.decode(0xb20), "GFP_ATOMIC|__GFP_ZERO");
        assert_eq!(t.decode(0x2a20), "GFP_ATOMIC|__GFP_NOWARN");
        assert!(t.is_atomic(0xa20));
        assert!(t.is_atomic(0x800));
        assert!(!t.is_atomic(0xcc0));
    }

    #[test]
    fn parses_6_1_table() {
        let t = GfpTable::from_format(FORMAT_6_1).unwrap();
        assert_eq!(t.bit("GFP_ATOMIC"), Some(0xa20));
        assert_eq!(t.bit("__GFP_ATOMIC"), Some(0x200));
        assert_eq!(t.bit("__GFP_HIGH"), Some(0x20));
        assert_eq!(t.bit("GFP_KERNEL"), Some(0xcc0));
        assert_eq!(t.bit("GFP_KERNEL_ACCOUNT"), Some(0x400cc0));
        assert_eq!(t.bit("GFP_NOWAIT"), Some(0x800));
        assert_eq!(t.bit("__GFP_ZEROTAGS"), Some(0x800000));
        assert_eq!(t.direct_reclaim_mask(), 0x400);
        assert_eq!(t.decode(0xa20), "GFP_ATOMIC");
        assert_eq!(t.decode(0xb20), "GFP_ATOMIC|__GFP_ZERO");
        assert!(t.is_atomic(0xa20));
        assert!(!t.is_atomic(0xcc0));
        assert!(t.is_nowarn(0x2a20));
    }

    #[test]
    fn parses_6_12_table() {
        // 6.12 prints shifts again, like 6.18, and has no __GFP_ATOMIC.
        let t = GfpTable::from_format(FORMAT_6_12).unwrap();
        assert_eq!(t.bit("GFP_ATOMIC"), Some(0x820));
        assert_eq!(t.bit("__GFP_ATOMIC"), None);
        assert_eq!(t.bit("__GFP_HIGH"), Some(0x20));
        assert_eq!(t.bit("GFP_KERNEL"), Some(0xcc0));
        assert_eq!(t.bit("GFP_KERNEL_ACCOUNT"), Some(0x400cc0));
        assert_eq!(t.bit("GFP_NOWAIT"), Some(0x2800));
        assert_eq!(t.direct_reclaim_mask(), 0x400);
        assert_eq!(t.decode(0x820), "GFP_ATOMIC");
        assert_eq!(t.decode(0x920), "GFP_ATOMIC|__GFP_ZERO");
        assert!(t.is_atomic(0x820));
        assert!(t.is_atomic(0x2800));
        assert!(!t.is_atomic(0xcc0));
    }

    #[test]
    fn rejects_files_without_a_table() {
        assert_eq!(
            GfpTable::from_format("print fmt: \"x\", REC->x"),
            Err(GfpError::NoPrintFlags)
        );
        let bad = "__print_flags(REC->gfp_flags, \"|\", {(unsigned long)(1 <<), \"__GFP_HIGH\"})";
        assert!(matches!(
            GfpTable::from_format(bad),
            Err(GfpError::BadEntry { index: 0, .. })
        ));
        let no_bits = "__print_flags(REC->gfp_flags, \"|\", {(unsigned long)0x1u, \"__GFP_DMA\"}, { 0, ((void *)0) })";
        assert_eq!(GfpTable::from_format(no_bits), Err(GfpError::MissingBits));
    }
}
