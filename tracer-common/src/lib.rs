//! Types shared by the kernel program (`tracer-ebpf`) and userspace (`tracer`).
//!
//! Everything that crosses the kernel/user boundary is defined here once:
//! the ring-buffer record, the counter slots, the names of maps, programs and
//! read-only globals. Types are `#[repr(C)]`, hold no `bool` and no pointers,
//! and have no implicit padding, so they can be read as plain old data.
#![no_std]

/// Length of `task_struct::comm`, including the trailing NUL.
pub const TASK_COMM_LEN: usize = 16;

/// Kernel stack frames captured per failure. Deep enough for a network
/// receive path entered from an interrupt (typically 30-50 frames); a stack
/// that fills every slot is flagged [`EVENT_STACK_TRUNCATED`].
pub const MAX_STACK_DEPTH: usize = 64;

/// Slots of the per-order counter arrays. Orders `0..ORDER_SLOTS-1` have a
/// slot each; the last slot collects any larger order (none exists today:
/// the page allocator's largest order is 10, or 12 on some configs).
pub const ORDER_SLOTS: u32 = 16;

/// Map the allocation order to its counter slot.
#[expect(
    clippy::inline_always,
    reason = "the kernel program calls it per failure; a BPF-to-BPF call costs more than the body"
)]
#[inline(always)]
#[must_use]
pub const fn order_slot(order: u32) -> u32 {
    if order < ORDER_SLOTS - 1 {
        order
    } else {
        ORDER_SLOTS - 1
    }
}

/// The stack filled every slot of [`FailureEvent::stack`]; outer frames may be missing.
pub const EVENT_STACK_TRUNCATED: u32 = 1 << 0;
/// `bpf_get_stack` failed; the record carries no frames.
pub const EVENT_STACK_ERROR: u32 = 1 << 1;
/// `bpf_get_current_comm` failed; `comm` is empty.
pub const EVENT_COMM_ERROR: u32 = 1 << 2;
/// The same task entered `warn_alloc` just before this failure (kprobe).
/// Whether the kernel really warned also depends on `__GFP_NOWARN`, which
/// userspace decides from the gfp mask.
pub const EVENT_WARN_ALLOC: u32 = 1 << 3;
/// Not a failure: a *follow* record (only with [`global::FOLLOW_WINDOW_NS`]
/// set). The first allocation that succeeded for the same thread on the same
/// CPU with a smaller order, within that window after the CPU's last
/// delivered failure. `ts_boot_ns` is that failure's time (the two are
/// matched by CPU and time), `order`, `pid`, `tgid` and `stack` are the
/// success's; `gfp`, `cgroup_id`, `migratetype` and `comm` are zero.
pub const EVENT_FOLLOW: u32 = 1 << 4;

/// One failed page allocation that passed the kernel-side filters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FailureEvent {
    /// `bpf_ktime_get_boot_ns()` at the failure.
    pub ts_boot_ns: u64,
    /// `bpf_get_current_cgroup_id()` (cgroup v2 id), or with `global::CG_MEMCG`
    /// the task's v1 memory cgroup's kernfs id; 0 where not available.
    pub cgroup_id: u64,
    /// The gfp mask as the kernel passed it (`gfp_t`, zero-extended).
    pub gfp: u64,
    /// Kernel thread id (`task_struct::pid`).
    pub pid: u32,
    /// Thread-group id (`task_struct::tgid`, the userspace "pid").
    pub tgid: u32,
    pub order: u32,
    /// The tracepoint's `migratetype` (an `int` in the kernel).
    pub migratetype: i32,
    pub cpu: u32,
    /// `EVENT_*` bits.
    pub flags: u32,
    /// Number of valid entries in `stack`.
    pub stack_len: u32,
    /// Explicit padding so the struct has no implicit holes.
    #[expect(
        clippy::pub_underscore_fields,
        reason = "ABI padding: public so both sides can build the struct, named so it reads as padding"
    )]
    pub _pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
    /// Kernel return addresses, innermost first.
    pub stack: [u64; MAX_STACK_DEPTH],
}

