//! gfp tables of past kernels, for logs that print no flag names.
//!
//! Kernels before 4.6 print only the hex mask (`mode:0x20`), and the meaning
//! of each bit changed several times, so a mask is decoded with the table of
//! the kernel that printed it. The eras, by the value of `GFP_ATOMIC`:
//!
//! | kernels    | `GFP_ATOMIC`  | `GFP_KERNEL`  | what changed |
//! | ---------- | ----------- | ----------- | ------------ |
//! | <= 4.3     | `0x20`      | `0xd0`      | `__GFP_WAIT` 0x10 says "may sleep" |
//! | 4.4 - 4.9  | `0x2080020` | `0x24000c0` | `__GFP_WAIT` split into direct/kswapd reclaim, `__GFP_ATOMIC` added |
//! | 4.10 - 4.17| `0x1080020` | `0x14000c0` | `__GFP_OTHER_NODE` removed, upper bits moved down |
//! | 4.18 - 5.0 | `0x480020`  | `0x6000c0`  | `__GFP_COLD`/`__GFP_NOTRACK` slots reused |
//! | 5.1 - 6.2  | `0xa20`     | `0xcc0`     | bits reordered, most used ones lowest |
//! | >= 6.3     | `0x820`     | `0xcc0`     | `__GFP_ATOMIC` removed |
//!
//! Sources: `include/linux/gfp.h` (from 6.0 `include/linux/gfp_types.h`) of
//! each release, e.g.
//! <https://elixir.bootlin.com/linux/v4.4/source/include/linux/gfp.h> and
//! <https://elixir.bootlin.com/linux/v6.1/source/include/linux/gfp_types.h>.
//! Single-bit names keep the source spelling (`__GFP_HIGH`), also for the
//! 3.x era whose tracepoint printed them without the underscores, so that
//! [`GfpTable`]'s lookups work for every era. Bits that depend on the kernel
//! configuration (lockdep, KASAN, ...) are listed only where they were stable.

use super::GfpTable;
use crate::kernel_version::KernelVersion;

/// The gfp era a kernel belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Era {
    /// 2.6 to 4.3: `__GFP_WAIT`, `GFP_ATOMIC` 0x20.
    Wait,
    /// 4.4 to 4.9: `GFP_ATOMIC` 0x2080020.
    Reclaim44,
    /// 4.10 to 4.17: `GFP_ATOMIC` 0x1080020.
    Reclaim410,
    /// 4.18 to 5.0: `GFP_ATOMIC` 0x480020.
    Reclaim418,
    /// 5.1 to 6.2: `GFP_ATOMIC` 0xa20.
    Reordered51,
    /// 6.3 on: `GFP_ATOMIC` 0x820.
    NoAtomic63,
}

impl Era {
    /// The era of a kernel version.
    #[must_use]
    pub fn of(v: KernelVersion) -> Self {
        match (v.0, v.1) {
            (0..=3, _) | (4, 0..=3) => Self::Wait,
            (4, 4..=9) => Self::Reclaim44,
            (4, 10..=17) => Self::Reclaim410,
            (4, _) | (5, 0) => Self::Reclaim418,
            (5, _) | (6, 0..=2) => Self::Reordered51,
            _ => Self::NoAtomic63,
        }
    }
}

/// The gfp table of a kernel release string; the newest era when the string
/// is not a version.
#[must_use]
pub fn table_for_kernel(version: &str) -> GfpTable {
    table_for_version(KernelVersion::parse(version).unwrap_or(KernelVersion(u32::MAX, 0, 0)))
}

