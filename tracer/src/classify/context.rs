//! The CPU context of a stack, read from its interrupt and softirq entry frames.
//!
//! The rule: walk the frames from the innermost (the allocation) outward; the
//! first frame that only runs in hardirq or only runs in softirq context
//! decides. A stack without such a frame ran in task context (a syscall, a
//! kthread, a workqueue); an empty stack is [`Context::Unknown`].
//!
//! Innermost first matters because interrupts nest on top of whatever they
//! interrupted: a softirq run on the way out of a timer interrupt shows
//! `handle_softirqs` inside `sysvec_apic_timer_interrupt`, and it is the inner
//! one that the allocation ran under. This agrees with the kernel's own view
//! (the `h`/`s` column of tracefs output, which comes from `preempt_count`).
//!
//! Frames that are *not* markers, on purpose:
//! - `__napi_poll`, `process_backlog`: threaded NAPI (`napi_threaded_poll`,
//!   5.12+) runs them in a kthread with bottom halves disabled, which is task
//!   context; in softirq, `net_rx_action` is further out and decides.
//! - `rcu_core`: also run by the `rcuc/N` kthreads (`rcutree.use_softirq=0`,
//!   the default on `PREEMPT_RT`); `rcu_core_si` is the softirq entry.
//! - `__hrtimer_run_queues`: runs hard timers from the interrupt and soft
//!   timers from `hrtimer_run_softirq`; `hrtimer_interrupt` and
//!   `hrtimer_run_softirq` tell them apart.
//! - `call_timer_fn`, `__run_timers`: `run_timer_softirq` is always outside them.
//! - `irq_thread`, `handle_nested_irq`: threaded interrupt handlers are kthreads.
//!
//! `irq_exit`/`irq_exit_rcu` count as softirq: by the time they call anything
//! that allocates, the hardirq count is dropped and they are running softirqs
//! (<https://elixir.bootlin.com/linux/v6.1/source/kernel/softirq.c#L623>).
//! NMIs count as hardirq, the nearest of the contexts [`Context`] knows.

use super::{Context, Frame, base_name};

