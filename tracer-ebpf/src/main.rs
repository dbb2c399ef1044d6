//! Kernel side of pagefail: counts every page allocation by order and sends
//! every failed one that passes the filters through a ring buffer.
//!
//! One body, three attach styles: the raw tracepoint (preferred: plain u64
//! arguments, no BTF, cheapest), the BTF tracepoint, and the classic
//! tracepoint (record offsets read from the format file by userspace). All
//! three read the tracepoint's argument list
//! `(struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype)`:
//! <https://elixir.bootlin.com/linux/v6.1/source/include/trace/events/kmem.h#L172>.
#![no_std]
#![no_main]
#![expect(
    clippy::inline_always,
    reason = "every helper is inlined into its program: BPF-to-BPF calls cost verifier work and stack"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand each entry point its context by value"
)]

mod drops;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_task,
            bpf_get_smp_processor_id, bpf_get_stack, bpf_get_stackid, bpf_ktime_get_boot_ns,
        },
    },
    macros::{btf_tracepoint, kprobe, map, raw_tracepoint, tracepoint},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext, TracePointContext},
};
use tracer_common::{
    CpuState, EVENT_COMM_ERROR, EVENT_FOLLOW, EVENT_STACK_ERROR, EVENT_STACK_TRUNCATED,
    EVENT_WARN_ALLOC, FailureEvent, LOST_KEYS, LOST_STACK_BUCKETS, LostCount, LostKey,
    MAX_STACK_DEPTH, NEST_SLOTS, ORDER_SLOTS, TASK_COMM_LEN, WARN_MATCH_WINDOW_NS, order_slot,
    stat,
};

// ---- read-only filters and kernel facts, set with EbpfLoader::override_global ----
#[unsafe(no_mangle)]
static FILTER_MIN_ORDER: u32 = 0;
#[unsafe(no_mangle)]
static FILTER_ATOMIC_ONLY: u32 = 0;
#[unsafe(no_mangle)]
static FILTER_TGID: u32 = 0;
#[unsafe(no_mangle)]
static FILTER_PID: u32 = 0;
/// Bytes waiting in the ring buffer from which a submit wakes the reader;
/// below it the reader is not woken and drains on its own timer. 0: the
/// kernel's policy (wake whenever the reader has caught up, i.e. for nearly
/// every record of a steady stream).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;
// The atomic rule's masks (see tracer/src/gfp/semantics.rs). Defaults are the
// bits of kernels 5.1 and later; userspace sets the running kernel's own from
// the tracepoint format file.
#[unsafe(no_mangle)]
static GFP_HIGH_MASK: u64 = 0x20;
#[unsafe(no_mangle)]
static GFP_DIRECT_RECLAIM_MASK: u64 = 0x400;
// Classic record layout (6.x defaults); userspace sets them from the format file.
#[unsafe(no_mangle)]
static TP_OFF_PAGE: u32 = 8;
#[unsafe(no_mangle)]
static TP_PAGE_IS_PFN: u32 = 1;
#[unsafe(no_mangle)]
static TP_OFF_ORDER: u32 = 16;
#[unsafe(no_mangle)]
static TP_OFF_GFP: u32 = 24;
#[unsafe(no_mangle)]
static TP_GFP_SIZE: u32 = 8;
#[unsafe(no_mangle)]
static TP_OFF_MIGRATETYPE: u32 = 32;
// cgroup v1 memory controller: the chain to the task's memory cgroup id
// (0: the unified id); offsets from the running kernel's BTF.
#[unsafe(no_mangle)]
static CG_MEMCG: u32 = 0;
#[unsafe(no_mangle)]
static CG_OFF_TASK_CGROUPS: u32 = 0;
#[unsafe(no_mangle)]
static CG_OFF_CSET_MEMCG: u32 = 0;
#[unsafe(no_mangle)]
static CG_OFF_CSS_CGROUP: u32 = 0;
#[unsafe(no_mangle)]
static CG_OFF_CGROUP_KN: u32 = 0;
#[unsafe(no_mangle)]
static CG_OFF_KN_ID: u32 = 0;
/// Observed fallbacks (0: off): see `follow`.
#[unsafe(no_mangle)]
static FOLLOW_WINDOW_NS: u64 = 0;

