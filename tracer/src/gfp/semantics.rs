//! What a gfp mask means: the one place that answers "atomic? nowarn?
//! accounted to a memory cgroup?" for every caller and every kernel era.
//!
//! A request is described by [`GfpSemantics`], obtained from
//! - a mask and the running kernel's own table ([`super::GfpTable::semantics`]),
//! - the flag names a kernel printed (`GFP_ATOMIC|__GFP_COMP`, [`GfpSemantics::of_names`]),
//! - a mask and a kernel release, decoded with that release's table
//!   ([`GfpSemantics::of_kernel_mask`], tables in [`super::versions`]),
//! - a summary CSV row's `gfp_flags`, `gfp` and `kernel` columns together
//!   ([`GfpSemantics::of_printed`]).
//!
//! The kernel program makes the same atomic decision from the two masks the
//! loader passes it ([`super::GfpTable::high_mask`], [`super::GfpTable::direct_reclaim_mask`]);
//! everything in user space asks this module.
//!
//! Names of every era are understood: the 3.x tracepoint printed single bits
//! without the leading underscores (`GFP_HIGH`, `GFP_WAIT`), and the
//! composite names keep their meaning across eras for the marks below
//! (`GFP_KERNEL` may always sleep, `GFP_ATOMIC` always has `__GFP_HIGH`).

use super::versions;

/// The facts about one allocation request that pagefail reasons about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each field is one independent gfp flag"
)]
pub struct GfpSemantics {
    /// `__GFP_HIGH`: may dip into the reserve below the min watermark.
    pub high: bool,
    /// `__GFP_DIRECT_RECLAIM` (4.4+) or `__GFP_WAIT` (before): may sleep to reclaim.
    pub direct_reclaim: bool,
    /// `__GFP_NOWARN`: the caller asked the kernel not to warn on failure.
    pub nowarn: bool,
    /// `__GFP_NORETRY`: an opportunistic try that gives up early.
    pub noretry: bool,
    /// `__GFP_ACCOUNT` (4.5+) or `__GFP_KMEMCG` (3.8 to 3.18): charged to a memory cgroup.
    pub account: bool,
    /// `__GFP_COMP`: a compound (high-order, multi-page) allocation.
    pub comp: bool,
}

impl GfpSemantics {
    /// Atomic: the request cannot sleep. `__GFP_HIGH` set, or no direct
    /// reclaim (`GFP_ATOMIC`, `GFP_NOWAIT`), in every kernel era.
    #[must_use]
    pub fn atomic(self) -> bool {
        self.high || !self.direct_reclaim
    }

