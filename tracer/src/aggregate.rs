//! Bounded aggregation of failure records into summary rows.
//!
//! Per-record work is a hash lookup of the stack (raw addresses) and of the
//! row key; symbolization and classification happen once per distinct stack.
//! The number of distinct row keys is capped: records beyond the cap go to
//! an `other` row of the same order and gfp, so totals stay exact.

use std::{collections::HashMap, time::SystemTime};

use tracer_common::{EVENT_WARN_ALLOC, FailureEvent};

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

/// The comm of the row that collects records beyond the key cap.
pub const OTHER: &str = "[other]";

/// What one distinct stack says, worked out once.
#[derive(Debug, Clone)]
pub struct StackInfo {
    pub context: Context,
    pub path: String,
    /// Root first, `;`-joined.
    pub folded: String,
}

/// The key of a summary row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub comm: String,
    /// Thread-group id; 0 in the `other` row.
    pub tgid: u32,
    pub cgroup_id: u64,
    pub context: Context,
    pub path: String,
    pub order: u32,
    pub gfp: u64,
}

/// Counts of one row.
#[derive(Debug, Clone, Default)]
pub struct RowStats {
    pub failures: u64,
    pub warned: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Failures per distinct stack id.
    pub stacks: HashMap<u32, u64>,
}

/// Aggregates failure records.
pub struct Aggregator {
    gfp: GfpTable,
    ksyms: Kallsyms,
    classifier: Classifier,
    key_cap: usize,
    stack_ids: HashMap<Vec<u64>, u32>,
    stack_info: Vec<StackInfo>,
    rows: HashMap<RowKey, RowStats>,
    /// Records aggregated.
    pub events: u64,
    /// Records that went to `other` rows because of the key cap.
    pub capped: u64,
}