#[inline(always)]
fn global<T: Copy>(g: &'static T) -> T {
    // SAFETY: a read of a static; volatile so the compiler keeps the load and
    // the loader's value is the one used.
    unsafe { core::ptr::read_volatile(g) }
}

// ---- maps ----
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Per CPU, one value: allocation counts and the nesting state, so the
/// success path makes a single map lookup.
#[map]
static STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);
#[map]
static FAILS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ORDER_SLOTS, 0);
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);
#[map]
static WARN_SEEN: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);
/// Failures that found the ring buffer full, counted by row key: a slow
/// reader costs their times, not their counts (see [`keep_lost`]).
#[map]
static LOST: PerCpuHashMap<LostKey, LostCount> = PerCpuHashMap::with_max_entries(LOST_KEYS, 0);
#[map]
static LOST_STACKS: StackTrace = StackTrace::with_max_entries(LOST_STACK_BUCKETS, 0);

// ---- nested events ----
// Newer kernels skip a raw/BTF tracepoint program that is already running on
// the same CPU (`prog->active` in `__bpf_trace_run`; only the program's
// `recursion_misses` counts it; measured in `cargo xtask vm-test`: 6.1 and
// 6.12 skip, 5.10 does not):
// <https://elixir.bootlin.com/linux/v6.1/source/kernel/trace/bpf_trace.c>.
// A failed allocation in a softirq that interrupts the program (during its own
// `bpf_get_stack`, say) would be lost silently. So four programs are attached
// to the tracepoint, and the kernel calls them in attach order:
//   enter  - depth += 1; handled[depth] = 0
//   main   - the work; handled[depth] = 1
//   nested - the work, only when handled[depth] == 0: the kernel skipped main
//            for this event because main was running on this CPU
//   exit   - depth -= 1
// An event nested inside `main` (prologue and epilogue included) runs enter,
// nested and exit at a deeper depth, so its slot stays 0 and `nested` does the
// work. Where a kernel skips enter or exit instead (an event nested in them),
// main runs normally and the depth only drifts, which the wrapping slot index
// absorbs. On kernels without the check, nested events run main themselves.
// Cost: each program is a dispatch of its own; under a page-fault storm the
// four take two to three times the main program's time per allocation
// (`cargo xtask bench progtime`). Merging nested and exit would save one, but
// an event nested in the merged program's trampoline leaves the depth one
// high, and three levels deep an event can then be counted twice, where this
// design only loses the innermost one (BENCHMARKS.md, "Analysis").

// ---- the marked pair: two programs instead of four ----
// The same exactness with two dispatches per allocation: the marking main
// program (`_mk`), then the helper (`_hl`). The helper must tell, for the
// event it runs for, whether the main program ran for that same event. The
// identity of an event is its context pointer: the kernel calls a
// tracepoint's programs one after the other from the same frame
// (`__traceiter_*` -> `__bpf_trace_*` -> `bpf_trace_runN`, whose `args`
// array is the context), so both programs see the same address for one
// event, while an event nested in them (deeper on the same stack, or on an
// interrupt stack) has another address.
//   main   - push ctx on this CPU's mark stack, then the work
//   helper - search the marks from the top for ctx: found -> main ran; pop
//            it and the marks above it (events nested in the helper's start,
//            whose helper the kernel skipped). Not found -> the kernel kept
//            this event from main: do the work. Then drop the marks pushed
//            while this helper ran (events nested in it: their main did the
//            work, their helper was skipped).
// On kernels without the skip (5.10) every mark is popped by its own
// helper. Exact unless an event nests in the few instructions after the
// helper's body (the kernel's exit from the program): its mark stays behind
// and may mislead one later decision. Such an event is one of the helper's
// `recursion_misses`, which userspace adds to `unseen` (times the marks a
// wrong match can remove), so the bound stays honest.

