//! Bounded aggregation of failure records into summary rows.
//!
//! Per-record work is a hash lookup of the stack (raw addresses) and of a
//! fixed-size, allocation-free row key; symbolization and classification
//! happen once per distinct stack, the row's printable key and its cgroup
//! resolution once per row. The number of distinct row keys is capped:
//! records beyond the cap go to an `[other]` row of the same order and gfp
//! (where those are grouped by), so totals stay exact.

use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasherDefault, Hasher},
    str::FromStr,
    time::SystemTime,
};

use tracer_common::{EVENT_WARN_ALLOC, FailureEvent, TASK_COMM_LEN};

use crate::{
    cgroup::CgroupResolver,
    classify::{Classifier, Context, Frame, context_of},
    events::{self, BootClock},
    export::SummaryRow,
    gfp::{self, GfpTable},
    symbolize::{self, Kallsyms},
};

/// Default cap on distinct row keys.
pub const DEFAULT_KEY_CAP: usize = 10_000;

/// Distinct stacks kept across [`Aggregator::reset`] at most.
const STACK_CACHE_LIMIT: usize = 50_000;

/// The comm of the rows that collect records beyond the key cap.
pub const OTHER: &str = "[other]";

/// A dimension rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Comm,
    Pid,
    Cgroup,
    Context,
    Path,
    Order,
    Gfp,
    Stack,
}

