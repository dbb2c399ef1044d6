//! What a parsed report means: gfp names, atomic or not, the CPU context and
//! the network paths (with the same classifier as live tracing).

use serde::Serialize;

use std::collections::HashMap;

use super::{Report, lines::Section};
use crate::{
    classify::{Classifier, Context, Frame, context_of},
    gfp::{GfpSemantics, GfpTable, versions},
    kernel_version::KernelVersion,
    verdict::{Outcome, OutcomeRules},
};

/// The derived fields of one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    /// Kernel release used for decoding (the report's own, else `--kernel`).
    /// In JSON `decoded_as`: the report's own `kernel` sits beside it.
    #[serde(rename = "decoded_as")]
    pub kernel: String,
    /// Flag names: as printed when printed, else decoded.
    pub gfp_names: String,
    /// Whether the names were printed by the kernel (vs decoded by version).
    pub names_printed: bool,
    /// The request could not sleep (`__GFP_HIGH`, or no direct reclaim).
    pub atomic: bool,
    pub nowarn: bool,
    pub context: Context,
    /// Network path labels joined by `+`, `none` when not network.
    pub path: String,
    /// Reliable frames (all frames when none is), root first, reporting and
    /// allocator frames dropped, `;`-joined.
    pub stack: String,
    /// What the failure meant for the caller, by the outcome rules over the
    /// same frames and the version's gfp bits.
    pub outcome: Outcome,
}

/// The built-in outcome rules, compiled once for every report.
static OUTCOMES: std::sync::LazyLock<OutcomeRules> =
    std::sync::LazyLock::new(OutcomeRules::builtin);