/// This CPU's state; `None` only if the map lookup fails, which it cannot
/// for key 0 of a one-entry array (the verifier still wants the check).
#[inline(always)]
fn cpu_state() -> Option<*mut CpuState> {
    STATE.get_ptr_mut(0)
}

#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "NEST_SLOTS is a small power of two"
)]
fn depth_slot(depth: u32) -> usize {
    (depth & (NEST_SLOTS as u32 - 1)) as usize
}

#[inline(always)]
fn nest_enter() {
    if let Some(st) = cpu_state() {
        // SAFETY: this CPU's value; preemption is off in a tracepoint program.
        unsafe {
            let d = (*st).depth.wrapping_add(1);
            (*st).depth = d;
            (*st).handled[depth_slot(d)] = 0;
        }
    }
}

#[inline(always)]
fn nest_exit() {
    if let Some(st) = cpu_state() {
        // SAFETY: as in nest_enter.
        unsafe { (*st).depth = (*st).depth.wrapping_sub(1) };
    }
}

/// A successful allocation: one per-CPU counter bump, and one test of
/// whether a smaller success is awaited after a failure (never, unless
/// userspace set `FOLLOW_WINDOW_NS`).
#[inline(always)]
fn count_alloc<C: EbpfContext>(ctx: &C, st: *mut CpuState, order: u32) {
    // SAFETY: as in nest_enter; the slot is masked into the array.
    unsafe { (*st).allocs[(order_slot(order) & (ORDER_SLOTS - 1)) as usize] += 1 };
    // SAFETY: as in nest_enter.
    if unsafe { (*st).follow_ts } != 0 {
        follow(ctx, st, order);
    }
}

/// Observed fallbacks. After a delivered failure this CPU awaits the first
/// allocation of the same thread with a smaller order that succeeds within
/// `FOLLOW_WINDOW_NS`, and sends its stack in a follow record
/// (`EVENT_FOLLOW`). Userspace compares that stack with the failure's: a
/// caller that falls back (slab's minimum order, kvmalloc's vmalloc,
/// `page_frag`'s order 0) calls the allocator again from the same function
/// right away. A later failure on the CPU replaces the awaited one; the
/// window's end, or the follow record sent, ends the wait.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the low half of pid_tgid is the thread id"
)]
fn follow<C: EbpfContext>(ctx: &C, st: *mut CpuState, order: u32) {
    // SAFETY: helper call with no arguments; `st` as in nest_enter.
    let (now, since, pid, failed_order) = unsafe {
        (
            bpf_ktime_get_boot_ns(),
            (*st).follow_ts,
            (*st).follow_pid,
            (*st).follow_order,
        )
    };
    if now.wrapping_sub(since) > global(&FOLLOW_WINDOW_NS) {
        // SAFETY: as in nest_enter.
        unsafe { (*st).follow_ts = 0 };
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 != pid || order >= failed_order {
        return;
    }
    // SAFETY: as in nest_enter.
    unsafe { (*st).follow_ts = 0 };
    let Some(mut entry) = EVENTS.reserve::<FailureEvent>(0) else {
        bump(&STATS, stat::FOLLOW_LOST);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring-buffer record of the right
    // size; every field is written before submit.
    unsafe {
        (*ev).ts_boot_ns = since;
        (*ev).cgroup_id = 0;
        (*ev).gfp = 0;
        (*ev).pid = pid;
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).order = order;
        (*ev).migratetype = 0;
        (*ev).cpu = bpf_get_smp_processor_id();
        (*ev)._pad = 0;
        (*ev).comm = [0; TASK_COMM_LEN];
        (*ev).flags = EVENT_FOLLOW | fill_stack(ctx, ev);
    }
    entry.submit(submit_flags());
}

/// Write the current kernel stack into a reserved record; returns the
/// `EVENT_*` bits that say how it went.
///
/// # Safety
/// `ev` points at a reserved ring-buffer record.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "constant sizes of a few hundred bytes; `got` is checked non-negative and at most `size`"
)]
unsafe fn fill_stack<C: EbpfContext>(ctx: &C, ev: *mut FailureEvent) -> u32 {
    let size = (MAX_STACK_DEPTH * 8) as u32;
    // SAFETY: the caller's record; bpf_get_stack writes at most `size` bytes.
    let got = unsafe { bpf_get_stack(ctx.as_ptr(), (*ev).stack.as_mut_ptr().cast(), size, 0) };
    if got < 0 {
        // SAFETY: as above.
        unsafe { (*ev).stack_len = 0 };
        return EVENT_STACK_ERROR;
    }
    // SAFETY: as above.
    unsafe { (*ev).stack_len = (got as u32) / 8 };
    if got as u32 >= size {
        EVENT_STACK_TRUNCATED
    } else {
        0
    }
}