impl FailureEvent {
    /// Size of one ring-buffer record in bytes.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields and arrays of integers, no padding.
unsafe impl aya::Pod for FailureEvent {}

/// Nesting depths the kernel program tells apart on one CPU (a power of two;
/// the depth wraps into them).
pub const NEST_SLOTS: usize = 8;

/// The kernel program's per-CPU state ([`MAP_STATE`], one entry): one value,
/// so the success path makes a single map lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CpuState {
    /// Successful allocations by order slot.
    pub allocs: [u64; ORDER_SLOTS as usize],
    /// Marked pair (see tracer-ebpf, "marked pair"): the context pointers
    /// of the events the marking main program handled and the helper has not
    /// yet passed, a stack wrapping in `NEST_SLOTS` entries.
    pub marks: [u64; NEST_SLOTS],
    /// Observed fallbacks: the time of this CPU's last delivered failure
    /// while a smaller success of the same thread is awaited (0: none).
    pub follow_ts: u64,
    /// The thread of that failure.
    pub follow_pid: u32,
    /// The order of that failure.
    pub follow_order: u32,
    /// Nesting depth of `mm_page_alloc` events on this CPU (wrapping).
    pub depth: u32,
    /// Per depth slot: whether the main program handled the event at that depth.
    pub handled: [u32; NEST_SLOTS],
    /// Index of the top mark.
    pub mark_top: u32,
    /// Marks on the stack (at most `NEST_SLOTS`).
    pub mark_len: u32,
    /// Explicit padding so the struct has no implicit holes.
    #[expect(
        clippy::pub_underscore_fields,
        reason = "ABI padding: public so both sides can build the struct, named so it reads as padding"
    )]
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields and arrays of integers, no padding.
unsafe impl aya::Pod for CpuState {}

/// Slots of the per-CPU [`MAP_STATS`] array.
pub mod stat {
    /// Failures that passed the filters (each one either delivered or lost).
    pub const MATCHED: u32 = 0;
    /// Failures that passed the filters but found the ring buffer full.
    pub const RINGBUF_LOST: u32 = 1;
    /// Calls of `warn_alloc` seen by the kprobe (all of them, NOWARN too).
    pub const WARN_ALLOC: u32 = 2;
    /// Lost failures (ring buffer full) counted in the kernel's table
    /// [`super::MAP_LOST`] instead: their counts survive, their times only
    /// as each key's first and last.
    pub const LOST_KEPT: u32 = 3;
    /// Lost failures the table had no room for (full, or busy on this CPU):
    /// counted here only.
    pub const LOST_UNKEPT: u32 = 4;
    /// Allocation events the marked pair's helper handled because the
    /// kernel kept them from the main program.
    pub const HELPER_HANDLED: u32 = 5;
    /// Follow records ([`super::EVENT_FOLLOW`]) that found the ring buffer
    /// full: the fallbacks that could not be seen.
    pub const FOLLOW_LOST: u32 = 6;
    /// Number of slots.
    pub const COUNT: u32 = 7;
}

/// Keys [`MAP_LOST`] holds at most; lost failures of further keys are
/// counted in [`stat::LOST_UNKEPT`] only.
pub const LOST_KEYS: u32 = 4096;
/// Stacks [`MAP_LOST_STACKS`] holds (hash buckets): a stack whose bucket a
/// different stack holds is kept without frames (`stack_id` < 0).
pub const LOST_STACK_BUCKETS: u32 = 1024;

/// What a failure that found the ring buffer full is counted by in the
/// kernel ([`MAP_LOST`]): everything a summary row is told apart by.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LostKey {
    pub cgroup_id: u64,
    pub gfp: u64,
    pub tgid: u32,
    pub order: u32,
    /// Id in [`MAP_LOST_STACKS`], or negative (the helper's error: no frames).
    pub stack_id: i32,
    /// Explicit padding so the struct has no implicit holes.
    #[expect(
        clippy::pub_underscore_fields,
        reason = "ABI padding: public so both sides can build the struct, named so it reads as padding"
    )]
    pub _pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
}

/// One CPU's counts of a [`LostKey`] (cumulative: the kernel never resets
/// them; userspace takes differences).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostCount {
    pub failures: u64,
    /// Of them, those whose task had just entered `warn_alloc` (as
    /// [`EVENT_WARN_ALLOC`]).
    pub warn_alloc: u64,
    /// `bpf_ktime_get_boot_ns()` of this CPU's first and last failure of
    /// the key; 0 when none.
    pub first_ns: u64,
    pub last_ns: u64,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields and arrays of integers, no padding.
unsafe impl aya::Pod for LostKey {}
#[cfg(feature = "user")]
// SAFETY: as LostKey.
unsafe impl aya::Pod for LostCount {}