/// The gfp table of a kernel version, in the kernel's print order:
/// composite names first (`GFP_ATOMIC` wins over `__GFP_HIGH`), then bits.
#[must_use]
pub fn table_for_version(v: KernelVersion) -> GfpTable {
    let at_least = |major: u32, minor: u32| v.at_least(major, minor);
    let era = Era::of(v);
    let bits = single_bits(era, &at_least);
    let get = |name: &str| bits.iter().find(|(n, _)| *n == name).map_or(0, |(_, m)| *m);
    let (high, io, fs) = (get("__GFP_HIGH"), get("__GFP_IO"), get("__GFP_FS"));
    let reclaim = get("__GFP_WAIT") | get("__GFP_DIRECT_RECLAIM") | get("__GFP_KSWAPD_RECLAIM");
    let kernel = reclaim | io | fs;
    let user = kernel | get("__GFP_HARDWALL");
    let highuser = user | get("__GFP_HIGHMEM");
    let movable = highuser | get("__GFP_MOVABLE");
    let thp_base = movable | get("__GFP_COMP") | get("__GFP_NOMEMALLOC") | get("__GFP_NOWARN");

    let mut composites: Vec<(&str, u64)> = Vec::new();
    match era {
        Era::Wait => {
            if at_least(2, 38) {
                composites.push((
                    "GFP_TRANSHUGE",
                    thp_base | get("__GFP_NORETRY") | get("__GFP_NO_KSWAPD"),
                ));
            }
        }
        _ if !at_least(4, 8) => {
            composites.push((
                "GFP_TRANSHUGE",
                (thp_base | get("__GFP_NORETRY")) & !get("__GFP_KSWAPD_RECLAIM"),
            ));
        }
        _ => {
            let light = thp_base & !reclaim;
            composites.push(("GFP_TRANSHUGE", light | get("__GFP_DIRECT_RECLAIM")));
            composites.push(("GFP_TRANSHUGE_LIGHT", light));
        }
    }
    composites.push(("GFP_HIGHUSER_MOVABLE", movable));
    composites.push(("GFP_HIGHUSER", highuser));
    composites.push(("GFP_USER", user));
    if !at_least(4, 14) {
        composites.push(("GFP_TEMPORARY", kernel | get("__GFP_RECLAIMABLE")));
    }
    if at_least(4, 5) {
        composites.push(("GFP_KERNEL_ACCOUNT", kernel | get("__GFP_ACCOUNT")));
    }
    composites.push(("GFP_KERNEL", kernel));
    composites.push(("GFP_NOFS", reclaim | io));
    let atomic = high | get("__GFP_ATOMIC") | get("__GFP_KSWAPD_RECLAIM");
    composites.push(("GFP_ATOMIC", atomic));
    composites.push(("GFP_NOIO", reclaim));
    if era != Era::Wait {
        // Before 4.4 GFP_NOWAIT was 0: no bit to print.
        composites.push(("GFP_NOWAIT", get("__GFP_KSWAPD_RECLAIM")));
        composites.push(("GFP_DMA", get("__GFP_DMA")));
        composites.push(("GFP_DMA32", get("__GFP_DMA32")));
        composites.push(("__GFP_RECLAIM", reclaim));
    }

    let mut entries: Vec<(u64, String)> = composites
        .into_iter()
        .map(|(n, m)| (m, n.to_owned()))
        .collect();
    entries.extend(bits.iter().map(|(n, m)| (*m, (*n).to_owned())));
    GfpTable::from_entries(entries)
}