/// The submit flags of a record: the kernel's wake-up policy, or with
/// `WAKEUP_BYTES` a wake-up only once that much waits.
#[inline(always)]
fn submit_flags() -> u64 {
    let wake = global(&WAKEUP_BYTES);
    if wake == 0 {
        0
    } else if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= wake {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, slot: u32) {
    if let Some(p) = map.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot; preemption is off inside a tracepoint program.
        unsafe { *p += 1 };
    }
}

/// The u64 at `base + off` in kernel memory; `None` for a null base or a
/// failed read.
#[inline(always)]
fn read_at(base: u64, off: &'static u32) -> Option<u64> {
    if base == 0 {
        return None;
    }
    let at = base.wrapping_add(u64::from(global(off)));
    // SAFETY: a checked kernel read of 8 bytes; a bad address returns an error.
    unsafe { bpf_probe_read_kernel(at as *const u64) }.ok()
}

/// The cgroup of the failing task: the unified (v2) id, or on a cgroup v1
/// memory controller `task->cgroups->subsys[memory]->cgroup->kn->id`; 0 when
/// a link of the chain cannot be read.
#[inline(always)]
fn task_cgroup_id() -> u64 {
    if global(&CG_MEMCG) == 0 {
        // SAFETY: helper call with no arguments.
        return unsafe { bpf_get_current_cgroup_id() };
    }
    // SAFETY: helper call with no arguments; the pointer is only read through.
    let task = unsafe { bpf_get_current_task() };
    read_at(task, &CG_OFF_TASK_CGROUPS)
        .and_then(|cset| read_at(cset, &CG_OFF_CSET_MEMCG))
        .and_then(|css| read_at(css, &CG_OFF_CSS_CGROUP))
        .and_then(|cgrp| read_at(cgrp, &CG_OFF_CGROUP_KN))
        .and_then(|kn| read_at(kn, &CG_OFF_KN_ID))
        .unwrap_or(0)
}

/// The whole program, once the attach style has produced the arguments.
#[inline(always)]
fn on_alloc<C: EbpfContext>(ctx: &C, failed: bool, order: u32, gfp: u64, migratetype: i32) {
    if !failed {
        // Success path: one per-CPU counter bump (and the follow test).
        if let Some(st) = cpu_state() {
            count_alloc(ctx, st, order);
        }
        return;
    }
    on_failure(ctx, order, gfp, migratetype, false);
}