/// Ring buffer of [`FailureEvent`].
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU [`CpuState`] (one entry): successful allocations by order and
/// the nesting state.
pub const MAP_STATE: &str = "STATE";
/// Per-CPU `u64[ORDER_SLOTS]`: failed allocations by order, before any filter.
pub const MAP_FAILS: &str = "FAILS";
/// Per-CPU `u64[stat::COUNT]`.
pub const MAP_STATS: &str = "STATS";
/// LRU hash `tid -> boot ns` of the last `warn_alloc` entry per thread.
pub const MAP_WARN_SEEN: &str = "WARN_SEEN";
/// Per-CPU hash [`LostKey`] -> [`LostCount`]: the failures that found the
/// ring buffer full, so their counts per row survive a slow reader.
pub const MAP_LOST: &str = "LOST";
/// Stack trace map of the stacks of [`MAP_LOST`]'s keys.
pub const MAP_LOST_STACKS: &str = "LOST_STACKS";

/// Program attached as a raw tracepoint (`raw_tp/mm_page_alloc`).
pub const PROG_RAW_TP: &str = "pagefail_raw_tp";
/// Program attached as a BTF tracepoint (`tp_btf/mm_page_alloc`).
pub const PROG_BTF_TP: &str = "pagefail_btf_tp";
/// Raw tracepoint programs in attach order around [`PROG_RAW_TP`]: `_en`
/// (enter) opens a nesting level, `_ns` (nested) handles the events the
/// kernel kept from the main program because it was already running on that
/// CPU, `_ex` (exit) closes the level (see tracer-ebpf). Every name fits the
/// kernel's 15 characters, so `bpftool prog` tells them apart.
pub const PROGS_RAW_TP: [&str; 4] = [
    "pagefail_raw_en",
    PROG_RAW_TP,
    "pagefail_raw_ns",
    "pagefail_raw_ex",
];
/// BTF tracepoint programs in attach order, as [`PROGS_RAW_TP`].
pub const PROGS_BTF_TP: [&str; 4] = [
    "pagefail_btf_en",
    PROG_BTF_TP,
    "pagefail_btf_ns",
    "pagefail_btf_ex",
];
/// The marked pair on the raw tracepoint: the marking main program, then
/// the helper that handles what the kernel kept from it (see tracer-ebpf).
pub const PAIR_RAW_TP: [&str; 2] = ["pagefail_raw_mk", "pagefail_raw_hl"];
/// The marked pair on the BTF tracepoint.
pub const PAIR_BTF_TP: [&str; 2] = ["pagefail_btf_mk", "pagefail_btf_hl"];
/// Program attached as a classic tracepoint (`tracepoint/kmem/mm_page_alloc`).
pub const PROG_CLASSIC_TP: &str = "pagefail_classic_tp";
/// Kprobe on `warn_alloc`.
pub const PROG_WARN_ALLOC: &str = "pagefail_warn_alloc";
/// Kprobe on `warn_alloc` that records the failures itself (failure-only
/// mode: no tracepoint program at all).
pub const PROG_WARN_FAIL: &str = "pagefail_wa_fail";