/// The innermost frame that marks a context: its index and the context.
pub(crate) fn entry(frames: &[Frame<'_>]) -> Option<(usize, Context)> {
    frames
        .iter()
        .enumerate()
        .find_map(|(index, frame)| marker(base_name(frame.function)).map(|ctx| (index, ctx)))
}

/// The CPU context a stack ran in; see the module documentation for the rule.
#[must_use]
pub fn context_of(frames: &[Frame<'_>]) -> Context {
    if frames.is_empty() {
        return Context::Unknown;
    }
    entry(frames).map_or(Context::Task, |(_, ctx)| ctx)
}

/// The context a function runs in when it is one of the entry points.
fn marker(function: &str) -> Option<Context> {
    match function {
        // Softirq core: the loop that runs pending softirqs (`handle_softirqs`
        // since 6.8 and in stable backports, `__do_softirq` before), its callers,
        // and ksoftirqd, which runs the same loop from a kthread.
        "handle_softirqs" | "__do_softirq" | "do_softirq" | "do_softirq_own_stack"
        | "call_softirq" | "invoke_softirq" | "run_ksoftirqd" | "irq_exit" | "irq_exit_rcu"
        | "__irq_exit_rcu"
        // Softirq handlers (open_softirq), for stacks cut short above them.
        | "net_rx_action" | "net_tx_action" | "run_timer_softirq" | "hrtimer_run_softirq"
        | "tasklet_action" | "tasklet_hi_action" | "tasklet_action_common"
        | "blk_done_softirq" | "irq_poll_softirq" | "rcu_core_si" | "rcu_process_callbacks"
        | "run_rebalance_domains"
        // powerpc's softirq stack switch.
        | "call_do_softirq"
        // Architecture interrupt entries that tell a hard interrupt from a
        // softirq run on its exit only through the frames inside them
        // (`handle_irq_event`, `irq_exit`, ... decide first when printed).
        // Reached as the innermost marker, the frames in between were not
        // printed (2.6 MIPS stack scans, cut pastes): the allocation ran in
        // interrupt context, and, as with a bare `<IRQ>` section, the
        // receive softirq is where atomic failures come from. arm32
        // `__irq_svc`/`__irq_usr`, MIPS `ret_from_irq`/`handle_int`,
        // arm64 `el1_irq`/`el1h_64_irq`, powerpc `hardware_interrupt_common`.
        | "__irq_svc" | "__irq_usr" | "ret_from_irq" | "handle_int" | "el1_irq" | "el0_irq"
        | "el1h_64_irq" | "el1h_64_irq_handler" | "el0t_64_irq" | "el0t_64_irq_handler"
        | "hardware_interrupt_common" | "hardware_interrupt_common_virt" => {
            Some(Context::Softirq)
        }

        // Generic interrupt handling (kernel/irq) and flow handlers.
        "__handle_irq_event_percpu" | "handle_irq_event_percpu" | "handle_irq_event"
        | "handle_IRQ_event" | "handle_edge_irq" | "handle_level_irq" | "handle_fasteoi_irq"
        | "handle_simple_irq" | "handle_percpu_irq" | "handle_percpu_devid_irq"
        | "generic_handle_irq" | "generic_handle_domain_irq" | "handle_domain_irq"
        | "__handle_domain_irq" | "handle_irq" | "hrtimer_interrupt"
        | "local_apic_timer_interrupt"
        // x86 entry: common_interrupt since 5.8, do_IRQ before.
        | "common_interrupt" | "__common_interrupt" | "asm_common_interrupt" | "do_IRQ"
        | "irq_work_run" | "irq_work_run_list"
        // arm64 entry.
        | "gic_handle_irq" | "el1_interrupt" | "el0_interrupt" | "__el1_irq"
        // arm32 (`asm_do_IRQ` before 3.x, `handle_IRQ` to 4.x), powerpc,
        // MIPS platform dispatch.
        | "asm_do_IRQ" | "handle_IRQ" | "__do_irq" | "call_do_irq" | "timer_interrupt"
        | "plat_irq_dispatch"
        // Xen event channels (the interrupts of xen-netfront among others).
        | "xen_evtchn_do_upcall" | "__xen_evtchn_do_upcall" | "xen_hvm_evtchn_do_upcall"
        | "xen_pv_evtchn_do_upcall" | "xen_do_hypervisor_callback"
        | "exc_xen_hypervisor_callback" | "evtchn_2l_handle_events"
        | "evtchn_fifo_handle_events"
        // NMI.
        | "exc_nmi" | "asm_exc_nmi" | "do_nmi" | "default_do_nmi" | "nmi_handle" => {
            Some(Context::Hardirq)
        }

        // x86 system vectors: `sysvec_*` (5.8+), `smp_*_interrupt` (older),
        // `apic_timer_interrupt` and the like (the old entry stubs).
        _ if function.starts_with("sysvec_")
            || function.starts_with("__sysvec_")
            || function.starts_with("asm_sysvec_")
            || (function.starts_with("smp_") && function.ends_with("_interrupt"))
            || matches!(
                function,
                "apic_timer_interrupt"
                    | "reschedule_interrupt"
                    | "call_function_interrupt"
                    | "call_function_single_interrupt"
                    | "irq_work_interrupt"
                    | "error_interrupt"
                    | "spurious_interrupt"
                    | "thermal_interrupt"
            ) =>
        {
            Some(Context::Hardirq)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames<'a>(names: &[&'a str]) -> Vec<Frame<'a>> {
        names
            .iter()
            .map(|&function| Frame {
                function,
                module: None,
            })
            .collect()
    }

    #[test]
    fn empty_stack_is_unknown() {
        assert_eq!(context_of(&[]), Context::Unknown);
    }

    #[test]
    fn no_marker_is_task() {
        let stack = frames(&["__alloc_pages", "neigh_hash_alloc", "do_syscall_64"]);
        assert_eq!(context_of(&stack), Context::Task);
    }

    #[test]
    fn innermost_marker_decides() {
        // A driver's hardirq handler allocating, interrupting a softirq.
        let stack = frames(&[
            "__alloc_pages",
            "xennet_interrupt",
            "__handle_irq_event_percpu",
            "handle_irq_event",
            "handle_edge_irq",
            "__common_interrupt",
            "common_interrupt",
            "asm_common_interrupt",
            "net_rx_action",
            "handle_softirqs",
        ]);
        assert_eq!(context_of(&stack), Context::Hardirq);
        assert_eq!(entry(&stack), Some((2, Context::Hardirq)));

        // Softirq on interrupt exit: the softirq is inside the interrupt.
        let stack = frames(&[
            "__alloc_pages",
            "neigh_timer_handler",
            "call_timer_fn",
            "run_timer_softirq",
            "handle_softirqs",
            "__irq_exit_rcu",
            "sysvec_apic_timer_interrupt",
        ]);
        assert_eq!(context_of(&stack), Context::Softirq);
    }

    #[test]
    fn hardirq_markers_of_several_kernel_eras() {
        for marker in [
            "__sysvec_apic_timer_interrupt",
            "asm_sysvec_call_function_single",
            "smp_apic_timer_interrupt",
            "apic_timer_interrupt",
            "do_IRQ",
            "handle_IRQ_event",
            "hrtimer_interrupt",
            "xen_evtchn_do_upcall",
            "gic_handle_irq",
            "exc_nmi",
            "handle_IRQ",
            "plat_irq_dispatch",
        ] {
            let stack = frames(&["__alloc_pages", "some_handler", marker]);
            assert_eq!(context_of(&stack), Context::Hardirq, "{marker}");
        }
    }

    #[test]
    fn softirq_markers_with_compiler_suffixes() {
        for marker in [
            "__do_softirq",
            "do_softirq.part.0",
            "tasklet_action_common.constprop.0",
            "run_ksoftirqd",
            "call_softirq",
            "irq_exit",
            "rcu_core_si",
            "__irq_svc",
            "ret_from_irq",
            "el1h_64_irq",
            "call_do_softirq",
        ] {
            let stack = frames(&["__alloc_pages", "some_handler", marker]);
            assert_eq!(context_of(&stack), Context::Softirq, "{marker}");
        }
    }

    #[test]
    fn threaded_napi_and_threaded_irqs_are_task() {
        let napi = frames(&[
            "__alloc_pages",
            "__napi_alloc_skb",
            "virtnet_poll",
            "__napi_poll",
            "napi_threaded_poll",
            "kthread",
            "ret_from_fork",
        ]);
        assert_eq!(context_of(&napi), Context::Task);
        let irq_thread = frames(&[
            "__alloc_pages",
            "some_thread_fn",
            "irq_thread_fn",
            "irq_thread",
            "kthread",
        ]);
        assert_eq!(context_of(&irq_thread), Context::Task);
        let rcuc = frames(&[
            "__alloc_pages",
            "rcu_do_batch",
            "rcu_core",
            "rcu_cpu_kthread",
        ]);
        assert_eq!(context_of(&rcuc), Context::Task);
    }

    #[test]
    fn names_that_merely_resemble_markers_are_not() {
        for name in [
            "smp_call_function",
            "sysvec",
            "do_softirq_post_smp_call_flush",
            "handle_irq_desc_x",
        ] {
            let stack = frames(&["__alloc_pages", name]);
            assert_eq!(context_of(&stack), Context::Task, "{name}");
        }
    }
}