/// A failure that passed no filter yet. `in_warn_alloc`: seen from inside
/// `warn_alloc` (failure-only mode), so it is marked as having reached it.
#[inline(always)]
fn on_failure<C: EbpfContext>(
    ctx: &C,
    order: u32,
    gfp: u64,
    migratetype: i32,
    in_warn_alloc: bool,
) {
    bump(&FAILS, order_slot(order));

    if order < global(&FILTER_MIN_ORDER) {
        return;
    }
    if global(&FILTER_ATOMIC_ONLY) != 0 {
        let atomic =
            gfp & global(&GFP_HIGH_MASK) != 0 || gfp & global(&GFP_DIRECT_RECLAIM_MASK) == 0;
        if !atomic {
            return;
        }
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low half of pid_tgid is the thread id"
    )]
    let pid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let want_tgid = global(&FILTER_TGID);
    if want_tgid != 0 && want_tgid != tgid {
        return;
    }
    let want_pid = global(&FILTER_PID);
    if want_pid != 0 && want_pid != pid {
        return;
    }

    bump(&STATS, stat::MATCHED);
    // SAFETY: helper calls with no pointer arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut flags = 0u32;
    if in_warn_alloc {
        flags |= EVENT_WARN_ALLOC;
    } else if let Some(seen) =
        // SAFETY: lookups in a map of plain integers.
        unsafe { WARN_SEEN.get(pid) }
    {
        if now.wrapping_sub(*seen) < WARN_MATCH_WINDOW_NS {
            flags |= EVENT_WARN_ALLOC;
        }
        let _ = WARN_SEEN.remove(pid);
    }

    let Some(mut entry) = EVENTS.reserve::<FailureEvent>(0) else {
        bump(&STATS, stat::RINGBUF_LOST);
        keep_lost(ctx, now, tgid, order, gfp, flags & EVENT_WARN_ALLOC != 0);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring-buffer record of the right size;
    // every field is written before submit.
    #[expect(clippy::cast_possible_truncation, reason = "TASK_COMM_LEN is 16")]
    unsafe {
        (*ev).ts_boot_ns = now;
        (*ev).cgroup_id = task_cgroup_id();
        (*ev).gfp = gfp;
        (*ev).pid = pid;
        (*ev).tgid = tgid;
        (*ev).order = order;
        (*ev).migratetype = migratetype;
        (*ev).cpu = bpf_get_smp_processor_id();
        (*ev)._pad = 0;
        if bpf_get_current_comm((*ev).comm.as_mut_ptr().cast(), TASK_COMM_LEN as u32) < 0 {
            (*ev).comm = [0; TASK_COMM_LEN];
            flags |= EVENT_COMM_ERROR;
        }
        flags |= fill_stack(ctx, ev);
        (*ev).flags = flags;
    }
    entry.submit(submit_flags());
    if global(&FOLLOW_WINDOW_NS) != 0
        && let Some(st) = cpu_state()
    {
        // SAFETY: as in nest_enter.
        unsafe {
            (*st).follow_ts = now;
            (*st).follow_pid = pid;
            (*st).follow_order = order;
        }
    }
}

