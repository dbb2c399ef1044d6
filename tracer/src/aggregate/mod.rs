//! Bounded aggregation of failure records into summary rows.
//!
//! Per-record work is three hash probes, no allocation, and one cache line
//! written: the stack by its raw frames ([`stacks`]), then the record's
//! attributes and its cell ([`cells`]), which counts the record. A row's
//! counts are the sums of its cells', added up when rows are read.
//! Symbolization and classification happen once per distinct stack; the
//! row's printable key and its cgroup resolution once per row; finding a
//! cell's row once per cell.
//!
//! The number of distinct row keys is capped: records beyond the cap go to an
//! `[other]` row of the same order and gfp (where those are grouped by), so
//! totals stay exact.

mod cells;
mod group;
mod hash;
#[cfg(test)]
mod reference;
mod stacks;
#[cfg(test)]
pub(crate) mod tests;

use std::{collections::HashMap, time::SystemTime};

use tracer_common::{EVENT_WARN_ALLOC, FailureEvent, TASK_COMM_LEN};

use self::{
    cells::{Cells, Place, Vacant},
    hash::FxBuild,
    stacks::{Known, Stacks},
};
pub use self::{
    group::{Dim, GroupBy},
    stacks::StackInfo,
};
use crate::{
    cgroup::CgroupResolver,
    classify::{Classifier, Context, Frame, context_of},
    events::{self, BootClock},
    export::SummaryRow,
    gfp::{self, GfpTable},
    symbolize::{self, Kallsyms},
    verdict::{
        self, Cause, Evidence, Outcome, OutcomeRules, ZoneLook,
        observed::{self, FallbacksSeen, Observer},
    },
};

/// Default cap on distinct row keys.
pub const DEFAULT_KEY_CAP: usize = 10_000;

/// Rows allocated up front at most (the default key cap); a larger cap grows
/// on demand.
const PREALLOC_ROWS: usize = DEFAULT_KEY_CAP;

/// Distinct stacks kept across [`Aggregator::reset`] at most.
const STACK_CACHE_LIMIT: usize = 50_000;

/// Cells ([`cells`]) per row key the cell table holds at most. A row has a
/// cell per process (when not grouped by pid), cgroup and stack it saw, and
/// an `[other]` row one per key the cap refused. Five per key keeps the
/// table at the default cap within 65536 slots (4 MiB); the records of cells
/// beyond the limit find their row by its key and are counted by row:
/// slower, as exact.
const CELLS_PER_KEY: usize = 5;

/// The comm of the rows that collect records beyond the key cap.
pub const OTHER: &str = "[other]";

/// The row key as a new cell looks its row up: fixed size, no allocation;
/// fields of dimensions not grouped by are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FastKey {
    comm: [u8; TASK_COMM_LEN],
    tgid: u32,
    /// Stack class (context and path), or `u32::MAX` for `[other]` rows.
    class: u32,
    cgroup_id: u64,
    gfp: u64,
    order: u32,
    /// Stack id + 1 when grouped by stack, else 0.
    stack: u32,
    cause: Cause,
    outcome: Outcome,
}

/// The key of a summary row: `None` in a dimension not grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub comm: Option<String>,
    /// Thread-group id.
    pub tgid: Option<u32>,
    pub cgroup_id: Option<u64>,
    pub context: Option<Context>,
    pub path: Option<String>,
    pub order: Option<u32>,
    pub gfp: Option<u64>,
    pub stack: Option<u32>,
    /// Always part of the key: rows never mix causes or outcomes.
    pub cause: Cause,
    pub outcome: Outcome,
}

/// Counts of one row (and of one cell, [`cells`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowStats {
    pub failures: u64,
    pub warned: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Failures since the last [`Aggregator::start_interval`].
    pub interval_failures: u64,
}

impl RowStats {
    /// Counts of `failures` failures known only in sum: `warned` of them
    /// warned, the first at `first_ns`, the last at `last_ns` (boot ns).
    #[must_use]
    pub fn counted(failures: u64, warned: u64, first_ns: u64, last_ns: u64) -> Self {
        Self {
            failures,
            warned,
            first_ns,
            last_ns,
            interval_failures: failures,
        }
    }