/// Read-only globals, set by userspace before the program is loaded.
pub mod global {
    /// `u32`: ignore failures below this order.
    pub const MIN_ORDER: &str = "FILTER_MIN_ORDER";
    /// `u32`: non-zero: report only atomic failures (see `GFP_HIGH_MASK`).
    pub const ATOMIC_ONLY: &str = "FILTER_ATOMIC_ONLY";
    /// `u32`: report only this thread-group id (0: any).
    pub const TGID: &str = "FILTER_TGID";
    /// `u32`: report only this thread id (0: any).
    pub const PID: &str = "FILTER_PID";
    /// `u64`: bytes waiting in the ring buffer from which a record wakes the
    /// reader (0: every record may wake it; see `ProbeConfig::batch_wakeups`).
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// `u64`: the running kernel's `__GFP_HIGH` bit.
    pub const GFP_HIGH_MASK: &str = "GFP_HIGH_MASK";
    /// `u64`: the running kernel's `__GFP_DIRECT_RECLAIM` bit (`__GFP_WAIT` before 4.4).
    pub const GFP_DIRECT_RECLAIM_MASK: &str = "GFP_DIRECT_RECLAIM_MASK";
    /// `u32`: byte offset of `pfn` (or `page` on kernels before 4.1) in the classic record.
    pub const TP_OFF_PAGE: &str = "TP_OFF_PAGE";
    /// `u32`: non-zero when the classic record holds `pfn` (failure = -1), zero when it
    /// holds the `page` pointer (failure = NULL).
    pub const TP_PAGE_IS_PFN: &str = "TP_PAGE_IS_PFN";
    /// `u32`: byte offset of `order` in the classic record.
    pub const TP_OFF_ORDER: &str = "TP_OFF_ORDER";
    /// `u32`: byte offset of `gfp_flags` in the classic record.
    pub const TP_OFF_GFP: &str = "TP_OFF_GFP";
    /// `u32`: size of `gfp_flags` in the classic record (4 or 8).
    pub const TP_GFP_SIZE: &str = "TP_GFP_SIZE";
    /// `u32`: byte offset of `migratetype` in the classic record.
    pub const TP_OFF_MIGRATETYPE: &str = "TP_OFF_MIGRATETYPE";
    /// `u32`: non-zero: `cgroup_id` is the task's cgroup v1 memory cgroup
    /// (`task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`, read at the
    /// offsets below), not the unified (v2) cgroup.
    pub const CG_MEMCG: &str = "CG_MEMCG";
    /// `u32`: byte offset of `task_struct.cgroups`.
    pub const CG_OFF_TASK_CGROUPS: &str = "CG_OFF_TASK_CGROUPS";
    /// `u32`: byte offset of `css_set.subsys[memory_cgrp_id]`.
    pub const CG_OFF_CSET_MEMCG: &str = "CG_OFF_CSET_MEMCG";
    /// `u32`: byte offset of `cgroup_subsys_state.cgroup`.
    pub const CG_OFF_CSS_CGROUP: &str = "CG_OFF_CSS_CGROUP";
    /// `u32`: byte offset of `cgroup.kn`.
    pub const CG_OFF_CGROUP_KN: &str = "CG_OFF_CGROUP_KN";
    /// `u32`: byte offset of `kernfs_node.id`.
    pub const CG_OFF_KN_ID: &str = "CG_OFF_KN_ID";
    /// `[u64; DROP_MASK_WORDS]`: bit `slot` set: count drops of that reason
    /// slot (see `drop_slot`); all zero: count none.
    pub const DROP_MASK: &str = "DROP_MASK";
    /// `u64`: non-zero: after each delivered failure, send one follow record
    /// ([`super::EVENT_FOLLOW`]) for the first smaller allocation of the
    /// same thread on the same CPU that succeeds within this many
    /// nanoseconds. 0: off (the success path then only tests one field).
    pub const FOLLOW_WINDOW_NS: &str = "FOLLOW_WINDOW_NS";
}

/// Window in which a `warn_alloc` entry marks the same thread's next failure.
/// `warn_alloc` runs at the end of the slow path, microseconds before the
/// tracepoint fires for the same allocation.
pub const WARN_MATCH_WINDOW_NS: u64 = 10_000_000;

// ---- packet drops (`skb:kfree_skb` drop reasons, kernel 5.17+) ----

/// Slots of the per-reason drop counters ([`MAP_DROP_COUNTS`]): reasons
/// `0..DROP_SLOTS-1` have a slot each; the last collects every larger value
/// (the subsystem-coded reasons, `subsystem << 16 | n`, of 6.4+).
pub const DROP_SLOTS: u32 = 256;
/// `u64` words of the reason bit mask ([`global::DROP_MASK`]), one bit per slot.
pub const DROP_MASK_WORDS: usize = (DROP_SLOTS / 64) as usize;

/// The counter slot of a drop reason.
#[expect(
    clippy::inline_always,
    reason = "the kernel program calls it per dropped packet; a BPF-to-BPF call costs more than the body"
)]
#[inline(always)]
#[must_use]
pub const fn drop_slot(reason: u32) -> u32 {
    if reason < DROP_SLOTS - 1 {
        reason
    } else {
        DROP_SLOTS - 1
    }
}

/// Key of the per-CPU drop attribution map ([`MAP_DROP_SITES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// The drop reason as the kernel passed it.
    pub reason: u32,
    /// Thread-group id of the task the drop ran in (0: idle or an interrupt of it).
    pub tgid: u32,
    /// Id in [`MAP_DROP_STACKS`], or a negative errno from `bpf_get_stackid`.
    pub stack_id: i32,
    /// Explicit padding so the struct has no implicit holes.
    #[expect(
        clippy::pub_underscore_fields,
        reason = "ABI padding: public so both sides can build the struct, named so it reads as padding"
    )]
    pub _pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields and arrays of integers, no padding.