/// Innermost frames that only report or allocate, not worth showing
/// (renamed over the years).
fn is_plumbing(function: &str) -> bool {
    const PREFIXES: [&str; 11] = [
        "dump_stack",
        "__dump_stack",
        "dump_backtrace",
        "unwind_backtrace",
        "show_stack",
        "show_trace",
        "warn_alloc",
        "__alloc_pages",
        "__alloc_frozen_pages",
        "alloc_pages",
        "__alloc_pages_nodemask",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

/// Analyzes reports: one classifier and a cache of gfp tables by release.
pub struct Analyzer {
    classifier: Classifier,
    kernel_override: Option<String>,
    tables: HashMap<String, GfpTable>,
}

/// Distinct kernel releases whose tables are cached.
const MAX_TABLES: usize = 64;

impl Analyzer {
    /// `kernel_override` (from `--kernel`) replaces the reports' own
    /// versions for decoding.
    #[must_use]
    pub fn new(kernel_override: Option<String>) -> Self {
        Self {
            classifier: Classifier::builtin(),
            kernel_override,
            tables: HashMap::new(),
        }
    }

    /// Analyze one report.
    pub fn analyze(&mut self, r: &Report) -> Analysis {
        let kernel = self
            .kernel_override
            .clone()
            .or_else(|| r.kernel.clone())
            .unwrap_or_default();
        if !self.tables.contains_key(&kernel) {
            if self.tables.len() >= MAX_TABLES {
                self.tables.clear();
            }
            let table = if kernel.is_empty() {
                // No version anywhere: names are printed from 4.6 on, so a
                // report without names is most likely older: the <= 4.3 table.
                versions::table_for_version(KernelVersion(4, 3, 0))
            } else {
                versions::table_for_kernel(&kernel)
            };
            self.tables.insert(kernel.clone(), table);
        }
        let fallback;
        let table = if let Some(t) = self.tables.get(&kernel) {
            t
        } else {
            fallback = versions::table_for_kernel(&kernel);
            &fallback
        };
        analyze_with(
            r,
            table,
            &self.classifier,
            kernel.clone(),
            self.kernel_override.is_some(),
        )
    }
}

fn analyze_with(
    r: &Report,
    table: &GfpTable,
    classifier: &Classifier,
    kernel: String,
    overridden: bool,
) -> Analysis {
    let (gfp_names, names_printed, semantics) = match &r.gfp_printed {
        Some(names) if !overridden => (names.clone(), true, GfpSemantics::of_names(names)),
        _ => (table.decode(r.gfp), false, table.semantics(r.gfp)),
    };
    let (atomic, nowarn) = (semantics.atomic(), semantics.nowarn);

    let chosen = choose_frames(r);
    let reliable: Vec<Frame<'_>> = chosen
        .iter()
        .map(|f| Frame {
            function: &f.function,
            module: f.module.as_deref(),
        })
        .collect();
    let hint = chosen.first().map_or(Section::None, |f| f.section);
    let mut from_frames = context_of(&reliable);
    // `?` frames that agree with each other: evidence where the proven
    // frames are silent (a trace whose unwinder proved only the allocator).
    let chain = agreeing_unreliable(r, classifier);
    if from_frames == Context::Task
        && !reliable.iter().any(|f| is_task_root(f.function))
        && let Some(c) = chain.context
    {
        from_frames = c;
    }
    let mut path_frames = reliable.clone();
    path_frames.extend(chain.path_frames.iter().map(|f| Frame {
        function: &f.function,
        module: f.module.as_deref(),
    }));
    let path = classifier.paths(&path_frames).to_string();
    let mut context = combine_context(hint, from_frames);
    // A trace cut before any entry frame, of a task that never allocates in
    // task context: the idle task (its allocations come from interrupts)
    // and ksoftirqd (it runs softirqs).
    if context == Context::Task
        && !reliable.is_empty()
        && !reliable.iter().any(|f| is_task_root(f.function))
        && runs_softirqs(&r.comm, r.pid)
    {
        context = Context::Softirq;
    }

    let mut shown: Vec<&str> = reliable
        .iter()
        .map(|f| f.function)
        .skip_while(|f| is_plumbing(f))
        .collect();
    if shown.is_empty() {
        shown = reliable.iter().map(|f| f.function).collect();
    }
    shown.reverse();
    let own: Vec<Frame<'_>> = reliable
        .iter()
        .copied()
        .skip_while(|f| {
            is_plumbing(f.function) || crate::symbolize::is_allocator_or_tracing_frame(f.function)
        })
        .collect();
    let outcome = OUTCOMES.outcome(&OUTCOMES.plan(&own), table, r.gfp, r.order);
    Analysis {
        kernel,
        gfp_names,
        names_printed,
        atomic,
        nowarn,
        context,
        path,
        stack: shown.join(";"),
        outcome,
    }
}

/// The frames that decide context and path. Frames proven on the call
/// chain when there are any; kernels without a reliable unwinder (2.6/3.x
/// built without frame pointers) mark every frame `?`, and then the
/// printed frames are all there is. Either way, `?` frames printed before
/// the allocator's own frames are leftovers of earlier calls (stale words
/// in the allocator's stack region), and never decide.
fn choose_frames(r: &Report) -> Vec<&super::TraceFrame> {
    let fresh = fresh_frames(r);
    let any_reliable = fresh.iter().any(|f| f.reliable);
    fresh
        .into_iter()
        .filter(|f| f.reliable || !any_reliable)
        .collect()
}

/// The frames after the stale `?` frames above the allocator's last frame.
fn fresh_frames(r: &Report) -> Vec<&super::TraceFrame> {
    let last_alloc = r.frames.iter().rposition(|f| is_plumbing(&f.function));
    r.frames
        .iter()
        .enumerate()
        .filter(|(i, f)| f.reliable || last_alloc.is_none_or(|last| *i > last))
        .map(|(_, f)| f)
        .collect()
}

/// What a trace's `?` frames agree on, where it has proven frames too.
struct Chain<'a> {
    /// A context two or more `?` frames mark alike.
    context: Option<Context>,
    /// `?` frames whose path label another `?` frame shares.
    path_frames: Vec<&'a super::TraceFrame>,
}

/// One frame as the classifier's slice.
fn one(f: &super::TraceFrame) -> [Frame<'_>; 1] {
    [Frame {
        function: &f.function,
        module: f.module.as_deref(),
    }]
}

fn agreeing_unreliable<'a>(r: &'a Report, classifier: &Classifier) -> Chain<'a> {
    let fresh = fresh_frames(r);
    if !fresh.iter().any(|f| f.reliable) {
        return Chain {
            context: None,
            path_frames: Vec::new(),
        };
    }
    let unreliable: Vec<&super::TraceFrame> = fresh.into_iter().filter(|f| !f.reliable).collect();
    let mut contexts: Vec<Context> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for f in &unreliable {
        let c = context_of(&one(f));
        if c != Context::Task {
            contexts.push(c);
        }
        labels.push(classifier.paths(&one(f)).to_string());
    }
    let context = contexts
        .first()
        .copied()
        .filter(|c| contexts.len() >= 2 && contexts.iter().all(|x| x == c));
    let path_frames = unreliable
        .iter()
        .zip(&labels)
        .filter(|(_, l)| l.as_str() != "none" && labels.iter().filter(|x| x == l).count() >= 2)
        .map(|(f, _)| *f)
        .collect();
    Chain {
        context,
        path_frames,
    }
}