    /// No records: what sums start from.
    const NONE: Self = Self {
        failures: 0,
        warned: 0,
        first_ns: u64::MAX,
        last_ns: 0,
        interval_failures: 0,
    };

    /// The counts of one record.
    fn one(ts: u64, warned: bool) -> Self {
        let mut s = Self::NONE;
        s.record(ts, warned);
        s
    }

    /// Add the counts of other records.
    fn merge(&mut self, other: &Self) {
        self.failures += other.failures;
        self.interval_failures += other.interval_failures;
        self.warned += other.warned;
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
    }

    /// Count one more record.
    #[inline]
    fn record(&mut self, ts: u64, warned: bool) {
        self.failures += 1;
        self.interval_failures += 1;
        self.warned += u64::from(warned);
        self.first_ns = self.first_ns.min(ts);
        self.last_ns = self.last_ns.max(ts);
    }
}

/// What a row holds besides its counts: set when the row is created.
#[derive(Debug, Clone)]
struct Row {
    key: RowKey,
    /// The cgroup path of the row's first record (empty for `[other]` rows).
    cgroup: String,
    /// The cgroup id of the row's first record.
    cgroup_id: u64,
    /// A later record of the row was in another cgroup: the row shows none.
    cgroup_mixed: bool,
    /// The records of the row no cell had room for.
    rest: RowStats,
    /// Of the row's failures, those rebuilt from the kernel's table of
    /// failures the ring buffer had no room for ([`Aggregator::add_rebuilt`]).
    rebuilt: u64,
}

/// Aggregates failure records.
pub struct Aggregator {
    gfp: GfpTable,
    ksyms: Kallsyms,
    classifier: Classifier,
    outcomes: OutcomeRules,
    /// The `warn_alloc` probe is attached: its evidence decides causes.
    warn_probe: bool,
    zone_look: ZoneLook,
    cgroups: CgroupResolver,
    by: GroupBy,
    key_cap: usize,
    stacks: Stacks,
    cells: Cells,
    /// Per-stack counts of the records no cell had room for:
    /// `(row, stack id) -> failures`.
    spill: HashMap<(u32, u32), u64, FxBuild>,
    /// Rows in creation order.
    rows: Vec<Row>,
    index: HashMap<FastKey, u32, FxBuild>,
    /// Records aggregated.
    pub events: u64,
    /// Records that went to `[other]` rows because of the key cap.
    pub capped: u64,
    /// Failures added from the kernel's table of lost failures (ring buffer
    /// full), not as records: in the rows' counts, not in `events`.
    pub rebuilt: u64,
    /// With `--observe-fallbacks`: the follow records' bookkeeping.
    observer: Option<Observer>,
}

impl Aggregator {
    #[must_use]
    pub fn new(gfp: GfpTable, ksyms: Kallsyms, classifier: Classifier, key_cap: usize) -> Self {
        let key_cap = key_cap.max(1);
        Self {
            gfp,
            ksyms,
            classifier,
            outcomes: OutcomeRules::builtin(),
            warn_probe: true,
            zone_look: ZoneLook::default(),
            cgroups: CgroupResolver::with_root(None),
            by: GroupBy::default(),
            key_cap,
            stacks: Stacks::default(),
            cells: Cells::with_limit(key_cap.saturating_mul(CELLS_PER_KEY)),
            spill: HashMap::default(),
            // The row table is bounded by the key cap and allocated up front
            // (kept across windows): pagefail runs when memory is short, and
            // a table that doubles then needs twice its size at once.
            rows: Vec::with_capacity(key_cap.min(PREALLOC_ROWS) + 1),
            index: HashMap::with_capacity_and_hasher(
                key_cap.min(PREALLOC_ROWS) + 1,
                FxBuild::default(),
            ),
            events: 0,
            capped: 0,
            rebuilt: 0,
            observer: None,
        }
    }

    /// Match follow records (`EVENT_FOLLOW`) with the failures they follow
    /// (see [`crate::verdict::observed`]).
    #[must_use]
    pub fn observing_fallbacks(mut self, on: bool) -> Self {
        self.observer = on.then(Observer::default);
        self
    }