impl Aggregator {
    #[must_use]
    pub fn new(gfp: GfpTable, ksyms: Kallsyms, classifier: Classifier, key_cap: usize) -> Self {
        Self {
            gfp,
            ksyms,
            classifier,
            key_cap: key_cap.max(1),
            stack_ids: HashMap::new(),
            stack_info: Vec::new(),
            rows: HashMap::new(),
            events: 0,
            capped: 0,
        }
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
        let info = StackInfo {
            context: context_of(&view),
            path: self.classifier.paths(&view).to_string(),
            folded: symbolize::fold(&frames),
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

    /// Add one record. Returns its stack id and whether the stack is new.
    pub fn add(&mut self, ev: &FailureEvent) -> (u32, bool) {
        let known = self.stack_ids.len();
        let sid = self.stack_id(events::stack(ev));
        let is_new = self.stack_ids.len() > known;
        let info = &self.stack_info[sid as usize];
        let mut key = RowKey {
            comm: events::comm(ev),
            tgid: ev.tgid,
            cgroup_id: ev.cgroup_id,
            context: info.context,
            path: info.path.clone(),
            order: ev.order,
            gfp: ev.gfp,
        };
        if !self.rows.contains_key(&key) && self.rows.len() >= self.key_cap {
            key = RowKey {
                comm: OTHER.to_owned(),
                tgid: 0,
                cgroup_id: 0,
                context: Context::Unknown,
                path: OTHER.to_owned(),
                order: ev.order,
                gfp: ev.gfp,
            };
            self.capped += 1;
        }
        let warned = self.is_warned(ev);
        let row = self.rows.entry(key).or_default();
        if row.failures == 0 {
            row.first_ns = ev.ts_boot_ns;
        }
        row.failures += 1;
        row.warned += u64::from(warned);
        row.first_ns = row.first_ns.min(ev.ts_boot_ns);
        row.last_ns = row.last_ns.max(ev.ts_boot_ns);
        *row.stacks.entry(sid).or_default() += 1;
        self.events += 1;
        (sid, is_new)
    }

    /// The rows, most failures first.
    #[must_use]
    pub fn rows(&self) -> Vec<(&RowKey, &RowStats)> {
        let mut v: Vec<_> = self.rows.iter().collect();
        v.sort_by(|a, b| b.1.failures.cmp(&a.1.failures).then_with(|| a.0.cmp(b.0)));
        v
    }

    /// Sum of failures over all rows (equals `events`).
    #[must_use]
    pub fn total_failures(&self) -> u64 {
        self.rows.values().map(|r| r.failures).sum()
    }

    /// Summary rows in the CSV contract's shape.
    #[must_use]
    pub fn summary_rows(&self, window: &Window, cgroups: &mut CgroupResolver) -> Vec<SummaryRow> {
        self.rows()
            .into_iter()
            .map(|(k, s)| {
                let top = s
                    .stacks
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                    .and_then(|(id, _)| self.stack(*id))
                    .map(|i| i.folded.clone())
                    .unwrap_or_default();
                SummaryRow {
                    window_start: events::rfc3339(window.start),
                    window_end: events::rfc3339(window.end),
                    host: window.host.clone(),
                    kernel: window.kernel.clone(),
                    comm: k.comm.clone(),
                    pid: if k.comm == OTHER {
                        String::new()
                    } else {
                        k.tgid.to_string()
                    },
                    cgroup: cgroups.resolve(k.cgroup_id),
                    context: k.context.to_string(),
                    path: k.path.clone(),
                    order: k.order,
                    gfp: gfp::hex(k.gfp),
                    gfp_flags: self.gfp.decode(k.gfp),
                    atomic: self.gfp.is_atomic(k.gfp),
                    failures: s.failures,
                    warned: s.warned,
                    first_seen: events::rfc3339(window.clock.to_system(s.first_ns)),
                    last_seen: events::rfc3339(window.clock.to_system(s.last_ns)),
                    top_stack: top,
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn rows_group_by_key_and_keep_the_top_stack() {
        let mut a = agg(100);
        let fd = [
            0xffff_ffff_8110_0010,
            0xffff_ffff_8120_0010,
            0xffff_ffff_8120_0110,
            0xffff_ffff_8140_0010,
        ];
        let net = [
            0xffff_ffff_8130_0010,
            0xffff_ffff_8130_0110,
            0xffff_ffff_8140_0010,
        ];
        for _ in 0..3 {
            a.add(&event("dup", 10, 6, 0x400cc0, &fd, 0));
        }
        a.add(&event("dup", 10, 6, 0x400cc0, &net, 0));
        a.add(&event("nettool", 11, 1, 0x820, &net, EVENT_WARN_ALLOC));
        a.add(&event("nettool", 11, 1, 0x2820, &net, EVENT_WARN_ALLOC)); // NOWARN
        assert_eq!(a.events, 6);
        assert_eq!(a.total_failures(), 6);
        let rows = a.summary_rows(
            &Window::starting_now(),
            &mut CgroupResolver::with_root(None),
        );
        let dup: Vec<_> = rows.iter().filter(|r| r.comm == "dup").collect();
        assert_eq!(
            dup.len(),
            2,
            "different stacks classify differently: {dup:?}"
        );
        let fdrow = dup.iter().find(|r| r.failures == 3).unwrap();
        assert_eq!(fdrow.top_stack, "do_syscall_64;expand_files;alloc_fdtable");
        assert_eq!(fdrow.gfp_flags, "GFP_KERNEL_ACCOUNT");
        assert!(!fdrow.atomic);
        assert_eq!(fdrow.context, "task");
        let warned: u64 = rows
            .iter()
            .filter(|r| r.comm == "nettool")
            .map(|r| r.warned)
            .sum();
        assert_eq!(warned, 1, "the NOWARN failure is not warned");
    }

    #[test]
    fn key_cap_keeps_totals_exact() {
        let mut a = agg(3);
        let s = [0xffff_ffff_8120_0010];
        for pid in 0..50 {
            a.add(&event("p", pid, 1, 0x820, &s, 0));
        }
        let rows = a.rows();
        assert_eq!(rows.len(), 4, "3 keys + one other row");
        assert_eq!(a.total_failures(), 50);
        assert_eq!(a.capped, 47);
        assert_eq!(rows[0].0.comm, OTHER);
        assert_eq!(rows[0].1.failures, 47);
    }

    #[test]
    fn same_stack_is_symbolized_once() {
        let mut a = agg(10);
        let s = [0xffff_ffff_8120_0010, 0xffff_ffff_8140_0010];
        let (id1, new1) = a.add(&event("x", 1, 1, 0x820, &s, 0));
        let (id2, new2) = a.add(&event("y", 2, 1, 0x820, &s, 0));
        assert_eq!(id1, id2);
        assert!(new1 && !new2);
    }
}