/// Single-bit flags of an era, in print order ([`PRINT_ORDER`]).
fn single_bits(era: Era, at_least: &dyn Fn(u32, u32) -> bool) -> Vec<(&'static str, u64)> {
    let mut b: Vec<(&'static str, u64)> = Vec::new();
    let mut add = |cond: bool, name: &'static str, mask: u64| {
        if cond {
            b.push((name, mask));
        }
    };
    match era {
        Era::Wait => {
            add(true, "__GFP_HIGH", 0x20);
            add(true, "__GFP_WAIT", 0x10);
            add(true, "__GFP_IO", 0x40);
            add(true, "__GFP_FS", 0x80);
            add(true, "__GFP_COLD", 0x100);
            add(true, "__GFP_NOWARN", 0x200);
            add(true, "__GFP_REPEAT", 0x400);
            add(true, "__GFP_NOFAIL", 0x800);
            add(true, "__GFP_NORETRY", 0x1000);
            add(at_least(3, 6), "__GFP_MEMALLOC", 0x2000);
            add(true, "__GFP_COMP", 0x4000);
            add(true, "__GFP_ZERO", 0x8000);
            add(true, "__GFP_NOMEMALLOC", 0x10000);
            add(true, "__GFP_HARDWALL", 0x20000);
            add(true, "__GFP_THISNODE", 0x40000);
            add(true, "__GFP_RECLAIMABLE", 0x80000);
            add(true, "__GFP_MOVABLE", 0x08);
            add(at_least(3, 8) && !at_least(3, 19), "__GFP_KMEMCG", 0x100000);
            add(true, "__GFP_NOTRACK", 0x200000);
            add(at_least(2, 38), "__GFP_NO_KSWAPD", 0x400000);
            add(at_least(3, 0), "__GFP_OTHER_NODE", 0x800000);
            add(at_least(3, 2), "__GFP_WRITE", 0x1000000);
            add(true, "__GFP_DMA", 0x01);
            add(true, "__GFP_HIGHMEM", 0x02);
            add(true, "__GFP_DMA32", 0x04);
        }
        Era::Reclaim44 | Era::Reclaim410 | Era::Reclaim418 => {
            let e418 = era == Era::Reclaim418;
            let e410 = era == Era::Reclaim410;
            add(true, "__GFP_HIGHMEM", 0x02);
            add(true, "__GFP_HIGH", 0x20);
            add(true, "__GFP_ATOMIC", 0x80000);
            add(true, "__GFP_IO", 0x40);
            add(true, "__GFP_FS", 0x80);
            add(!at_least(4, 15), "__GFP_COLD", 0x100);
            add(true, "__GFP_NOWARN", 0x200);
            add(!at_least(4, 13), "__GFP_REPEAT", 0x400);
            add(at_least(4, 13), "__GFP_RETRY_MAYFAIL", 0x400);
            add(true, "__GFP_NOFAIL", 0x800);
            add(true, "__GFP_NORETRY", 0x1000);
            add(true, "__GFP_COMP", 0x4000);
            add(true, "__GFP_ZERO", 0x8000);
            add(true, "__GFP_NOMEMALLOC", 0x10000);
            add(true, "__GFP_MEMALLOC", 0x2000);
            add(true, "__GFP_HARDWALL", 0x20000);
            add(true, "__GFP_THISNODE", 0x40000);
            add(true, "__GFP_RECLAIMABLE", 0x10);
            add(true, "__GFP_MOVABLE", 0x08);
            add(!at_least(4, 5), "__GFP_NOACCOUNT", 0x100000);
            add(at_least(4, 5), "__GFP_ACCOUNT", 0x100000);
            add(!at_least(4, 15), "__GFP_NOTRACK", 0x200000);
            let (write, direct, kswapd, nolockdep) = if e418 {
                (0x100, 0x200000, 0x400000, 0x800000)
            } else if e410 {
                (0x800000, 0x400000, 0x1000000, 0x2000000)
            } else {
                (0x1000000, 0x400000, 0x2000000, 0)
            };
            add(true, "__GFP_WRITE", write);
            add(true, "__GFP_DIRECT_RECLAIM", direct);
            add(true, "__GFP_KSWAPD_RECLAIM", kswapd);
            add(era == Era::Reclaim44, "__GFP_OTHER_NODE", 0x800000);
            add(
                nolockdep != 0 && at_least(4, 12),
                "__GFP_NOLOCKDEP",
                nolockdep,
            );
            add(true, "__GFP_DMA", 0x01);
            add(true, "__GFP_DMA32", 0x04);
        }
        Era::Reordered51 | Era::NoAtomic63 => {
            add(true, "__GFP_DMA", 0x01);
            add(true, "__GFP_HIGHMEM", 0x02);
            add(true, "__GFP_DMA32", 0x04);
            add(true, "__GFP_MOVABLE", 0x08);
            add(true, "__GFP_RECLAIMABLE", 0x10);
            add(true, "__GFP_HIGH", 0x20);
            add(era == Era::Reordered51, "__GFP_ATOMIC", 0x200);
            add(true, "__GFP_IO", 0x40);
            add(true, "__GFP_FS", 0x80);
            add(true, "__GFP_ZERO", 0x100);
            add(true, "__GFP_DIRECT_RECLAIM", 0x400);
            add(true, "__GFP_KSWAPD_RECLAIM", 0x800);
            add(true, "__GFP_WRITE", 0x1000);
            add(true, "__GFP_NOWARN", 0x2000);
            add(true, "__GFP_RETRY_MAYFAIL", 0x4000);
            add(true, "__GFP_NOFAIL", 0x8000);
            add(true, "__GFP_NORETRY", 0x10000);
            add(true, "__GFP_MEMALLOC", 0x20000);
            add(true, "__GFP_COMP", 0x40000);
            add(true, "__GFP_NOMEMALLOC", 0x80000);
            add(true, "__GFP_HARDWALL", 0x100000);
            add(true, "__GFP_THISNODE", 0x200000);
            add(true, "__GFP_ACCOUNT", 0x400000);
            add(at_least(5, 14), "__GFP_ZEROTAGS", 0x800000);
        }
    }
    b.sort_by_key(|(name, _)| {
        PRINT_ORDER
            .iter()
            .position(|n| n == name)
            .unwrap_or(PRINT_ORDER.len())
    });
    b
}