    /// What the follow records showed in this window (see
    /// [`Aggregator::reset`]); `None` unless observing. `lost`: the kernel's count of
    /// follow records that found the ring buffer full.
    #[must_use]
    pub fn fallbacks_seen(&self, lost: u64) -> Option<FallbacksSeen> {
        self.observer.as_ref().map(|o| o.report(lost))
    }

    /// Take a follow record: find the failure it follows on its CPU and
    /// count whether the two stacks show a fallback at the failure's call
    /// site. Not a failure: rows and `events` do not change.
    pub fn follow(&mut self, ev: &FailureEvent) {
        let Some(observer) = self.observer.as_mut() else {
            return;
        };
        let Some(awaited) = observer.take(ev.cpu, ev.ts_boot_ns) else {
            return;
        };
        let sid = awaited.stack;
        let (Some(failure), Some(info)) = (self.stacks.raw(sid), self.stacks.get(sid)) else {
            return;
        };
        let ksyms = &self.ksyms;
        // Return addresses point after the call: name the call's function.
        let parting = observed::parting(failure, events::stack(ev), |addr| {
            ksyms.lookup(addr.saturating_sub(1)).map(|s| s.name)
        });
        let site = self
            .outcomes
            .site(&info.plan, &self.gfp, awaited.gfp, awaited.order);
        let seen = observed::shows_fallback(&parting, site);
        observer.count(awaited.outcome, seen.then(|| site.unwrap_or("?")));
    }

    /// Group rows by these dimensions.
    #[must_use]
    pub fn group_by(mut self, by: GroupBy) -> Self {
        self.by = by;
        self
    }

    /// Decide outcomes with these rules (default: the built-in table).
    #[must_use]
    pub fn with_outcomes(mut self, outcomes: OutcomeRules) -> Self {
        self.outcomes = outcomes;
        self
    }

    /// Whether the `warn_alloc` probe is attached (default: yes). Without
    /// it, the cause of an accounted failure is read from the zone state
    /// (see [`verdict`]).
    #[must_use]
    pub fn with_warn_probe(mut self, attached: bool) -> Self {
        self.warn_probe = attached;
        self
    }

    /// Resolve cgroup ids with this resolver.
    #[must_use]
    pub fn with_cgroups(mut self, cgroups: CgroupResolver) -> Self {
        self.cgroups = cgroups;
        self
    }

    /// Use this symbol table for stacks not yet seen (the session parses
    /// kallsyms on another thread and hands it over before the first record).
    pub fn set_kallsyms(&mut self, ksyms: Kallsyms) {
        self.ksyms = ksyms;
    }

    /// The gfp table used for names.
    #[must_use]
    pub fn gfp(&self) -> &GfpTable {
        &self.gfp
    }

    /// Whether a record counts as warned: it reached `warn_alloc` and its
    /// mask lacks `__GFP_NOWARN` (`warn_alloc` returns early for those).
    #[must_use]
    pub fn is_warned(&self, ev: &FailureEvent) -> bool {
        ev.flags & EVENT_WARN_ALLOC != 0 && !self.gfp.is_nowarn(ev.gfp)
    }

    /// A stack's id and class, and whether it is new (then symbolized and
    /// classified now).
    #[inline]
    fn stack_id(&mut self, raw: &[u64]) -> (Known, bool) {
        match self.stacks.find(raw) {
            Ok(known) => (known, false),
            Err(hash) => {
                let info = self.describe(raw);
                (self.stacks.insert(hash, raw, info), true)
            }
        }
    }

    /// Symbolize and classify a stack not seen before.
    #[cold]
    fn describe(&mut self, raw: &[u64]) -> StackInfo {
        let frames = self.ksyms.symbolize_stack(raw);
        let view: Vec<Frame<'_>> = frames
            .iter()
            .map(|f| Frame {
                function: &f.name,
                module: f.module.as_deref(),
            })
            .collect();
        let context = context_of(&view);
        let path = self.classifier.paths(&view).to_string();
        let class = self.stacks.class((
            self.by.has(Dim::Context).then_some(context),
            self.by.has(Dim::Path).then(|| path.clone()),
        ));
        StackInfo {
            context,
            path,
            folded: symbolize::fold(&frames),
            plan: self.outcomes.plan(&view),
            nolock: verdict::is_nolock(&view),
            class,
        }
    }

