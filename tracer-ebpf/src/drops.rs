//! Packet drops the kernel attributes to memory: a raw tracepoint program on
//! `skb:kfree_skb`, whose third argument is the drop reason from 5.17 on:
//! `(struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...)`
//! (6.11 appends `struct sock *rx_sk`, after the reason):
//! <https://elixir.bootlin.com/linux/v6.1/source/include/trace/events/skb.h#L24>.
//!
//! The tracepoint fires for every dropped skb, so the program first looks
//! the reason up in a read-only bit mask (one load, no map lookup) and
//! returns at once for reasons it does not count. Userspace sets the mask
//! from the running kernel's reason names (the numbers move between
//! versions): by default the memory-related reasons only. For a counted
//! drop it bumps the per-reason counter, then attributes the drop (task,
//! thread group, kernel stack) in a per-CPU hash map; what does not fit is
//! counted, so per-reason totals stay exact.
//!
//! Separate from the `mm_page_alloc` programs: its own maps, its own
//! program, attached only where the tracepoint has a reason.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{RawTracePointContext, tracing::StackIdContext as _},
};
use tracer_common::{
    DROP_MASK_WORDS, DROP_SITE_ENTRIES, DROP_SLOTS, DROP_STACK_ENTRIES, DropKey, TASK_COMM_LEN,
    drop_slot, drop_stat,
};

/// Bit `slot` set: count the drops of that reason slot. Set by userspace.
#[unsafe(no_mangle)]
static DROP_MASK: [u64; DROP_MASK_WORDS] = [0; DROP_MASK_WORDS];

#[map]
static DROP_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);
#[map]
static DROP_SITES: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(DROP_SITE_ENTRIES, 0);
#[map]
static DROP_STACKS: StackTrace = StackTrace::with_max_entries(DROP_STACK_ENTRIES, 0);
#[map]
static DROP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_stat::COUNT, 0);

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, slot: u32) {
    if let Some(p) = map.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot; preemption is off inside a tracepoint program,
        // and the kernel does not run this program nested on one CPU (it
        // counts the skipped run in the program's `recursion_misses`).
        unsafe { *p += 1 };
    }
}

/// Raw tracepoint on `kfree_skb` (5.17+: the reason is argument 2).
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn pagefail_kfree_skb(ctx: RawTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    // The raw tracepoint widens `enum skb_drop_reason` (an int) to u64.
    let reason = u32::try_from(reason).unwrap_or(u32::MAX);
    let slot = drop_slot(reason);
    let index = (slot >> 6) as usize & (DROP_MASK_WORDS - 1);
    // SAFETY: a read of a static; volatile so the loader's value is the one used.
    let word = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(DROP_MASK[index])) };
    if (word >> (slot & 63)) & 1 == 0 {
        return 0;
    }
    on_drop(&ctx, reason, slot);
    0
}

#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the low half of pid_tgid is the thread id; stack ids are below the map's entries"
)]
fn on_drop(ctx: &RawTracePointContext, reason: u32, slot: u32) {
    bump(&DROP_COUNTS, slot);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let stack_id = match ctx.get_stackid(&DROP_STACKS, 0) {
        Ok(id) => id as i32,
        Err(e) => {
            bump(&DROP_STATS, drop_stat::STACK_ERROR);
            e
        }
    };
    let key = DropKey {
        reason,
        tgid,
        stack_id,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]),
    };
    if let Some(n) = DROP_SITES.get_ptr_mut(key) {
        // SAFETY: this CPU's value of the entry (see `bump`).
        unsafe { *n += 1 };
        return;
    }
    if DROP_SITES.insert(key, 1, u64::from(BPF_NOEXIST)).is_err() {
        bump(&DROP_STATS, drop_stat::SITE_LOST);
    }
}