/// Single bits in the order of the kernel's `__def_gfpflag_names` (4.6 to
/// 6.x, include/trace/events/mmflags.h), with the older names slotted in.
const PRINT_ORDER: [&str; 33] = [
    "__GFP_DMA",
    "__GFP_HIGHMEM",
    "__GFP_DMA32",
    "__GFP_HIGH",
    "__GFP_WAIT",
    "__GFP_ATOMIC",
    "__GFP_IO",
    "__GFP_FS",
    "__GFP_COLD",
    "__GFP_NOWARN",
    "__GFP_REPEAT",
    "__GFP_RETRY_MAYFAIL",
    "__GFP_NOFAIL",
    "__GFP_NORETRY",
    "__GFP_COMP",
    "__GFP_ZERO",
    "__GFP_NOMEMALLOC",
    "__GFP_MEMALLOC",
    "__GFP_HARDWALL",
    "__GFP_THISNODE",
    "__GFP_RECLAIMABLE",
    "__GFP_MOVABLE",
    "__GFP_ACCOUNT",
    "__GFP_NOACCOUNT",
    "__GFP_KMEMCG",
    "__GFP_NOTRACK",
    "__GFP_WRITE",
    "__GFP_DIRECT_RECLAIM",
    "__GFP_KSWAPD_RECLAIM",
    "__GFP_NO_KSWAPD",
    "__GFP_OTHER_NODE",
    "__GFP_NOLOCKDEP",
    "__GFP_ZEROTAGS",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_by_version() {
        assert_eq!(Era::of(KernelVersion(2, 6, 32)), Era::Wait);
        assert_eq!(Era::of(KernelVersion(4, 3, 0)), Era::Wait);
        assert_eq!(Era::of(KernelVersion(4, 4, 0)), Era::Reclaim44);
        assert_eq!(Era::of(KernelVersion(4, 9, 0)), Era::Reclaim44);
        assert_eq!(Era::of(KernelVersion(4, 10, 0)), Era::Reclaim410);
        assert_eq!(Era::of(KernelVersion(4, 17, 0)), Era::Reclaim410);
        assert_eq!(Era::of(KernelVersion(4, 18, 0)), Era::Reclaim418);
        assert_eq!(Era::of(KernelVersion(5, 0, 0)), Era::Reclaim418);
        assert_eq!(Era::of(KernelVersion(5, 1, 0)), Era::Reordered51);
        assert_eq!(Era::of(KernelVersion(6, 2, 0)), Era::Reordered51);
        assert_eq!(Era::of(KernelVersion(6, 3, 0)), Era::NoAtomic63);
        assert_eq!(Era::of(KernelVersion(7, 0, 0)), Era::NoAtomic63);
    }

    /// `GFP_ATOMIC` / `GFP_KERNEL` of each era, as the era table of this module lists them.
    #[test]
    fn atomic_and_kernel_values_per_era() {
        let cases: [(&str, u64, u64); 9] = [
            ("2.6.32-754.el6.x86_64", 0x20, 0xd0),
            ("3.4.2-1-amd64", 0x20, 0xd0),
            ("4.3.0", 0x20, 0xd0),
            ("4.9.0-8-amd64", 0x208_0020, 0x240_00c0),
            ("4.15.0-20-generic", 0x108_0020, 0x140_00c0),
            ("4.19.0-6-amd64", 0x48_0020, 0x60_00c0),
            ("5.4.0-42-generic", 0xa20, 0xcc0),
            ("6.1.0-56-cloud-amd64", 0xa20, 0xcc0),
            ("6.12.0", 0x820, 0xcc0),
        ];
        for (release, atomic, kernel) in cases {
            let t = table_for_kernel(release);
            assert_eq!(t.bit("GFP_ATOMIC"), Some(atomic), "{release}");
            assert_eq!(t.bit("GFP_KERNEL"), Some(kernel), "{release}");
            assert!(t.is_atomic(atomic), "{release}");
            assert!(!t.is_atomic(kernel), "{release}");
            assert_eq!(t.high_mask(), 0x20, "{release}");
        }
    }

    #[test]
    fn decodes_example_masks() {
        let old = table_for_kernel("2.6.32-754.el6.x86_64");
        assert_eq!(old.decode(0x20), "GFP_ATOMIC");
        assert_eq!(old.decode(0xd0), "GFP_KERNEL");
        assert_eq!(old.decode(0x4020), "GFP_ATOMIC|__GFP_COMP");
        assert_eq!(old.decode(0x220), "GFP_ATOMIC|__GFP_NOWARN");
        assert_eq!(old.direct_reclaim_mask(), 0x10);
        assert!(old.is_nowarn(0x220));

        let v61 = table_for_kernel("6.1.0-56-cloud-amd64");
        assert_eq!(v61.decode(0xb20), "GFP_ATOMIC|__GFP_ZERO");
        assert_eq!(v61.decode(0x40b20), "GFP_ATOMIC|__GFP_COMP|__GFP_ZERO");
        assert_eq!(v61.decode(0x400cc0), "GFP_KERNEL_ACCOUNT");
        assert_eq!(v61.decode(0x800), "GFP_NOWAIT");
        assert_eq!(v61.nowarn_mask(), 0x2000);

        let v49 = table_for_kernel("4.9.0-8-amd64");
        assert_eq!(v49.decode(0x208_0020), "GFP_ATOMIC");
        assert_eq!(v49.decode(0x228_0020), "GFP_ATOMIC|__GFP_NOTRACK");
        assert_eq!(v49.decode(0x242_00ca), "GFP_HIGHUSER_MOVABLE");
        assert_eq!(v49.decode(0x242_01ca), "GFP_HIGHUSER_MOVABLE|__GFP_COLD");

        let v415 = table_for_kernel("4.15.0");
        assert_eq!(v415.decode(0x142_00ca), "GFP_HIGHUSER_MOVABLE");
        let v419 = table_for_kernel("4.19.0-6-amd64");
        assert_eq!(v419.decode(0x60_80c0), "GFP_KERNEL|__GFP_ZERO");
        assert_eq!(v419.decode(0x62_00ca), "GFP_HIGHUSER_MOVABLE");

        let v54 = table_for_kernel("5.4.0-42-generic");
        assert_eq!(v54.decode(0x10_0cca), "GFP_HIGHUSER_MOVABLE");

        let v612 = table_for_kernel("6.12.0");
        assert_eq!(v612.decode(0x820), "GFP_ATOMIC");
        assert_eq!(v612.bit("__GFP_ATOMIC"), None);
    }

    #[test]
    fn unparsable_version_gets_newest_table() {
        assert_eq!(table_for_kernel("garbage").bit("GFP_ATOMIC"), Some(0x820));
    }
}