/// The idle task (`swapper`, `swapper/N` with pid 0 or none printed) and
/// `ksoftirqd/N`. Pid 1 named `swapper/0` is the boot's own task, which runs
/// the initcalls (driver probes allocate there) before it becomes init.
fn runs_softirqs(comm: &str, pid: Option<u32>) -> bool {
    let idle = (comm == "swapper" || comm.starts_with("swapper/")) && pid.is_none_or(|p| p == 0);
    idle || comm.starts_with("ksoftirqd/")
}

/// Frames at the root of a task's own stack: a system call, a kernel
/// thread, boot. Seen, they show the trace reached task context.
fn is_task_root(function: &str) -> bool {
    const EXACT: [&str; 22] = [
        "ret_from_fork",
        "ret_from_fork_asm",
        "kthread",
        "kernel_thread_helper",
        "do_syscall_64",
        "do_syscall_32_irqs_on",
        "do_int80_syscall_32",
        "system_call_fastpath",
        "system_call_fast_compare_end",
        "system_call",
        "sysenter_do_call",
        "syscall_call",
        "el0_svc",
        "el0_svc_common",
        "ret_fast_syscall",
        "vector_swi",
        "csky_systemcall",
        "handle_sys",
        "start_kernel",
        "rest_init",
        "kernel_init",
        "worker_thread",
    ];
    const PREFIXES: [&str; 8] = [
        "entry_SYSCALL",
        "sys_",
        "SyS_",
        "__x64_sys_",
        "__arm64_sys_",
        "__se_sys_",
        "__do_sys_",
        "ksys_",
    ];
    let f = function.split('.').next().unwrap_or(function);
    EXACT.contains(&f) || PREFIXES.iter().any(|p| f.starts_with(p))
}

/// Context from the trace's section markers and the frames.
///
/// A frame printed inside `<IRQ>` ran on the interrupt stack: softirq or
/// hardirq, and the frames (`__do_softirq`, `net_rx_action`, ...) decide.
/// When they do not, softirq is assumed: page allocations from hardirq
/// handlers are rare, network receive in softirq is where atomic failures
/// come from. `<SOFTIRQ>` and `<NMI>` say it outright.
#[must_use]
pub fn combine_context(hint: Section, from_frames: Context) -> Context {
    match (hint, from_frames) {
        (Section::Nmi, _) => Context::Hardirq,
        (Section::Irq, c @ (Context::Softirq | Context::Hardirq))
        | (Section::None | Section::Task, c) => c,
        (Section::Softirq | Section::Irq, _) => Context::Softirq,
    }
}