/// Count a failure the ring buffer had no room for in [`LOST`], by its row
/// key (stack by id in [`LOST_STACKS`]), so userspace rebuilds its rows'
/// counts. Runs only when the ring is full: nothing on the normal path.
/// Each CPU counts in its own value, so no update races another CPU's; a
/// key another CPU adds between this CPU's lookup and insert is found by
/// the second lookup (this CPU's value of it starts at zero).
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "TASK_COMM_LEN is 16; a stack id is a non-negative map index below LOST_STACK_BUCKETS when not an error"
)]
fn keep_lost<C: EbpfContext>(ctx: &C, now: u64, tgid: u32, order: u32, gfp: u64, warned: bool) {
    let mut key = LostKey {
        // SAFETY: helper call with no pointer arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        gfp,
        tgid,
        order,
        stack_id: -1,
        _pad: 0,
        comm: [0; TASK_COMM_LEN],
    };
    // SAFETY: the buffer is the key's comm array, of the size passed.
    if unsafe { bpf_get_current_comm(key.comm.as_mut_ptr().cast(), TASK_COMM_LEN as u32) } < 0 {
        key.comm = [0; TASK_COMM_LEN];
    }
    // Without BPF_F_REUSE_STACKID: a bucket held by another stack is never
    // overwritten (that would give earlier keys the wrong frames); the key
    // then has no stack, and its count is kept all the same.
    // SAFETY: the context pointer of this program, and the stack map.
    let id = unsafe {
        bpf_get_stackid(
            ctx.as_ptr(),
            core::ptr::addr_of!(LOST_STACKS).cast_mut().cast(),
            0,
        )
    };
    key.stack_id = if id < 0 { -1 } else { id as i32 };
    let warn = u64::from(warned);
    let count = |v: *mut LostCount| {
        // SAFETY: this CPU's value of the key; preemption is off.
        unsafe {
            (*v).failures += 1;
            (*v).warn_alloc += warn;
            if (*v).first_ns == 0 {
                (*v).first_ns = now;
            }
            (*v).last_ns = now;
        }
        bump(&STATS, stat::LOST_KEPT);
    };
    if let Some(v) = LOST.get_ptr_mut(key) {
        count(v);
        return;
    }
    let first = LostCount {
        failures: 1,
        warn_alloc: warn,
        first_ns: now,
        last_ns: now,
    };
    if LOST.insert(key, first, u64::from(BPF_NOEXIST)).is_ok() {
        bump(&STATS, stat::LOST_KEPT);
    } else if let Some(v) = LOST.get_ptr_mut(key) {
        count(v);
    } else {
        bump(&STATS, stat::LOST_UNKEPT);
    }
}

/// Preferred: raw tracepoint, arguments as plain u64 (kernel 4.17+, no BTF).
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn pagefail_raw_tp(ctx: RawTracePointContext) -> i32 {
    let Some(st) = cpu_state() else { return 0 };
    // SAFETY: as in nest_enter.
    let slot = depth_slot(unsafe { (*st).depth });
    raw_tp_body(&ctx, st);
    // SAFETY: as in nest_enter.
    unsafe { (*st).handled[slot] = 1 };
    0
}

/// Attached before [`pagefail_raw_tp`]: opens a nesting level.
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn pagefail_raw_en(_ctx: RawTracePointContext) -> i32 {
    nest_enter();
    0
}

/// Attached after [`pagefail_raw_tp`]: does its work for the events the kernel
/// kept from it because it was running on this CPU.
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn pagefail_raw_ns(ctx: RawTracePointContext) -> i32 {
    let Some(st) = cpu_state() else { return 0 };
    // SAFETY: as in nest_enter.
    if unsafe { (*st).handled[depth_slot((*st).depth)] } == 0 {
        raw_tp_body(&ctx, st);
    }
    0
}

/// Attached last: closes the nesting level.
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn pagefail_raw_ex(_ctx: RawTracePointContext) -> i32 {
    nest_exit();
    0
}

#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the raw tracepoint widens `unsigned int order` and `int migratetype` to u64"
)]
fn raw_tp_body(ctx: &RawTracePointContext, st: *mut CpuState) {
    let page: u64 = ctx.arg(0);
    let order: u64 = ctx.arg(1);
    if page != 0 {
        count_alloc(ctx, st, order as u32);
        return;
    }
    let gfp: u64 = ctx.arg(2);
    let migratetype: u64 = ctx.arg(3);
    on_failure(ctx, order as u32, gfp, migratetype as i32, false);
}

/// Fallback: BTF tracepoint (same arguments, typed by BTF).
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn pagefail_btf_tp(ctx: BtfTracePointContext) -> i32 {
    let Some(st) = cpu_state() else { return 0 };
    // SAFETY: as in nest_enter.
    let slot = depth_slot(unsafe { (*st).depth });
    btf_tp_body(&ctx);
    // SAFETY: as in nest_enter.
    unsafe { (*st).handled[slot] = 1 };
    0
}