    /// The kernel symbols and the path rules, for attributing other stacks
    /// (packet drops) the same way as failures.
    #[must_use]
    pub fn attribution(&self) -> (&Kallsyms, &Classifier) {
        (&self.ksyms, &self.classifier)
    }

    /// The attribution of a stack id.
    #[must_use]
    pub fn stack(&self, id: u32) -> Option<&StackInfo> {
        self.stacks.get(id)
    }

    /// Failures per `(row, stack id)`, in no particular order; a pair may
    /// come more than once (its counts add up).
    fn stack_cells(&self) -> impl Iterator<Item = (u32, u32, u64)> + '_ {
        self.cells
            .iter()
            .map(|c| (c.row, c.stack, c.stats.failures))
            .chain(self.spill.iter().map(|(&(row, id), &n)| (row, id, n)))
    }

    /// All distinct stacks with their total failures, most first (then by
    /// folded text, then by first appearance).
    #[must_use]
    pub fn stack_counts(&self) -> Vec<(&StackInfo, u64)> {
        let mut counts = vec![0u64; self.stacks.len()];
        for (_, id, n) in self.stack_cells() {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += n;
            }
        }
        let mut v: Vec<_> = counts
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .filter_map(|(id, n)| self.stack(u32::try_from(id).ok()?).map(|s| (s, n)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.folded.cmp(&b.0.folded)));
        v
    }

    /// Add one record. Returns its stack id and whether the stack is new.
    #[inline]
    pub fn add(&mut self, ev: &FailureEvent) -> (u32, bool) {
        let (stack, is_new) = self.stack_id(events::stack(ev));
        let sid = stack.id;
        let warned = self.is_warned(ev);
        let place = match self.cells.record(ev, sid, self.by, warned) {
            Ok(place) => place,
            Err(vacant) => self.add_to_new_cell(ev, sid, warned, vacant),
        };
        self.capped += u64::from(place.capped);
        self.events += 1;
        if let Some(observer) = &mut self.observer {
            let outcome = self.rows[place.row as usize].key.outcome;
            observer.note(
                ev.cpu,
                observed::Awaited {
                    ts_boot_ns: ev.ts_boot_ns,
                    stack: sid,
                    outcome,
                    gfp: ev.gfp,
                    order: ev.order,
                },
            );
        }
        (sid, is_new)
    }

    /// Add `stats.failures` failures that reached no record (the ring buffer
    /// was full) but were counted in the kernel by row key: `ev` carries the
    /// key (task, process, cgroup, order, gfp, stack), `stats` their counts
    /// and the times known of them. They go to the row a record of theirs
    /// would have, which then says it was rebuilt ([`Self::rebuilt_rows`]).
    pub fn add_rebuilt(&mut self, ev: &FailureEvent, stats: &RowStats) {
        if stats.failures == 0 {
            return;
        }
        let (stack, _) = self.stack_id(events::stack(ev));
        let sid = stack.id;
        let place = self.place(ev, sid);
        let row = &mut self.rows[place.row as usize];
        row.rest.merge(stats);
        row.rebuilt += stats.failures;
        row.cgroup_mixed |= row.cgroup_id != ev.cgroup_id;
        *self.spill.entry((place.row, sid)).or_default() += stats.failures;
        if place.capped {
            self.capped += stats.failures;
        }
        self.rebuilt += stats.failures;
    }

    /// The rows with failures rebuilt from the kernel's table of lost
    /// failures: key, rebuilt failures, all failures; most rebuilt first.
    #[must_use]
    pub fn rebuilt_rows(&self) -> Vec<(&RowKey, u64, u64)> {
        let stats = self.row_stats();
        let mut v: Vec<_> = self
            .rows
            .iter()
            .zip(&stats)
            .filter(|(r, _)| r.rebuilt > 0)
            .map(|(r, s)| (&r.key, r.rebuilt, s.failures))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v
    }

    /// Count a record whose cell is not in the cell table: find its row, add
    /// the cell, or count the record by row when there is no room.
    #[cold]
    fn add_to_new_cell(
        &mut self,
        ev: &FailureEvent,
        sid: u32,
        warned: bool,
        vacant: Vacant,
    ) -> Place {
        let place = self.place(ev, sid);
        if !self.cells.insert(vacant, place, ev.ts_boot_ns, warned) {
            self.rows[place.row as usize]
                .rest
                .record(ev.ts_boot_ns, warned);
            *self.spill.entry((place.row, sid)).or_default() += 1;
        }
        // A cell's records share its cgroup: comparing its first record's
        // compares them all.
        let row = &mut self.rows[place.row as usize];
        row.cgroup_mixed |= row.cgroup_id != ev.cgroup_id;
        place
    }

    /// The row of a record by its key: found, or created, or (beyond the key
    /// cap) the `[other]` row.
    #[cold]
    fn place(&mut self, ev: &FailureEvent, sid: u32) -> Place {
        let by = self.by;
        let mut comm = [0u8; TASK_COMM_LEN];
        if by.has(Dim::Comm) {
            let len = memchr::memchr(0, &ev.comm).unwrap_or(TASK_COMM_LEN);
            comm[..len].copy_from_slice(&ev.comm[..len]);
        }
        let class = self.stacks.get(sid).map_or(0, |s| s.class);
        let (cause, outcome) = self.verdict(ev, sid);
        let mut fast = FastKey {
            comm,
            tgid: if by.has(Dim::Pid) { ev.tgid } else { 0 },
            class,
            cgroup_id: if by.has(Dim::Cgroup) { ev.cgroup_id } else { 0 },
            gfp: if by.has(Dim::Gfp) { ev.gfp } else { 0 },
            order: if by.has(Dim::Order) { ev.order } else { 0 },
            stack: if by.has(Dim::Stack) { sid + 1 } else { 0 },
            cause,
            outcome,
        };
        if let Some(&row) = self.index.get(&fast) {
            return Place { row, capped: false };
        }
        let capped = self.rows.len() >= self.key_cap;
        if capped {
            fast = FastKey {
                comm: [0; TASK_COMM_LEN],
                tgid: 0,
                class: u32::MAX,
                cgroup_id: 0,
                stack: 0,
                ..fast
            };
            if let Some(&row) = self.index.get(&fast) {
                return Place { row, capped };
            }
        }
        let row = u32::try_from(self.rows.len()).unwrap_or(u32::MAX);
        self.new_row(ev, sid, capped, (cause, outcome));
        self.index.insert(fast, row);
        Place { row, capped }
    }

    /// The cause and outcome of a record (once per cell: its records share
    /// what decides them).
    fn verdict(&mut self, ev: &FailureEvent, sid: u32) -> (Cause, Outcome) {
        let info = self.stacks.get(sid);
        let outcome = info.map_or(Outcome::Unknown, |i| {
            self.outcomes.outcome(&i.plan, &self.gfp, ev.gfp, ev.order)
        });
        let evidence = Evidence {
            nolock: info.is_some_and(|i| i.nolock),
            account: ev.gfp & self.gfp.account_mask() != 0,
            warn_probe: self.warn_probe,
            warn_reached: ev.flags & EVENT_WARN_ALLOC != 0,
        };
        let zone_look = &mut self.zone_look;
        let cause = verdict::cause(evidence, || zone_look.has_room(ev.order));
        (cause, outcome)
    }

    /// Start a new window: forget the rows (and, once they grow large, the
    /// stack caches, so memory stays bounded over weeks of `record`).
    pub fn reset(&mut self) {
        self.rows.clear();
        self.index.clear();
        self.cells.clear();
        self.spill.clear();
        self.events = 0;
        self.capped = 0;
        self.rebuilt = 0;
        if let Some(observer) = &mut self.observer {
            observer.clear_counts();
        }
        if self.stacks.len() > STACK_CACHE_LIMIT {
            self.forget_stacks();
        }
    }

    /// Replace the outcome rules; stacks are planned again (call
    /// [`Aggregator::set_classifier`] after it, which forgets them).
    pub fn set_outcomes(&mut self, outcomes: OutcomeRules) {
        self.outcomes = outcomes;
    }

    /// Replace the network path rules. Only between windows: `record` calls
    /// this right after [`Aggregator::reset`], as rows refer to stack ids.
    pub fn set_classifier(&mut self, classifier: Classifier) {
        self.classifier = classifier;
        self.forget_stacks();
    }

    fn forget_stacks(&mut self) {
        self.stacks.clear();
        if let Some(observer) = &mut self.observer {
            observer.forget_awaited();
        }
        // Cells are keyed by stack ids, which are about to be handed out
        // again: keep their counts by row, and let new records make new cells.
        for cell in self.cells.iter() {
            self.rows[cell.row as usize].rest.merge(cell.stats);
            *self.spill.entry((cell.row, cell.stack)).or_default() += cell.stats.failures;
        }
        self.cells.clear();
    }

    /// Add the row first seen with `ev`: its printable key and empty counts.
    fn new_row(
        &mut self,
        ev: &FailureEvent,
        sid: u32,
        other: bool,
        (cause, outcome): (Cause, Outcome),
    ) {
        let by = self.by;
        let key = if other {
            RowKey {
                comm: Some(OTHER.to_owned()),
                tgid: None,
                cgroup_id: None,
                context: None,
                path: None,
                order: by.has(Dim::Order).then_some(ev.order),
                gfp: by.has(Dim::Gfp).then_some(ev.gfp),
                stack: None,
                cause,
                outcome,
            }
        } else {
            let info = self.stacks.get(sid);
            RowKey {
                comm: by.has(Dim::Comm).then(|| events::comm(ev)),
                tgid: by.has(Dim::Pid).then_some(ev.tgid),
                cgroup_id: by.has(Dim::Cgroup).then_some(ev.cgroup_id),
                context: by
                    .has(Dim::Context)
                    .then(|| info.map_or(Context::Unknown, |i| i.context)),
                path: by
                    .has(Dim::Path)
                    .then(|| info.map(|i| i.path.clone()).unwrap_or_default()),
                order: by.has(Dim::Order).then_some(ev.order),
                gfp: by.has(Dim::Gfp).then_some(ev.gfp),
                stack: by.has(Dim::Stack).then_some(sid),
                cause,
                outcome,
            }
        };
        let cgroup = if other {
            String::new()
        } else {
            self.cgroups.resolve(ev.cgroup_id, ev.tgid)
        };
        self.rows.push(Row {
            key,
            cgroup,
            cgroup_id: ev.cgroup_id,
            cgroup_mixed: false,
            rest: RowStats::NONE,
            rebuilt: 0,
        });
    }

    /// Reset the per-interval counts.
    pub fn start_interval(&mut self) {
        self.cells.start_interval();
        for row in &mut self.rows {
            row.rest.interval_failures = 0;
        }
    }

    /// The counts of every row (by row index): the sums of its cells.
    fn row_stats(&self) -> Vec<RowStats> {
        let mut stats: Vec<RowStats> = self.rows.iter().map(|r| r.rest.clone()).collect();
        for cell in self.cells.iter() {
            if let Some(s) = stats.get_mut(cell.row as usize) {
                s.merge(cell.stats);
            }
        }
        stats
    }

    /// Row indices, most failures first, then by key; rows equal in both
    /// keep their creation order.
    fn sorted(&self, stats: &[RowStats]) -> Vec<usize> {
        let mut v: Vec<(u64, usize)> = stats.iter().map(|s| s.failures).zip(0..).collect();
        v.sort_by(|&(fa, a), &(fb, b)| {
            fb.cmp(&fa)
                .then_with(|| self.rows[a].key.cmp(&self.rows[b].key))
        });
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// The rows with their counts, most failures first.
    #[must_use]
    pub fn rows(&self) -> Vec<(&RowKey, RowStats)> {
        let mut stats = self.row_stats();
        self.sorted(&stats)
            .into_iter()
            .map(|i| {
                (
                    &self.rows[i].key,
                    std::mem::replace(&mut stats[i], RowStats::NONE),
                )
            })
            .collect()
    }

    /// Sum of failures over all rows (equals `events + rebuilt`).
    #[must_use]
    pub fn total_failures(&self) -> u64 {
        self.row_stats().iter().map(|r| r.failures).sum()
    }

    /// The most frequent stack of each row (by row index): most failures,
    /// then the lowest stack id.
    fn top_stacks(&self) -> Vec<Option<u32>> {
        // The (stack, failures) of every cell, grouped by row (a counting
        // sort), then per row summed by stack in a scratch array.
        let rows = self.rows.len();
        let mut start = vec![0usize; rows + 1];
        let mut stacks = 0;
        for (row, id, _) in self.stack_cells() {
            start[row as usize + 1] += 1;
            stacks = stacks.max(id as usize + 1);
        }
        for i in 0..rows {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut by_row = vec![(0u32, 0u64); start[rows]];
        for (row, id, n) in self.stack_cells() {
            let slot = &mut next[row as usize];
            by_row[*slot] = (id, n);
            *slot += 1;
        }
        let mut sums = vec![0u64; stacks];
        (0..rows)
            .map(|row| {
                let cells = &by_row[start[row]..start[row + 1]];
                for &(id, n) in cells {
                    sums[id as usize] += n;
                }
                let mut top: Option<(u32, u64)> = None;
                for &(id, _) in cells {
                    let n = sums[id as usize];
                    if top.is_none_or(|(best_id, best)| n > best || (n == best && id < best_id)) {
                        top = Some((id, n));
                    }
                }
                for &(id, _) in cells {
                    sums[id as usize] = 0;
                }
                top.map(|(id, _)| id)
            })
            .collect()
    }

    /// Summary rows in the CSV contract's shape. Columns of dimensions not
    /// grouped by are empty.
    #[must_use]
    pub fn summary_rows(&self, window: &Window) -> Vec<SummaryRow> {
        let stats = self.row_stats();
        let top = self.top_stacks();
        let start = crate::timestamp::rfc3339(window.start);
        let end = crate::timestamp::rfc3339(window.end);
        // A window has a handful of distinct masks: name each once.
        let mut gfp_names: HashMap<u64, (String, String, bool), FxBuild> = HashMap::default();
        self.sorted(&stats)
            .into_iter()
            .map(|i| {
                let (row, s) = (&self.rows[i], &stats[i]);
                let k = &row.key;
                let (gfp, gfp_flags, atomic) = match k.gfp {
                    Some(g) => {
                        let (hex, names, atomic) = gfp_names.entry(g).or_insert_with(|| {
                            (gfp::hex(g), self.gfp.decode(g), self.gfp.is_atomic(g))
                        });
                        (hex.clone(), names.clone(), Some(*atomic))
                    }
                    None => (String::new(), String::new(), None),
                };
                SummaryRow {
                    window_start: start.clone(),
                    window_end: end.clone(),
                    host: window.host.clone(),
                    kernel: window.kernel.clone(),
                    comm: k.comm.clone().unwrap_or_default(),
                    pid: k.tgid.map(|p| p.to_string()).unwrap_or_default(),
                    cgroup: if row.cgroup_mixed {
                        String::new()
                    } else {
                        row.cgroup.clone()
                    },
                    context: k.context.map(|c| c.as_str().to_owned()).unwrap_or_default(),
                    path: k.path.clone().unwrap_or_default(),
                    order: k.order,
                    gfp,
                    gfp_flags,
                    atomic,
                    failures: s.failures,
                    warned: s.warned,
                    first_seen: crate::timestamp::rfc3339(window.clock.to_system(s.first_ns)),
                    last_seen: crate::timestamp::rfc3339(window.clock.to_system(s.last_ns)),
                    top_stack: top[i]
                        .and_then(|id| self.stack(id))
                        .map(|info| info.folded.clone())
                        .unwrap_or_default(),
                    cause: k.cause.as_str().to_owned(),
                    outcome: k.outcome.as_str().to_owned(),
                }
            })
            .collect()
    }
}

/// The time window and host facts written with summary rows.
#[derive(Debug, Clone)]
pub struct Window {
    pub start: SystemTime,
    pub end: SystemTime,
    pub host: String,
    pub kernel: String,
    pub clock: BootClock,
}

impl Window {
    /// A window starting now on this host.
    #[must_use]
    pub fn starting_now() -> Self {
        let now = SystemTime::now();
        Self {
            start: now,
            end: now,
            host: read_trimmed("/proc/sys/kernel/hostname"),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            clock: BootClock::now(),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