unsafe impl aya::Pod for DropKey {}

/// Slots of the per-CPU [`MAP_DROP_STATS`] array.
pub mod drop_stat {
    /// Drops of a counted reason that found the attribution map full (they
    /// are in the per-reason counts, without comm or stack).
    pub const SITE_LOST: u32 = 0;
    /// Drops of a counted reason whose stack could not be stored
    /// (`bpf_get_stackid` failed: stack map full or a hash collision).
    pub const STACK_ERROR: u32 = 1;
    /// Number of slots.
    pub const COUNT: u32 = 2;
}

/// Per-CPU `u64[DROP_SLOTS]`: drops by reason slot, counted reasons only.
pub const MAP_DROP_COUNTS: &str = "DROP_COUNTS";
/// Per-CPU hash [`DropKey`] -> drops.
pub const MAP_DROP_SITES: &str = "DROP_SITES";
/// Stack traces of the drops ([`DropKey::stack_id`]).
pub const MAP_DROP_STACKS: &str = "DROP_STACKS";
/// Per-CPU `u64[drop_stat::COUNT]`.
pub const MAP_DROP_STATS: &str = "DROP_STATS";
/// Entries of [`MAP_DROP_SITES`].
pub const DROP_SITE_ENTRIES: u32 = 4096;
/// Entries of [`MAP_DROP_STACKS`].
pub const DROP_STACK_ENTRIES: u32 = 2048;
/// Raw tracepoint program on `kfree_skb`.
pub const PROG_KFREE_SKB: &str = "pagefail_kfree_skb";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_has_no_padding() {
        let fields = 3 * 8 + 8 * 4 + TASK_COMM_LEN + MAX_STACK_DEPTH * 8;
        assert_eq!(FailureEvent::SIZE, fields);
        assert_eq!(FailureEvent::SIZE % 8, 0);
    }

    #[test]
    fn lost_table_types_have_no_padding() {
        assert_eq!(size_of::<LostKey>(), 2 * 8 + 4 * 4 + TASK_COMM_LEN);
        assert_eq!(size_of::<LostCount>(), 4 * 8);
    }

    #[test]
    fn cpu_state_has_no_padding() {
        let fields =
            ORDER_SLOTS as usize * 8 + 4 + NEST_SLOTS * 4 + NEST_SLOTS * 8 + 3 * 4 + 8 + 2 * 4;
        assert_eq!(core::mem::size_of::<CpuState>(), fields);
        assert!(NEST_SLOTS.is_power_of_two());
    }

    #[test]
    fn program_names_stay_distinct_in_the_kernels_15_characters() {
        let [r0, r1, r2, r3] = PROGS_RAW_TP;
        let [b0, b1, b2, b3] = PROGS_BTF_TP;
        let [rm, rh] = PAIR_RAW_TP;
        let [bm, bh] = PAIR_BTF_TP;
        let all = [
            r0,
            r1,
            r2,
            r3,
            b0,
            b1,
            b2,
            b3,
            rm,
            rh,
            bm,
            bh,
            PROG_CLASSIC_TP,
            PROG_WARN_ALLOC,
            PROG_KFREE_SKB,
            PROG_WARN_FAIL,
        ];
        let kernel = |n: &'static str| &n[..n.len().min(15)];
        for (i, a) in all.iter().enumerate() {
            assert!(a.starts_with("pagefail"), "{a}");
            for b in &all[i + 1..] {
                assert_ne!(kernel(a), kernel(b), "{a} and {b} collide once truncated");
            }
        }
    }

    #[test]
    fn drop_key_has_no_padding() {
        assert_eq!(core::mem::size_of::<DropKey>(), 4 * 4 + TASK_COMM_LEN);
        assert_eq!(drop_slot(3), 3);
        assert_eq!(drop_slot(DROP_SLOTS - 1), DROP_SLOTS - 1);
        assert_eq!(drop_slot(3 << 16), DROP_SLOTS - 1);
        assert_eq!(DROP_MASK_WORDS * 64, DROP_SLOTS as usize);
    }

    #[test]
    fn order_slots_clamp() {
        assert_eq!(order_slot(0), 0);
        assert_eq!(order_slot(10), 10);
        assert_eq!(order_slot(ORDER_SLOTS - 1), ORDER_SLOTS - 1);
        assert_eq!(order_slot(u32::MAX), ORDER_SLOTS - 1);
    }
}