impl Dim {
    const ALL: [Self; 8] = [
        Self::Comm,
        Self::Pid,
        Self::Cgroup,
        Self::Context,
        Self::Path,
        Self::Order,
        Self::Gfp,
        Self::Stack,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Comm => "comm",
            Self::Pid => "pid",
            Self::Cgroup => "cgroup",
            Self::Context => "context",
            Self::Path => "path",
            Self::Order => "order",
            Self::Gfp => "gfp",
            Self::Stack => "stack",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of dimensions rows are grouped by (`--by comm,pid,order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy(u8);

impl GroupBy {
    /// Whether rows are split by `dim`.
    #[must_use]
    pub fn has(self, dim: Dim) -> bool {
        self.0 & dim.bit() != 0
    }
}

impl Default for GroupBy {
    /// `comm,pid,context,path,order,gfp`: the CSV contract's row key.
    fn default() -> Self {
        "comm,pid,context,path,order,gfp"
            .parse()
            .unwrap_or(Self(0xff))
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bits = 0;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let dim = Dim::ALL
                .into_iter()
                .find(|d| d.name() == word)
                .ok_or_else(|| {
                    format!(
                        "unknown key `{word}`: use any of comm,pid,cgroup,context,path,order,gfp,stack"
                    )
                })?;
            bits |= dim.bit();
        }
        if bits == 0 {
            return Err(
                "give at least one key: comm,pid,cgroup,context,path,order,gfp,stack".into(),
            );
        }
        Ok(Self(bits))
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Dim::ALL
            .into_iter()
            .filter(|d| self.has(*d))
            .map(Dim::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What one distinct stack says, worked out once.
#[derive(Debug, Clone)]
pub struct StackInfo {
    pub context: Context,
    pub path: String,
    /// Root first, `;`-joined.
    pub folded: String,
    /// Id of this stack's (context, path), the parts of it rows are grouped by.
    class: u32,
}

/// A multiply-rotate hasher (the Fx hash) for the collector's per-record
/// lookups: stacks of raw kernel addresses and fixed-size row keys. Several
/// times faster than SipHash on a 40-frame stack; the keys come from the
/// kernel, not from an adversary choosing hash collisions.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(Self::K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The product's high bits are the well-mixed ones; the table indexes
        // with the low bits.
        self.0.rotate_left(26)
    }
}

/// Builds [`FxHasher`]s.
pub type FxBuild = BuildHasherDefault<FxHasher>;

/// The row key as the hot path builds it: fixed size, no allocation; fields
/// of dimensions not grouped by are zero.
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
}

/// Counts of one row.
#[derive(Debug, Clone, Default)]
pub struct RowStats {
    pub failures: u64,
    pub warned: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Failures since the last [`Aggregator::start_interval`].
    pub interval_failures: u64,
    /// The cgroup path of the row's first record, resolved when the row was
    /// created; cleared when a later record of the row was in another cgroup.
    pub cgroup: String,
    cgroup_id: u64,
    /// Failures per distinct stack id.
    pub stacks: HashMap<u32, u64, FxBuild>,
}

/// Aggregates failure records.
pub struct Aggregator {
    gfp: GfpTable,
    ksyms: Kallsyms,
    classifier: Classifier,
    cgroups: CgroupResolver,
    by: GroupBy,
    key_cap: usize,
    stack_ids: HashMap<Vec<u64>, u32, FxBuild>,
    stack_info: Vec<StackInfo>,
    /// Interned (context, path) of stacks, as grouped by.
    classes: HashMap<(Option<Context>, Option<String>), u32>,
    rows: Vec<(RowKey, RowStats)>,
    index: HashMap<FastKey, usize, FxBuild>,
    /// Records aggregated.
    pub events: u64,
    /// Records that went to `[other]` rows because of the key cap.
    pub capped: u64,
}

impl Aggregator {
    #[must_use]
    pub fn new(gfp: GfpTable, ksyms: Kallsyms, classifier: Classifier, key_cap: usize) -> Self {
        Self {
            gfp,
            ksyms,
            classifier,
            cgroups: CgroupResolver::with_root(None),
            by: GroupBy::default(),
            key_cap: key_cap.max(1),
            stack_ids: HashMap::default(),
            stack_info: Vec::new(),
            classes: HashMap::new(),
            rows: Vec::new(),
            index: HashMap::default(),
            events: 0,
            capped: 0,
        }
    }

    /// Group rows by these dimensions.
    #[must_use]
    pub fn group_by(mut self, by: GroupBy) -> Self {
        self.by = by;
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
    /// mask lacks `__GFP_NOWARN` (warn_alloc returns early for those).
    #[must_use]
    pub fn is_warned(&self, ev: &FailureEvent) -> bool {
        ev.flags & EVENT_WARN_ALLOC != 0 && !self.gfp.is_nowarn(ev.gfp)
    }

    fn stack_id(&mut self, raw: &[u64]) -> u32 {
        if let Some(&id) = self.stack_ids.get(raw) {
            return id;
        }
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
        let class_key = (
            self.by.has(Dim::Context).then_some(context),
            self.by.has(Dim::Path).then(|| path.clone()),
        );
        let next = u32::try_from(self.classes.len()).unwrap_or(u32::MAX - 1);
        let class = *self.classes.entry(class_key).or_insert(next);
        let info = StackInfo {
            context,
            path,
            folded: symbolize::fold(&frames),
            class,
        };
        let id = u32::try_from(self.stack_info.len()).unwrap_or(u32::MAX);
        self.stack_info.push(info);
        self.stack_ids.insert(raw.to_vec(), id);
        id
    }

    /// The attribution of a stack id.
    #[must_use]
    pub fn stack(&self, id: u32) -> Option<&StackInfo> {
        self.stack_info.get(id as usize)
    }

    /// All distinct stacks with their total failures.
    #[must_use]
    pub fn stack_counts(&self) -> Vec<(&StackInfo, u64)> {
        let mut counts: HashMap<u32, u64> = HashMap::new();
        for (_, row) in &self.rows {
            for (id, n) in &row.stacks {
                *counts.entry(*id).or_default() += n;
            }
        }
        let mut v: Vec<_> = counts
            .into_iter()
            .filter_map(|(id, n)| self.stack(id).map(|s| (s, n)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.folded.cmp(&b.0.folded)));
        v
    }

    /// Add one record. Returns its stack id and whether the stack is new.
    pub fn add(&mut self, ev: &FailureEvent) -> (u32, bool) {
        let known = self.stack_ids.len();
        let sid = self.stack_id(events::stack(ev));
        let is_new = self.stack_ids.len() > known;
        let by = self.by;
        let mut comm = [0u8; TASK_COMM_LEN];
        if by.has(Dim::Comm) {
            let len = ev
                .comm
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(TASK_COMM_LEN);
            comm[..len].copy_from_slice(&ev.comm[..len]);
        }
        let mut fast = FastKey {
            comm,
            tgid: if by.has(Dim::Pid) { ev.tgid } else { 0 },
            class: self.stack_info[sid as usize].class,
            cgroup_id: if by.has(Dim::Cgroup) { ev.cgroup_id } else { 0 },
            gfp: if by.has(Dim::Gfp) { ev.gfp } else { 0 },
            order: if by.has(Dim::Order) { ev.order } else { 0 },
            stack: if by.has(Dim::Stack) { sid + 1 } else { 0 },
        };
        let i = if let Some(&i) = self.index.get(&fast) {
            i
        } else {
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
                self.capped += 1;
            }
            if let Some(&i) = self.index.get(&fast) {
                i
            } else {
                let i = self.rows.len();
                let row = self.new_row(ev, sid, capped);
                self.rows.push(row);
                self.index.insert(fast, i);
                i
            }
        };
        let warned = self.is_warned(ev);
        let row = &mut self.rows[i].1;
        if row.cgroup_id != ev.cgroup_id && !row.cgroup.is_empty() {
            row.cgroup.clear();
        }
        row.failures += 1;
        row.interval_failures += 1;
        row.warned += u64::from(warned);
        row.first_ns = row.first_ns.min(ev.ts_boot_ns);
        row.last_ns = row.last_ns.max(ev.ts_boot_ns);
        *row.stacks.entry(sid).or_default() += 1;
        self.events += 1;
        (sid, is_new)
    }

    /// Start a new window: forget the rows (and, once they grow large, the
    /// stack caches, so memory stays bounded over weeks of `record`).
    pub fn reset(&mut self) {
        self.rows.clear();
        self.index.clear();
        self.events = 0;
        self.capped = 0;
        if self.stack_info.len() > STACK_CACHE_LIMIT {
            self.forget_stacks();
        }
    }

    /// Replace the network path rules. Only between windows: `record` calls
    /// this right after [`Aggregator::reset`], as rows refer to stack ids.
    pub fn set_classifier(&mut self, classifier: Classifier) {
        self.classifier = classifier;
        self.forget_stacks();
    }

    fn forget_stacks(&mut self) {
        self.stack_ids.clear();
        self.stack_info.clear();
        self.classes.clear();
    }

    /// The printable key and empty counts of a row first seen with `ev`.
    fn new_row(&mut self, ev: &FailureEvent, sid: u32, other: bool) -> (RowKey, RowStats) {
        let by = self.by;
        let info = &self.stack_info[sid as usize];
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
            }
        } else {
            RowKey {
                comm: by.has(Dim::Comm).then(|| events::comm(ev)),
                tgid: by.has(Dim::Pid).then_some(ev.tgid),
                cgroup_id: by.has(Dim::Cgroup).then_some(ev.cgroup_id),
                context: by.has(Dim::Context).then_some(info.context),
                path: by.has(Dim::Path).then(|| info.path.clone()),
                order: by.has(Dim::Order).then_some(ev.order),
                gfp: by.has(Dim::Gfp).then_some(ev.gfp),
                stack: by.has(Dim::Stack).then_some(sid),
            }
        };
        let cgroup = if other {
            String::new()
        } else {
            self.cgroups.resolve(ev.cgroup_id)
        };
        let stats = RowStats {
            first_ns: ev.ts_boot_ns,
            last_ns: ev.ts_boot_ns,
            cgroup,
            cgroup_id: ev.cgroup_id,
            ..RowStats::default()
        };
        (key, stats)
    }

    /// Reset the per-interval counts.
    pub fn start_interval(&mut self) {
        for (_, row) in &mut self.rows {
            row.interval_failures = 0;
        }
    }

    /// The rows, most failures first.
    #[must_use]
    pub fn rows(&self) -> Vec<(&RowKey, &RowStats)> {
        let mut v: Vec<_> = self.rows.iter().map(|(k, s)| (k, s)).collect();
        v.sort_by(|a, b| b.1.failures.cmp(&a.1.failures).then_with(|| a.0.cmp(b.0)));
        v
    }

    /// Sum of failures over all rows (equals `events`).
    #[must_use]
    pub fn total_failures(&self) -> u64 {
        self.rows.iter().map(|(_, r)| r.failures).sum()
    }

    /// The most frequent stack of a row, folded.
    #[must_use]
    pub fn top_stack(&self, stats: &RowStats) -> String {
        stats
            .stacks
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .and_then(|(id, _)| self.stack(*id))
            .map(|i| i.folded.clone())
            .unwrap_or_default()
    }

    /// Summary rows in the CSV contract's shape. Columns of dimensions not
    /// grouped by are empty.
    #[must_use]
    pub fn summary_rows(&self, window: &Window) -> Vec<SummaryRow> {
        self.rows()
            .into_iter()
            .map(|(k, s)| SummaryRow {
                window_start: events::rfc3339(window.start),
                window_end: events::rfc3339(window.end),
                host: window.host.clone(),
                kernel: window.kernel.clone(),
                comm: k.comm.clone().unwrap_or_default(),
                pid: k.tgid.map(|p| p.to_string()).unwrap_or_default(),
                cgroup: s.cgroup.clone(),
                context: k.context.map(|c| c.to_string()).unwrap_or_default(),
                path: k.path.clone().unwrap_or_default(),
                order: k.order,
                gfp: k.gfp.map(gfp::hex).unwrap_or_default(),
                gfp_flags: k.gfp.map(|g| self.gfp.decode(g)).unwrap_or_default(),
                atomic: k.gfp.map(|g| self.gfp.is_atomic(g)),
                failures: s.failures,
                warned: s.warned,
                first_seen: events::rfc3339(window.clock.to_system(s.first_ns)),
                last_seen: events::rfc3339(window.clock.to_system(s.last_ns)),
                top_stack: self.top_stack(s),
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

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use tracer_common::{MAX_STACK_DEPTH, TASK_COMM_LEN};

    use super::*;

    fn table() -> GfpTable {
        GfpTable::from_format(include_str!(
            "../../tests/fixtures/format/mm_page_alloc-6.18.txt"
        ))
        .unwrap()
    }

    const KSYMS: &str = "\
ffffffff81100000 T __alloc_pages_noprof
ffffffff81200000 T alloc_fdtable
ffffffff81200100 T expand_files
ffffffff81300000 T neigh_hash_alloc
ffffffff81300100 T tcp_connect
ffffffff81400000 T do_syscall_64
";

    fn event(
        comm: &str,
        tgid: u32,
        order: u32,
        gfp: u64,
        stack: &[u64],
        flags: u32,
    ) -> FailureEvent {
        let mut ev = FailureEvent {
            ts_boot_ns: 1_000 + u64::from(tgid),
            cgroup_id: 0,
            gfp,
            pid: tgid,
            tgid,
            order,
            migratetype: 0,
            cpu: 0,
            flags,
            stack_len: u32::try_from(stack.len()).unwrap(),
            _pad: 0,
            comm: [0; TASK_COMM_LEN],
            stack: [0; MAX_STACK_DEPTH],
        };
        ev.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        ev.stack[..stack.len()].copy_from_slice(stack);
        ev
    }

    fn agg(cap: usize) -> Aggregator {
        Aggregator::new(table(), Kallsyms::parse(KSYMS), Classifier::builtin(), cap)
    }

    /// An aggregator over a small symbol table, for other modules' tests.
    pub(crate) fn test_aggregator() -> Aggregator {
        agg(DEFAULT_KEY_CAP)
    }

    /// A failure record with one of two stacks (0: fd table, 1: neighbour/TCP).
    pub(crate) fn test_event(
        comm: &str,
        tgid: u32,
        order: u32,
        gfp: u64,
        stack: usize,
    ) -> FailureEvent {
        let s: &[u64] = if stack == 0 { &FD } else { &NET };
        event(comm, tgid, order, gfp, s, EVENT_WARN_ALLOC)
    }

    const FD: [u64; 4] = [
        0xffff_ffff_8110_0010,
        0xffff_ffff_8120_0010,
        0xffff_ffff_8120_0110,
        0xffff_ffff_8140_0010,
    ];
    const NET: [u64; 3] = [
        0xffff_ffff_8130_0010,
        0xffff_ffff_8130_0110,
        0xffff_ffff_8140_0010,
    ];

    #[test]
    fn rows_group_by_key_and_keep_the_top_stack() {
        let mut a = agg(100);
        for _ in 0..3 {
            a.add(&event("dup", 10, 6, 0x400cc0, &FD, 0));
        }
        a.add(&event("dup", 10, 6, 0x400cc0, &NET, 0));
        a.add(&event("nettool", 11, 1, 0x820, &NET, EVENT_WARN_ALLOC));
        a.add(&event("nettool", 11, 1, 0x2820, &NET, EVENT_WARN_ALLOC)); // NOWARN
        assert_eq!(a.events, 6);
        assert_eq!(a.total_failures(), 6);
        let rows = a.summary_rows(&Window::starting_now());
        let dup: Vec<_> = rows.iter().filter(|r| r.comm == "dup").collect();
        assert_eq!(dup.len(), 2, "different paths are different rows: {dup:?}");
        let fdrow = dup.iter().find(|r| r.failures == 3).unwrap();
        assert_eq!(fdrow.top_stack, "do_syscall_64;expand_files;alloc_fdtable");
        assert_eq!(fdrow.gfp_flags, "GFP_KERNEL_ACCOUNT");
        assert_eq!(fdrow.atomic, Some(false));
        assert_eq!(fdrow.context, "task");
        assert_eq!(fdrow.path, "none");
        let netrow = dup.iter().find(|r| r.failures == 1).unwrap();
        assert_eq!(netrow.path, "neigh+tcp");
        let warned: u64 = rows
            .iter()
            .filter(|r| r.comm == "nettool")
            .map(|r| r.warned)
            .sum();
        assert_eq!(warned, 1, "the NOWARN failure is not warned");
    }

    #[test]
    fn group_by_fewer_keys_merges_rows_and_blanks_columns() {
        let mut a = agg(100).group_by("comm".parse().unwrap());
        a.add(&event("dup", 10, 6, 0x400cc0, &FD, 0));
        a.add(&event("dup", 12, 3, 0x820, &NET, 0));
        a.add(&event("x", 13, 3, 0x820, &NET, 0));
        let rows = a.summary_rows(&Window::starting_now());
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].comm.as_str(), rows[0].failures), ("dup", 2));
        assert_eq!(rows[0].pid, "");
        assert_eq!(rows[0].order, None);
        assert_eq!(rows[0].gfp, "");
        assert_eq!(rows[0].atomic, None);
    }

    #[test]
    fn group_by_parses_and_rejects() {
        let by: GroupBy = "order, stack".parse().unwrap();
        assert!(by.has(Dim::Order) && by.has(Dim::Stack) && !by.has(Dim::Comm));
        assert_eq!(by.to_string(), "order,stack");
        assert_eq!(
            GroupBy::default().to_string(),
            "comm,pid,context,path,order,gfp"
        );
        assert!("comm,zone".parse::<GroupBy>().unwrap_err().contains("zone"));
        assert!("".parse::<GroupBy>().is_err());
    }

    #[test]
    fn key_cap_keeps_totals_exact() {
        let mut a = agg(3);
        for pid in 0..50 {
            a.add(&event("p", pid, 1, 0x820, &FD, 0));
        }
        let rows = a.rows();
        assert_eq!(rows.len(), 4, "3 keys + one other row");
        assert_eq!(a.total_failures(), 50);
        assert_eq!(a.capped, 47);
        assert_eq!(rows[0].0.comm.as_deref(), Some(OTHER));
        assert_eq!(rows[0].1.failures, 47);
    }

    #[test]
    fn same_stack_is_symbolized_once() {
        let mut a = agg(10);
        let (id1, new1) = a.add(&event("x", 1, 1, 0x820, &FD, 0));
        let (id2, new2) = a.add(&event("y", 2, 1, 0x820, &FD, 0));
        assert_eq!(id1, id2);
        assert!(new1 && !new2);
        assert_eq!(a.stack_counts().len(), 1);
        assert_eq!(a.stack_counts()[0].1, 2);
    }

    #[test]
    fn reset_starts_an_empty_window() {
        let mut a = agg(10);
        a.add(&event("x", 1, 1, 0x820, &FD, 0));
        a.reset();
        assert_eq!((a.events, a.rows().len(), a.total_failures()), (0, 0, 0));
        let (_, new) = a.add(&event("x", 1, 1, 0x820, &FD, 0));
        assert!(!new, "stack cache kept across windows");
        assert_eq!(a.total_failures(), 1);
    }

    #[test]
    fn interval_counts_reset() {
        let mut a = agg(10);
        a.add(&event("x", 1, 1, 0x820, &FD, 0));
        a.start_interval();
        a.add(&event("x", 1, 1, 0x820, &FD, 0));
        let rows = a.rows();
        assert_eq!((rows[0].1.failures, rows[0].1.interval_failures), (2, 1));
    }

    proptest! {
        #[test]
        fn rows_sum_to_events_under_any_cap(
            cap in 1usize..20,
            evs in proptest::collection::vec((0u32..30, 0u32..11, 0usize..2, any::<bool>()), 0..300),
        ) {
            let mut a = agg(cap);
            for (pid, order, s, atomic) in &evs {
                let stack: &[u64] = if *s == 0 { &FD } else { &NET };
                let gfp = if *atomic { 0x820 } else { 0xcc0 };
                a.add(&event("p", *pid, *order, gfp, stack, 0));
            }
            prop_assert_eq!(a.total_failures(), evs.len() as u64);
            let rows = a.summary_rows(&Window::starting_now());
            prop_assert_eq!(rows.iter().map(|r| r.failures).sum::<u64>(), evs.len() as u64);
            // Rows beyond the cap only as [other] rows, one per (order, gfp).
            let normal = rows.iter().filter(|r| r.comm != OTHER).count();
            prop_assert!(normal <= cap);
        }
    }
}
