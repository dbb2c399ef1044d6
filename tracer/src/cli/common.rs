//! Options and output shared by the tracing subcommands.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::{
    aggregate::{Aggregator, DEFAULT_KEY_CAP, GroupBy, Window},
    classify::Classifier,
    export::{
        self, RunSummary, SummaryRow,
        memory::{write_memory_csv, write_memory_json_lines},
    },
    memory::{Snapshot, SnapshotLimiter, SnapshotSummary},
    probe::{Counters, ProbeConfig, WarnAllocProbe, support},
    session::AggregateConfig,
    verdict::OutcomeRules,
};

/// Which failures are traced (applied in the kernel).
#[derive(Debug, Clone, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "clap flags, each independent of the others"
)]
pub struct FilterArgs {
    /// Only failures of this order or larger.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=15))]
    pub min_order: u32,
    /// Also failures of requests that may sleep (default: atomic only, i.e.
    /// `__GFP_HIGH` set or no `__GFP_DIRECT_RECLAIM`).
    #[arg(long)]
    pub all: bool,
    /// Only failures in this process (thread-group id).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only failures in this thread (thread id).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub tid: Option<u32>,
    /// Ring buffer size in KiB (a power of two, 4 or more); default: 1 MiB per CPU, 2-64 MiB.
    #[arg(long, value_name = "KIB", value_parser = parse_ring_kib)]
    pub ring_kib: Option<u32>,
    /// Do not attach the `warn_alloc` kprobe.
    #[arg(long)]
    pub no_warn_alloc: bool,
    /// Keep all capabilities while tracing (default: drop them all and set
    /// `no_new_privs` once attached; see README, "Security").
    #[arg(long)]
    pub keep_caps: bool,
    /// Attach only the main program (cheapest per allocation). Kernels 5.12+
    /// skip a tracepoint program already running on the CPU; the default
    /// attach catches those nested events with helper programs, --lean
    /// counts them as "unseen" instead (failures among them unknown).
    #[arg(long, conflicts_with = "failures_only")]
    pub lean: bool,
    /// Which packet drop reasons (`skb:kfree_skb`, Linux 5.17+) to count and
    /// show beside the failures: `memory` (`NOMEM`, `NEIGH_CREATEFAIL`,
    /// `PROTO_MEM`, `PFMEMALLOC`), `all`, or `off`.
    #[arg(long, value_enum, default_value = "memory", value_name = "WHICH")]
    pub drop_reasons: crate::drops::reasons::DropReasons,
    /// Failure-only mode: no tracepoint, only a kprobe on `warn_alloc`, which
    /// every failure of the page allocator's slow path enters (NOWARN ones
    /// too): successful allocations cost nothing. Blind to failures that
    /// never reach the slow path's end (memory-cgroup charge failures,
    /// lock-free tries) and to allocation totals. Needs kprobes (not on
    /// every kernel: `pagefail check` says).
    #[arg(long)]
    pub failures_only: bool,
    /// Watch each failure's next smaller allocation to see fallbacks work:
    /// after a failure the kernel program awaits the same thread's first
    /// smaller success on the CPU for 1 ms and sends its stack; a success
    /// from the failing function is a fallback seen (summary and
    /// --summary-json: "fallbacks seen" by outcome and call site). Costs a
    /// stack and a ring record per failure at most.
    #[arg(long, conflicts_with = "failures_only")]
    pub observe_fallbacks: bool,
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of KiB"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err("the ring buffer size must be a power of two from 4 to 1048576 KiB".to_owned());
    }
    Ok(kib * 1024)
}

impl FilterArgs {
    /// The kernel-side configuration, with `PAGEFAIL_ATTACH` applied.
    ///
    /// # Errors
    /// When `PAGEFAIL_ATTACH` names no attach style.
    pub fn probe_config(&self) -> anyhow::Result<ProbeConfig> {
        let forced =
            support::forced_style().map_err(|e| anyhow::anyhow!("{}: {e}", support::ATTACH_ENV))?;
        Ok(ProbeConfig {
            min_order: self.min_order,
            atomic_only: !self.all,
            tgid: self.pid,
            tid: self.tid,
            ring_bytes: self.ring_kib,
            force_style: forced,
            warn_alloc: !self.no_warn_alloc,
            batch_wakeups: false,
            keep_caps: self.keep_caps,
            lean: self.lean,
            drops: self.drop_reasons,
            four_programs: crate::probe::four_programs_from_env().map_err(anyhow::Error::msg)?,
            failures_only: self.failures_only,
            follow_window: if self.observe_fallbacks {
                crate::verdict::observed::WINDOW
            } else {
                std::time::Duration::ZERO
            },
        })
    }
}