/// As [`pagefail_raw_en`].
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn pagefail_btf_en(_ctx: BtfTracePointContext) -> i32 {
    nest_enter();
    0
}

/// As [`pagefail_raw_ns`].
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn pagefail_btf_ns(ctx: BtfTracePointContext) -> i32 {
    let Some(st) = cpu_state() else { return 0 };
    // SAFETY: as in nest_enter.
    if unsafe { (*st).handled[depth_slot((*st).depth)] } == 0 {
        btf_tp_body(&ctx);
    }
    0
}

/// As [`pagefail_raw_ex`].
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn pagefail_btf_ex(_ctx: BtfTracePointContext) -> i32 {
    nest_exit();
    0
}

#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "BTF arguments arrive widened to u64; `order` and `migratetype` are 32-bit in the kernel"
)]
fn btf_tp_body(ctx: &BtfTracePointContext) {
    let page: u64 = ctx.arg(0);
    let order: u64 = ctx.arg(1);
    let gfp: u64 = ctx.arg(2);
    let migratetype: u64 = ctx.arg(3);
    on_alloc(ctx, page == 0, order as u32, gfp, migratetype as i32);
}

#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "NEST_SLOTS is a small power of two"
)]
fn mark_slot(i: u32) -> usize {
    (i & (NEST_SLOTS as u32 - 1)) as usize
}

/// The marking main program's first step: push this event's context.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "NEST_SLOTS is a small power of two"
)]
fn mark_push(st: *mut CpuState, ctx: u64) {
    // SAFETY: this CPU's value; preemption is off in a tracepoint program;
    // every index is masked into its array.
    unsafe {
        let top = (*st).mark_top.wrapping_add(1);
        (*st).mark_top = top;
        (*st).marks[mark_slot(top)] = ctx;
        if (*st).mark_len < NEST_SLOTS as u32 {
            (*st).mark_len += 1;
        }
    }
}

/// The helper's decision: whether the main program marked `ctx` (then its
/// mark and the stale ones above it are popped).
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "NEST_SLOTS is a small power of two"
)]
fn mark_take(st: *mut CpuState, ctx: u64) -> bool {
    // SAFETY: as in mark_push.
    unsafe {
        let len = (*st).mark_len;
        let top = (*st).mark_top;
        let mut d = 0u32;
        while d < NEST_SLOTS as u32 {
            if d >= len {
                break;
            }
            if (*st).marks[mark_slot(top.wrapping_sub(d))] == ctx {
                (*st).mark_top = top.wrapping_sub(d + 1);
                (*st).mark_len = len - d - 1;
                return true;
            }
            d += 1;
        }
    }
    false
}

/// The marked pair's helper, once the attach style has produced the body.
#[inline(always)]
fn helper(st: *mut CpuState, ctx: u64, body: impl FnOnce()) {
    let handled_by_main = mark_take(st, ctx);
    // SAFETY: as in mark_push.
    let (top, len) = unsafe { ((*st).mark_top, (*st).mark_len) };
    if !handled_by_main {
        bump(&STATS, stat::HELPER_HANDLED);
        body();
    }
    // Marks pushed since are of events nested in this helper: done.
    // SAFETY: as in mark_push.
    unsafe {
        (*st).mark_top = top;
        (*st).mark_len = len;
    }
}

/// The marked pair's main program on the raw tracepoint.
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn pagefail_raw_mk(ctx: RawTracePointContext) -> i32 {
    let Some(st) = cpu_state() else { return 0 };
    mark_push(st, ctx.as_ptr() as u64);
    raw_tp_body(&ctx, st);
    0
}

/// The marked pair's helper on the raw tracepoint.
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn pagefail_raw_hl(ctx: RawTracePointContext) -> i32 {
    let Some(st) = cpu_state() else { return 0 };
    helper(st, ctx.as_ptr() as u64, || raw_tp_body(&ctx, st));
    0
}