    /// A flag on either side is set in the result.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self {
            high: self.high || other.high,
            direct_reclaim: self.direct_reclaim || other.direct_reclaim,
            nowarn: self.nowarn || other.nowarn,
            noretry: self.noretry || other.noretry,
            account: self.account || other.account,
            comp: self.comp || other.comp,
        }
    }

    /// From flag names as a kernel printed them, `|`-separated
    /// (`GFP_KERNEL_ACCOUNT|__GFP_NOWARN`). Unknown names and leftover hex
    /// (`0x10000000000`) say nothing. Composite names whose marks changed
    /// across eras (`GFP_NOWAIT` gained `__GFP_NOWARN` in 6.x) contribute only
    /// what they meant in every era: pair with the mask when there is one
    /// ([`Self::of_printed`]).
    #[must_use]
    pub fn of_names(names: &str) -> Self {
        names
            .split('|')
            .map(str::trim)
            .fold(Self::default(), |m, name| m.union(Self::of_name(name)))
    }

    fn of_name(name: &str) -> Self {
        let none = Self::default();
        match name {
            "GFP_ATOMIC" => Self { high: true, ..none },
            "GFP_KERNEL"
            | "GFP_NOFS"
            | "GFP_NOIO"
            | "GFP_USER"
            | "GFP_HIGHUSER"
            | "GFP_HIGHUSER_MOVABLE"
            | "GFP_TEMPORARY"
            | "__GFP_RECLAIM" => Self {
                direct_reclaim: true,
                ..none
            },
            "GFP_KERNEL_ACCOUNT" => Self {
                direct_reclaim: true,
                account: true,
                ..none
            },
            "GFP_TRANSHUGE" => Self {
                direct_reclaim: true,
                nowarn: true,
                comp: true,
                ..none
            },
            "GFP_TRANSHUGE_LIGHT" => Self {
                nowarn: true,
                comp: true,
                ..none
            },
            // Single bits: `__GFP_X`, or `GFP_X` as the 3.x tracepoint printed them.
            _ => match name.strip_prefix("__").unwrap_or(name) {
                "GFP_HIGH" => Self { high: true, ..none },
                "GFP_DIRECT_RECLAIM" | "GFP_WAIT" => Self {
                    direct_reclaim: true,
                    ..none
                },
                "GFP_NOWARN" => Self {
                    nowarn: true,
                    ..none
                },
                "GFP_NORETRY" => Self {
                    noretry: true,
                    ..none
                },
                "GFP_ACCOUNT" | "GFP_KMEMCG" => Self {
                    account: true,
                    ..none
                },
                "GFP_COMP" => Self { comp: true, ..none },
                _ => none,
            },
        }
    }

    /// A mask decoded with the table of the kernel release that produced it
    /// (the newest era when the release is not a version).
    #[must_use]
    pub fn of_kernel_mask(release: &str, gfp: u64) -> Self {
        versions::table_for_kernel(release).semantics(gfp)
    }

    /// The columns of a summary CSV row: the printed names (`gfp_flags`),
    /// joined with the hex mask (`gfp`, `0x820`; ignored when empty or not
    /// hex) decoded with the table of the row's `kernel`. The mask adds what
    /// names alone cannot tell (`GFP_NOWAIT` includes `__GFP_NOWARN` on some
    /// kernels only).
    #[must_use]
    pub fn of_printed(names: &str, hex: &str, kernel: &str) -> Self {
        let from_names = Self::of_names(names);
        match parse_hex(hex) {
            Some(gfp) => from_names.union(Self::of_kernel_mask(kernel, gfp)),
            None => from_names,
        }
    }
}

/// The mask of the CSV's `gfp` column (`0x820`), as [`super::hex`] writes it.
#[must_use]
pub fn parse_hex(text: &str) -> Option<u64> {
    let digits = text.trim().strip_prefix("0x")?;
    u64::from_str_radix(digits, 16).ok()
}

/// The single bits of one table that [`GfpSemantics`] tests (0 when the
/// table lacks one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Masks {
    pub(super) high: u64,
    pub(super) direct_reclaim: u64,
    pub(super) nowarn: u64,
    pub(super) noretry: u64,
    pub(super) account: u64,
    pub(super) comp: u64,
}

impl Masks {
    /// Look the bits up by name; each era's spelling is tried.
    pub(super) fn of(entries: &[(u64, String)]) -> Self {
        let bit = |name: &str| {
            entries
                .iter()
                .find(|(_, n)| n == name)
                .map_or(0, |(mask, _)| *mask)
        };
        let first = |names: &[&str]| names.iter().map(|n| bit(n)).find(|m| *m != 0).unwrap_or(0);
        Self {
            high: bit("__GFP_HIGH"),
            direct_reclaim: first(&["__GFP_DIRECT_RECLAIM", "__GFP_WAIT"]),
            nowarn: bit("__GFP_NOWARN"),
            noretry: bit("__GFP_NORETRY"),
            account: first(&["__GFP_ACCOUNT", "__GFP_KMEMCG"]),
            comp: bit("__GFP_COMP"),
        }
    }