/// How rows are grouped.
#[derive(Debug, Clone, Args)]
pub struct GroupArgs {
    /// Group rows by these keys: any of comm,pid,cgroup,context,path,order,gfp,stack.
    #[arg(long, default_value = "comm,pid,context,path,order,gfp")]
    pub by: GroupBy,
    /// Cap on distinct rows; records beyond it are summed in `[other]` rows.
    #[arg(long, default_value_t = DEFAULT_KEY_CAP as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_rows: u64,
    /// Extra network path rules (same format as the built-in table; see README).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Extra outcome rules, tried before the built-in ones (format: README,
    /// "Cause and outcome").
    #[arg(long, value_name = "FILE")]
    pub outcome_rules: Option<PathBuf>,
}

/// Where the summary is written at exit.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Write the summary as CSV to this file (atomically).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Print the summary rows as JSON lines on stdout instead of the table
    /// (the live view then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write folded failure stacks with counts (flame graph input) to this file.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Write an SVG flame graph of failure stacks to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Write the memory snapshots taken when atomic failures started (at most
    /// one per second) as CSV to this file.
    #[arg(long, value_name = "FILE")]
    pub memory_csv: Option<PathBuf>,
    /// The same snapshots as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub memory_json: Option<PathBuf>,
}

/// Memory snapshots taken when atomic failures happen, rate-limited.
#[derive(Debug, Default)]
pub struct MemoryTracker {
    limiter: SnapshotLimiter,
    /// Zone summaries of every snapshot taken, oldest first.
    pub rows: Vec<SnapshotSummary>,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Snapshots that could not be read (the first error is kept).
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Zone summaries kept at most (a day of one snapshot a second on a
/// three-zone machine is ~260k; past this, new snapshots are counted only).
const MAX_MEMORY_ROWS: usize = 100_000;

impl MemoryTracker {
    /// A failure was recorded: snapshot the memory state if it is atomic and
    /// the limiter allows.
    pub fn on_failure(&mut self, atomic: bool) {
        if !atomic || !self.limiter.on_failure(std::time::Instant::now()) {
            return;
        }
        match Snapshot::take() {
            Ok(snap) => {
                self.snapshots += 1;
                if self.rows.len() < MAX_MEMORY_ROWS {
                    self.rows.extend(snap.summaries());
                }
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

impl GroupArgs {
    /// The aggregation settings, with the user's rule file loaded.
    ///
    /// # Errors
    /// When the rule file cannot be read or has a bad line.
    pub fn aggregate_config(&self) -> anyhow::Result<AggregateConfig> {
        let classifier = match &self.rules {
            None => Classifier::builtin(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read rule file {}", path.display()))?;
                Classifier::with_user_rules(&text)
                    .with_context(|| format!("rule file {}", path.display()))?
            }
        };
        let outcomes = match &self.outcome_rules {
            None => OutcomeRules::builtin(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read outcome rule file {}", path.display()))?;
                OutcomeRules::with_user_rules(&text)
                    .with_context(|| format!("outcome rule file {}", path.display()))?
            }
        };
        Ok(AggregateConfig {
            by: self.by,
            key_cap: usize::try_from(self.max_rows).unwrap_or(DEFAULT_KEY_CAP),
            classifier,
            outcomes,
        })
    }
}

impl ExportArgs {
    /// Write the CSV, JSON lines, folded stacks and flame graph asked for.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write_exports(&self, agg: &Aggregator, rows: &[SummaryRow]) -> anyhow::Result<()> {
        if self.json {
            let out = std::io::stdout().lock();
            if let Err(e) = export::write_json_lines(out, rows)
                && !is_broken_pipe(&e)
            {
                return Err(e);
            }
        }
        if let Some(path) = &self.csv {
            export::write_atomically(path, |w| export::write_csv(w, rows))?;
            crate::note!("pagefail: wrote {} rows to {}", rows.len(), path.display());
        }
        let stacks: Vec<(String, u64)> = agg
            .stack_counts()
            .into_iter()
            .map(|(s, n)| (s.folded.clone(), n))
            .collect();
        if let Some(path) = &self.folded {
            export::write_atomically(path, |w| export::write_folded(w, &stacks))?;
            crate::note!(
                "pagefail: wrote {} stacks to {}",
                stacks.len(),
                path.display()
            );
        }
        if let Some(path) = &self.flamegraph {
            if stacks.is_empty() {
                crate::note!(
                    "pagefail: no failure stacks: {} not written",
                    path.display()
                );
            } else {
                export::write_atomically(path, |w| {
                    export::write_flamegraph(w, "pagefail: failed page allocations", &stacks)
                })?;
                crate::note!("pagefail: wrote flame graph {}", path.display());
            }
        }
        Ok(())
    }

    /// Write the memory snapshots asked for.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write_memory(&self, memory: &MemoryTracker) -> anyhow::Result<()> {
        if let Some(e) = &memory.first_error {
            crate::note!("pagefail: {} memory snapshots failed: {e}", memory.errors);
        }
        if let Some(path) = &self.memory_csv {
            export::write_atomically(path, |w| Ok(write_memory_csv(w, &memory.rows, true)?))?;
            crate::note!(
                "pagefail: wrote {} memory snapshots ({} zone rows) to {}",
                memory.snapshots,
                memory.rows.len(),
                path.display()
            );
        }
        if let Some(path) = &self.memory_json {
            export::write_atomically(path, |w| Ok(write_memory_json_lines(w, &memory.rows)?))?;
        }
        Ok(())
    }
}

/// Whether an error is a closed pipe (`pagefail ... | head`).
#[must_use]
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<csv::Error>().is_some_and(|ce| {
                matches!(ce.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
}

/// The run summary (`--summary-json`, record's `.summary.json`): the
/// kernel's counters, the rows summed by cause and outcome, the drops.
#[must_use]
pub fn run_summary(
    window: &Window,
    totals: &Counters,
    rows: &[SummaryRow],
    warn: &WarnAllocProbe,
    drops: &crate::drops::DropReport,
    fallbacks_seen: Option<crate::verdict::observed::FallbacksSeen>,
) -> RunSummary {
    use crate::drops::Status;
    let mut summary = RunSummary {
        window_start: crate::timestamp::rfc3339(window.start),
        window_end: crate::timestamp::rfc3339(window.end),
        host: window.host.clone(),
        kernel: window.kernel.clone(),
        allocations_by_order: RunSummary::by_order(&totals.allocs),
        failures_by_order: RunSummary::by_order(&totals.fails),
        failures: totals.matched,
        failures_by_cause: BTreeMap::new(),
        failures_by_outcome: BTreeMap::new(),
        lost: totals.lost,
        lost_kept: totals.lost_kept,
        unseen: totals.unseen,
        warn_alloc: matches!(warn, WarnAllocProbe::Attached).then_some(totals.warn_alloc),
        warned: 0,
        drops: drops
            .reasons
            .iter()
            .filter(|(_, n)| *n > 0)
            .cloned()
            .collect(),
        drop_reasons: match &drops.status {
            Status::Counting(which) => which.clone(),
            Status::Unavailable(why) => format!("not available: {why}"),
            Status::Disabled => "off".to_owned(),
        },
        drops_unseen: matches!(drops.status, Status::Counting(_))
            .then_some(drops.unseen)
            .flatten(),
        fallbacks_seen,
    };
    summary.add_rows(rows);
    summary
}

/// A human table of summary rows, most failures first as given.
#[must_use]
pub fn rows_table(rows: &[SummaryRow]) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "*".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut s = format!(
        "{:<8} {:<7} {:<16} {:>8} {:<8} {:<18} {:>5} {:>9} {:>6} {:<6}  {}\n",
        "OUTCOME",
        "CAUSE",
        "COMM",
        "PID",
        "CONTEXT",
        "PATH",
        "ORDER",
        "FAILURES",
        "WARNED",
        "ATOMIC",
        "GFP"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<8} {:<7} {:<16} {:>8} {:<8} {:<18} {:>5} {:>9} {:>6} {:<6}  {}\n",
            dash(&r.outcome),
            dash(&r.cause),
            dash(&r.comm),
            dash(&r.pid),
            dash(&r.context),
            dash(&r.path),
            r.order.map_or_else(|| "*".to_owned(), |o| o.to_string()),
            r.failures,
            r.warned,
            r.atomic.map_or("*", |a| if a { "yes" } else { "no" }),
            if r.gfp.is_empty() {
                "*".to_owned()
            } else {
                format!("{} ({})", r.gfp_flags, r.gfp)
            },
        ));
        if !r.cgroup.is_empty() && r.cgroup != "/" {
            match crate::cgroup::container_id(&r.cgroup) {
                Some(id) => s.push_str(&format!("    cgroup: {} (container {id})\n", r.cgroup)),
                None => s.push_str(&format!("    cgroup: {}\n", r.cgroup)),
            }
        }
        if !r.top_stack.is_empty() {
            let frames: Vec<&str> = r.top_stack.rsplit(';').take(6).collect();
            s.push_str(&format!("    top stack: {}\n", frames.join(" <- ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_validated() {
        assert_eq!(parse_ring_kib("64"), Ok(65536));
        assert!(parse_ring_kib("3").is_err());
        assert!(parse_ring_kib("100").is_err());
        assert!(parse_ring_kib("x").is_err());
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
