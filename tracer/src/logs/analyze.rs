//! What a parsed report means: gfp names, atomic or not, the CPU context and
//! the network paths (with the same classifier as live tracing).

use serde::Serialize;

use std::collections::HashMap;

use super::{Report, lines::Section};
use crate::{
    classify::{Classifier, Context, Frame, context_of},
    gfp::{GfpTable, versions},
    verdict::{Outcome, OutcomeRules},
};

/// The derived fields of one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    /// Kernel release used for decoding (the report's own, else `--kernel`).
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

/// Names that contain a direct-reclaim bit: a request carrying one may sleep.
const SLEEPING_NAMES: [&str; 14] = [
    "GFP_KERNEL",
    "GFP_KERNEL_ACCOUNT",
    "GFP_NOFS",
    "GFP_NOIO",
    "GFP_USER",
    "GFP_HIGHUSER",
    "GFP_HIGHUSER_MOVABLE",
    "GFP_TRANSHUGE",
    "GFP_TEMPORARY",
    "__GFP_RECLAIM",
    "__GFP_DIRECT_RECLAIM",
    "__GFP_WAIT",
    "GFP_WAIT",
    "GFP_IOFS",
];
/// Names that mark an atomic request in every era.
const ATOMIC_NAMES: [&str; 5] = [
    "GFP_ATOMIC",
    "__GFP_HIGH",
    "GFP_HIGH",
    "__GFP_ATOMIC",
    "GFP_NOWAIT",
];

/// Innermost frames that only report or allocate, not worth showing
/// (renamed over the years: KERNEL.md, "The hook points").
fn is_plumbing(function: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "dump_stack",
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
                versions::table_for_version((4, 3, 0))
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
    let (gfp_names, names_printed, atomic, nowarn) = match &r.gfp_printed {
        Some(names) if !overridden => {
            let has = |n: &str| names.split('|').any(|x| x.trim() == n);
            let atomic =
                ATOMIC_NAMES.iter().any(|n| has(n)) || !SLEEPING_NAMES.iter().any(|n| has(n));
            let nowarn = has("__GFP_NOWARN") || has("GFP_NOWARN");
            (names.clone(), true, atomic, nowarn)
        }
        _ => (
            table.decode(r.gfp),
            false,
            table.is_atomic(r.gfp),
            table.is_nowarn(r.gfp),
        ),
    };

    // Only frames proven on the call chain go to the classifier. Kernels
    // without a reliable unwinder (2.6/3.x built without frame pointers)
    // mark every frame `?`; then the printed frames are all there is, and
    // they are used as printed.
    let any_reliable = r.frames.iter().any(|f| f.reliable);
    let reliable: Vec<Frame<'_>> = r
        .frames
        .iter()
        .filter(|f| f.reliable || !any_reliable)
        .map(|f| Frame {
            function: &f.function,
            module: f.module.as_deref(),
        })
        .collect();
    let hint = r
        .frames
        .iter()
        .find(|f| f.reliable || !any_reliable)
        .map_or(Section::None, |f| f.section);
    let from_frames = context_of(&reliable);
    let path = classifier.paths(&reliable).to_string();
    let context = combine_context(hint, from_frames);

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