    pub(super) fn semantics(self, gfp: u64) -> GfpSemantics {
        let set = |mask: u64| gfp & mask != 0;
        GfpSemantics {
            high: set(self.high),
            direct_reclaim: set(self.direct_reclaim),
            nowarn: set(self.nowarn),
            noretry: set(self.noretry),
            account: set(self.account),
            comp: set(self.comp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gfp::GfpTable;

    const FORMAT_6_18: &str = include_str!("../../../tests/fixtures/format/mm_page_alloc-6.18.txt");

    #[test]
    fn live_table_masks() {
        let t = GfpTable::from_format(FORMAT_6_18).unwrap();
        let atomic = t.semantics(0x820);
        assert!(atomic.atomic() && atomic.high && !atomic.direct_reclaim);
        let kernel_account = t.semantics(0x40_2cc0);
        assert!(!kernel_account.atomic());
        assert!(kernel_account.account && kernel_account.nowarn && !kernel_account.noretry);
        let thp = t.semantics(t.bit("GFP_TRANSHUGE").unwrap());
        assert!(thp.comp && thp.nowarn && thp.direct_reclaim && !thp.atomic());
        assert!(t.semantics(0x2800).atomic(), "GFP_NOWAIT cannot sleep");
        assert!(t.semantics(0x1_0000).noretry);
    }

    #[test]
    fn names_of_every_era() {
        let s = GfpSemantics::of_names("GFP_ATOMIC|__GFP_COMP");
        assert!(s.atomic() && s.high && s.comp && !s.nowarn);
        let s = GfpSemantics::of_names("GFP_KERNEL_ACCOUNT|__GFP_NOWARN");
        assert!(!s.atomic() && s.account && s.nowarn);
        // 3.x tracepoint spelling.
        let s = GfpSemantics::of_names("GFP_WAIT|GFP_IO|GFP_NOWARN|GFP_KMEMCG");
        assert!(!s.atomic() && s.nowarn && s.account);
        assert!(GfpSemantics::of_names("GFP_HIGH|GFP_WAIT").atomic());
        assert!(GfpSemantics::of_names("GFP_NOWAIT").atomic());
        assert!(GfpSemantics::of_names("GFP_TRANSHUGE_LIGHT").atomic());
        assert!(!GfpSemantics::of_names("GFP_TRANSHUGE").atomic());
        assert!(GfpSemantics::of_names("GFP_KERNEL|__GFP_HIGH").atomic());
        // Unknown names and leftover hex carry no marks: a mask alone is atomic.
        assert_eq!(
            GfpSemantics::of_names("__GFP_ZERO|0x100000000"),
            GfpSemantics::default()
        );
        assert!(GfpSemantics::of_names("").atomic());
    }

    #[test]
    fn masks_by_kernel_release() {
        // GFP_ATOMIC and GFP_KERNEL of each era keep their meaning.
        for (release, atomic, kernel, nowarn) in [
            ("2.6.32-754.el6.x86_64", 0x20, 0xd0, 0x200),
            ("4.9.0-8-amd64", 0x208_0020, 0x240_00c0, 0x200),
            ("4.19.0-6-amd64", 0x48_0020, 0x60_00c0, 0x200),
            ("6.1.0-56-cloud-amd64", 0xa20, 0xcc0, 0x2000),
            ("6.12.117+deb13-cloud-amd64", 0x820, 0xcc0, 0x2000),
        ] {
            assert!(
                GfpSemantics::of_kernel_mask(release, atomic).atomic(),
                "{release}"
            );
            let k = GfpSemantics::of_kernel_mask(release, kernel);
            assert!(!k.atomic() && !k.nowarn, "{release}");
            assert!(
                GfpSemantics::of_kernel_mask(release, nowarn).nowarn,
                "{release}"
            );
        }
        // __GFP_KMEMCG of 3.8 to 3.18, __GFP_ACCOUNT from 4.5.
        assert!(GfpSemantics::of_kernel_mask("3.10.0", 0x10_0000).account);
        assert!(!GfpSemantics::of_kernel_mask("4.4.0-21-generic", 0x10_0000).account);
        assert!(GfpSemantics::of_kernel_mask("4.9.0", 0x10_0000).account);
    }

    #[test]
    fn printed_row_joins_names_and_mask() {
        // GFP_NOWAIT of 6.18 carries __GFP_NOWARN: only the mask tells.
        let s = GfpSemantics::of_printed(
            "GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_COMP|__GFP_ACCOUNT",
            "0x4428c0",
            "6.18.44",
        );
        assert!(s.account && s.nowarn && s.comp && !s.high && !s.direct_reclaim);
        // 4.9: the mask is decoded with the 4.9 table, not with today's bits.
        let s = GfpSemantics::of_printed("GFP_ATOMIC", "0x2080020", "4.9.0");
        assert_eq!(
            s,
            GfpSemantics {
                high: true,
                ..GfpSemantics::default()
            }
        );
        // No or bad hex: names only.
        assert_eq!(
            GfpSemantics::of_printed("GFP_KERNEL", "", "6.1"),
            GfpSemantics::of_printed("GFP_KERNEL", "zz", "6.1")
        );
        assert_eq!(parse_hex("0x820"), Some(0x820));
        assert_eq!(parse_hex(" 0x820 "), Some(0x820));
        assert_eq!(parse_hex("820"), None);
    }
}