/// The marked pair's main program on the BTF tracepoint.
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn pagefail_btf_mk(ctx: BtfTracePointContext) -> i32 {
    let Some(st) = cpu_state() else { return 0 };
    mark_push(st, ctx.as_ptr() as u64);
    btf_tp_body(&ctx);
    0
}

/// The marked pair's helper on the BTF tracepoint.
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn pagefail_btf_hl(ctx: BtfTracePointContext) -> i32 {
    let Some(st) = cpu_state() else { return 0 };
    helper(st, ctx.as_ptr() as u64, || btf_tp_body(&ctx));
    0
}

/// Last resort: the classic tracepoint record, at offsets from the format file.
#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn pagefail_classic_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from the running kernel's format file.
    let read = |off: u32| -> u64 { unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0) };
    let read32 = |off: u32| -> u32 { unsafe { ctx.read_at::<u32>(off as usize) }.unwrap_or(0) };
    let page = read(global(&TP_OFF_PAGE));
    let failed = if global(&TP_PAGE_IS_PFN) != 0 {
        page == u64::MAX
    } else {
        page == 0
    };
    let order = read32(global(&TP_OFF_ORDER));
    let gfp = if global(&TP_GFP_SIZE) == 8 {
        read(global(&TP_OFF_GFP))
    } else {
        u64::from(read32(global(&TP_OFF_GFP)))
    };
    let migratetype = read32(global(&TP_OFF_MIGRATETYPE)).cast_signed();
    on_alloc(&ctx, failed, order, gfp, migratetype);
    0
}

/// `warn_alloc(gfp_t gfp_mask, nodemask_t *nodemask, const char *fmt, ...)`:
/// entered at the end of the slow path of every failed allocation (NOWARN ones
/// too; the check is inside) and for vmalloc failures. Marks the thread so its
/// next failure record says it reached `warn_alloc`.
#[kprobe]
pub fn pagefail_warn_alloc(_ctx: ProbeContext) -> u32 {
    bump(&STATS, stat::WARN_ALLOC);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low half of pid_tgid is the thread id"
    )]
    let pid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: helper call with no pointer arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let _ = WARN_SEEN.insert(pid, now, 0);
    0
}

/// How `__alloc_pages_slowpath` calls `warn_alloc` on a page allocation
/// failure (`"page allocation failure: order:%u", order`, the same from 4.x
/// to 6.x); vmalloc and others pass other formats.
const PAGE_FAILURE_FMT: [u8; 24] = *b"page allocation failure:";

/// Failure-only mode: the `warn_alloc` kprobe alone, no tracepoint, so
/// successful allocations cost nothing. Every slow-path failure enters
/// `warn_alloc` (the NOWARN and rate-limit checks are inside it) with gfp
/// first and, for page allocation failures, the order as the first variadic
/// argument (the fourth register). It cannot see failures that never reach
/// the slow path's end: memory-cgroup charge failures, lock-free tries.
#[kprobe]
pub fn pagefail_wa_fail(ctx: ProbeContext) -> u32 {
    bump(&STATS, stat::WARN_ALLOC);
    let (Some(gfp), Some(fmt), Some(order)) =
        (ctx.arg::<u64>(0), ctx.arg::<u64>(2), ctx.arg::<u64>(3))
    else {
        return 0;
    };
    // SAFETY: a kernel pointer read with the fault-safe helper.
    let head = unsafe { bpf_probe_read_kernel(fmt as *const [u8; 24]) };
    if head != Ok(PAGE_FAILURE_FMT) {
        return 0;
    }
    // gfp_t and the order are 32-bit (`unsigned int`): the register's low half.
    let order = u32::try_from(order & 0xffff_ffff).unwrap_or(u32::MAX);
    on_failure(&ctx, order, gfp & 0xffff_ffff, -1, true);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
