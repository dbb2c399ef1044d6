//! Aggregation of parsed reports into the CSV rows and the human summary.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::{self, Write as _},
};

use serde::Serialize;

use super::{Report, Stats, analyze::Analysis, meminfo::MemInfo};
use crate::{
    export::SummaryRow,
    memory::advice::{self, Advice, Cause, Source},
    timestamp::rfc3339_us as rfc3339,
    verdict::Outcome,
};

/// Reports described one by one in the human summary.
const MAX_DETAILS: usize = 20;
/// Distinct rows kept; failures beyond go to one overflow row.
const MAX_ROWS: usize = 100_000;
/// Distinct stacks counted per row (for its top stack).
const MAX_STACKS: usize = 8;
/// Distinct kernels / hosts listed.
const MAX_NAMES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    comm: String,
    pid: String,
    context: String,
    path: String,
    order: u32,
    gfp: u64,
    /// Rows never mix outcomes, as in `watch`.
    outcome: Outcome,
}

#[derive(Debug, Clone)]
struct Acc {
    kernel: String,
    host: String,
    gfp_names: String,
    atomic: bool,
    failures: u64,
    partial: u64,
    first_us: Option<i64>,
    last_us: Option<i64>,
    stacks: Vec<(String, u64)>,
}

/// One report as the summary describes it.
#[derive(Debug, Clone)]
struct Detail {
    when: String,
    who: String,
    order: u32,
    gfp: String,
    atomic: bool,
    context: String,
    path: String,
    partial: bool,
    mem: Option<MemInfo>,
    stack: String,
}

/// Everything `pagefail logs` prints.
#[derive(Debug, Default)]
pub struct Summary {
    rows: HashMap<Key, Acc>,
    order: Vec<Key>,
    overflow: u64,
    details: Vec<Detail>,
    stats: Stats,
    reports: u64,
    /// `SLUB: Unable to allocate memory` failures (rows `[slab:CACHE]`).
    slab: u64,
    atomic: u64,
    partial: u64,
    filtered: u64,
    window_us: Option<(i64, i64)>,
    window_mono: Option<(f64, f64)>,
    kernels: BTreeSet<String>,
    hosts: BTreeSet<String>,
}

impl Summary {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Count a report the user's filters left out.
    pub fn add_filtered(&mut self) {
        self.filtered += 1;
    }

    /// Add the counters of one input.
    pub fn add_stats(&mut self, s: &Stats) {
        self.stats.add(s);
    }

    /// Add one report.
    pub fn add_report(&mut self, r: &Report, a: &Analysis) {
        self.reports += 1;
        self.atomic += u64::from(a.atomic);
        self.partial += u64::from(r.partial);
        if let Some(t) = r.wall_us {
            self.window_us = Some(match self.window_us {
                Some((lo, hi)) => (lo.min(t), hi.max(t)),
                None => (t, t),
            });
        }
        if let Some(t) = r.mono {
            self.window_mono = Some(match self.window_mono {
                Some((lo, hi)) => (lo.min(t), hi.max(t)),
                None => (t, t),
            });
        }
        if !a.kernel.is_empty() && self.kernels.len() < MAX_NAMES {
            self.kernels.insert(a.kernel.clone());
        }
        if let Some(h) = &r.host
            && self.hosts.len() < MAX_NAMES
        {
            self.hosts.insert(h.clone());
        }
        self.add_row(r, a);
        if self.details.len() < MAX_DETAILS {
            self.details.push(Detail {
                when: when(r),
                who: who(r),
                order: r.order,
                gfp: format!("{:#x} {}", r.gfp, a.gfp_names),
                atomic: a.atomic,
                context: a.context.as_str().to_owned(),
                path: a.path.clone(),
                partial: r.partial,
                mem: r.mem.clone(),
                stack: a.stack.clone(),
            });
        }
    }

    /// Add one `SLUB: Unable to allocate memory` failure, given as
    /// [`super::slab::SlabFailure::as_report`] and its analysis: a row of
    /// its own (`[slab:CACHE]`), counted apart from the page reports.
    pub fn add_slab(&mut self, r: &Report, a: &Analysis) {
        self.slab += 1;
        self.add_row(r, a);
    }

    fn add_row(&mut self, r: &Report, a: &Analysis) {
        let key = Key {
            comm: r.comm.clone(),
            pid: r.pid.map(|p| p.to_string()).unwrap_or_default(),
            context: a.context.as_str().to_owned(),
            path: a.path.clone(),
            order: r.order,
            gfp: r.gfp,
            outcome: a.outcome,
        };
        if !self.rows.contains_key(&key) {
            if self.rows.len() >= MAX_ROWS {
                self.overflow += 1;
                return;
            }
            self.order.push(key.clone());
            self.rows.insert(
                key.clone(),
                Acc {
                    kernel: a.kernel.clone(),
                    host: r.host.clone().unwrap_or_default(),
                    gfp_names: a.gfp_names.clone(),
                    atomic: a.atomic,
                    failures: 0,
                    partial: 0,
                    first_us: None,
                    last_us: None,
                    stacks: Vec::new(),
                },
            );
        }
        if let Some(acc) = self.rows.get_mut(&key) {
            acc.failures += 1;
            acc.partial += u64::from(r.partial);
            if let Some(t) = r.wall_us {
                acc.first_us = Some(acc.first_us.map_or(t, |f| f.min(t)));
                acc.last_us = Some(acc.last_us.map_or(t, |l| l.max(t)));
            }
            if let Some(s) = acc.stacks.iter_mut().find(|(s, _)| *s == a.stack) {
                s.1 += 1;
            } else if acc.stacks.len() < MAX_STACKS {
                acc.stacks.push((a.stack.clone(), 1));
            }
        }
    }

    /// Reports added (after filters).
    #[must_use]
    pub fn reports(&self) -> u64 {
        self.reports
    }

    /// Failures the kernel's rate limit hid (`callbacks suppressed`).
    #[must_use]
    pub fn suppressed(&self) -> u64 {
        self.stats.suppressed
    }

    /// The CSV rows: atomic first, then by failures, then first seen.
    #[must_use]
    pub fn rows(&self) -> Vec<SummaryRow> {
        let (ws, we) = self
            .window_us
            .map(|(a, b)| (rfc3339(a), rfc3339(b)))
            .unwrap_or_default();
        let mut rows: Vec<SummaryRow> = self
            .order
            .iter()
            .filter_map(|k| self.rows.get(k).map(|a| (k, a)))
            .map(|(k, a)| SummaryRow {
                window_start: ws.clone(),
                window_end: we.clone(),
                host: a.host.clone(),
                kernel: a.kernel.clone(),
                comm: k.comm.clone(),
                pid: k.pid.clone(),
                cgroup: String::new(),
                context: k.context.clone(),
                path: k.path.clone(),
                order: Some(k.order),
                gfp: format!("{:#x}", k.gfp),
                gfp_flags: a.gfp_names.clone(),
                atomic: Some(a.atomic),
                failures: a.failures,
                // A printed report went through warn_alloc without NOWARN.
                warned: a.failures,
                first_seen: a.first_us.map(rfc3339).unwrap_or_default(),
                last_seen: a.last_us.map(rfc3339).unwrap_or_default(),
                top_stack: a
                    .stacks
                    .iter()
                    .max_by_key(|(_, n)| *n)
                    .map(|(s, _)| s.clone())
                    .unwrap_or_default(),
                // The kernel prints "page allocation failure" from the slow
                // path's warn_alloc: the zone search failed (a refused memcg
                // charge never gets there).
                cause: "zone".to_owned(),
                // From the rules over the report's reliable frames.
                outcome: k.outcome.as_str().to_owned(),
            })
            .collect();
        rows.sort_by(|a, b| b.atomic.cmp(&a.atomic).then(b.failures.cmp(&a.failures)));
        rows
    }

    /// The human summary.
    #[must_use]
    pub fn render(&self) -> String {
        self.to_string()
    }

    /// The header: counts of reports and of what the parser set aside, the
    /// time window, the kernels and hosts.
    fn fmt_header(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "pagefail logs: {} page allocation failure report{} ({} atomic, {} partial) in {} lines",
            self.reports,
            if self.reports == 1 { "" } else { "s" },
            self.atomic,
            self.partial,
            s.lines
        )?;
        writeln!(
            f,
            "  suppressed: {} more failures rate-limited by the kernel (\"callbacks suppressed\"): the log does not show them",
            s.suppressed
        )?;
        if self.slab > 0 {
            writeln!(
                f,
                "  slab: {} \"SLUB: Unable to allocate memory\" failure{} (rows [slab:CACHE]): a slab cache could not get pages",
                self.slab,
                if self.slab == 1 { "" } else { "s" }
            )?;
        }
        if s.unassigned > 0 {
            writeln!(
                f,
                "  unassigned: {} line(s) inside reports that belong to none of them (another CPU's output)",
                s.unassigned
            )?;
        }
        if s.skipped > 0 {
            writeln!(
                f,
                "  skipped: {} report line(s) in an unknown format",
                s.skipped
            )?;
        }
        if self.filtered > 0 {
            writeln!(
                f,
                "  filtered out: {} report(s) (--min-order/--atomic-only)",
                self.filtered
            )?;
        }
        if s.long_lines > 0 {
            writeln!(f, "  cut: {} line(s) longer than 64 KiB", s.long_lines)?;
        }
        match (self.window_us, self.window_mono) {
            (Some((a, b)), _) => writeln!(f, "  window: {} .. {}", rfc3339(a), rfc3339(b))?,
            (None, Some((a, b))) => writeln!(
                f,
                "  window: {a:.6} s .. {b:.6} s after boot (no wall-clock stamps)"
            )?,
            (None, None) => {}
        }
        if !self.kernels.is_empty() {
            let k: Vec<&str> = self.kernels.iter().map(String::as_str).collect();
            writeln!(f, "  kernels: {}", k.join(", "))?;
        }
        if !self.hosts.is_empty() {
            let h: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
            writeln!(f, "  hosts: {}", h.join(", "))?;
        }
        Ok(())
    }

    /// The failures table: the first 50 rows, atomic first.
    fn fmt_rows(&self, f: &mut fmt::Formatter<'_>, rows: &[SummaryRow]) -> fmt::Result {
        writeln!(f, "\nFailures (atomic first):")?;
        writeln!(
            f,
            "  {:>8}  {:<6}  {:>5}  {:<44}  {:<16}  {:<8}  path",
            "failures", "atomic", "order", "gfp", "comm", "context"
        )?;
        for r in rows.iter().take(50) {
            let gfp = format!("{} {}", r.gfp, r.gfp_flags);
            writeln!(
                f,
                "  {:>8}  {:<6}  {:>5}  {:<44}  {:<16}  {:<8}  {}",
                r.failures,
                r.atomic.map_or("*", |a| if a { "yes" } else { "no" }),
                r.order.map_or_else(|| "*".to_owned(), |o| o.to_string()),
                gfp,
                r.comm,
                r.context,
                r.path
            )?;
        }
        if rows.len() > 50 {
            writeln!(
                f,
                "  ... {} more rows (--csv FILE for all)",
                rows.len() - 50
            )?;
        }
        if self.overflow > 0 {
            writeln!(
                f,
                "  ... {} failures beyond {MAX_ROWS} rows not itemized",
                self.overflow
            )?;
        }
        Ok(())
    }

    /// One detailed report: who failed, the memory at the failure, the stack.
    fn fmt_detail(f: &mut fmt::Formatter<'_>, d: &Detail) -> fmt::Result {
        writeln!(
            f,
            "  {} {}: order-{} {}{} {} path {}{}",
            d.when,
            d.who,
            d.order,
            d.gfp,
            if d.atomic { " (atomic)" } else { "" },
            d.context,
            d.path,
            if d.partial { " [partial report]" } else { "" }
        )?;
        match &d.mem {
            Some(m) => {
                writeln!(f, "      {}", diagnosis(d.order, m))?;
                for z in &m.zones {
                    if let (Some(free), Some(min), Some(low), Some(high)) =
                        (z.free_kb, z.min_kb, z.low_kb, z.high_kb)
                    {
                        writeln!(
                            f,
                            "      node {} {}: free {free}kB, watermarks min {min}kB low {low}kB high {high}kB{}",
                            z.node,
                            z.name,
                            if free < min { " (below min)" } else { "" }
                        )?;
                    }
                }
            }
            None => writeln!(f, "      (no Mem-Info printed)")?,
        }
        if !d.stack.is_empty() {
            let frames: Vec<&str> = d.stack.rsplit(';').take(8).collect();
            writeln!(f, "      stack: {}", frames.join(" <- "))?;
        }
        Ok(())
    }

    /// The reports described one by one, and how many were left out.
    fn fmt_details(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nReports (memory at the failure):")?;
        for d in &self.details {
            Self::fmt_detail(f, d)?;
        }
        if self.reports > self.details.len() as u64 {
            writeln!(
                f,
                "  ... {} more reports (--json-reports for every one)",
                self.reports - self.details.len() as u64
            )?;
        }
        Ok(())
    }
}

/// One "by X" line: failures summed per key, the 10 largest.
fn fmt_breakdown(
    f: &mut fmt::Formatter<'_>,
    rows: &[SummaryRow],
    title: &str,
    key: impl Fn(&SummaryRow) -> String,
) -> fmt::Result {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for r in rows {
        let k = key(r);
        match counts.iter_mut().find(|(n, _)| *n == k) {
            Some(c) => c.1 += r.failures,
            None => counts.push((k, r.failures)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let list: Vec<String> = counts
        .iter()
        .take(10)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    writeln!(f, "  by {title}: {}", list.join(", "))
}

/// The human summary: header, then (when there is any failure) the failures
/// table, the breakdowns by comm / order / gfp / path, and the reports.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_header(f)?;
        if self.reports == 0 && self.slab == 0 {
            return Ok(());
        }
        let rows = self.rows();
        self.fmt_rows(f, &rows)?;
        fmt_breakdown(f, &rows, "comm", |r| r.comm.clone())?;
        fmt_breakdown(f, &rows, "order", |r| {
            r.order
                .map_or_else(|| "order-*".to_owned(), |o| format!("order-{o}"))
        })?;
        fmt_breakdown(f, &rows, "gfp", |r| r.gfp_flags.clone())?;
        fmt_breakdown(f, &rows, "path", |r| r.path.clone())?;
        self.fmt_details(f)
    }
}

/// "order-4 request; largest free block order 3 in Normal, order 2 in DMA32,
/// order 10 in DMA" and a verdict. DMA (the first 16 MiB) is listed but not
/// counted for the verdict: `lowmem_reserve` keeps it from ordinary requests.
#[must_use]
pub fn diagnosis(order: u32, m: &MemInfo) -> String {
    let mut parts = Vec::new();
    let mut big_outside_dma: Vec<&str> = Vec::new();
    let mut any_buddy = false;
    for z in &m.zones {
        if z.free_blocks.is_empty() {
            continue;
        }
        any_buddy = true;
        match z.largest_free_order() {
            Some(lo) => {
                if lo >= order && z.name != "DMA" {
                    big_outside_dma.push(&z.name);
                }
                parts.push(format!("order {lo} in {}", z.name));
            }
            None => parts.push(format!("none in {}", z.name)),
        }
    }
    let mut out = format!("order-{order} request; ");
    if any_buddy {
        let _ = write!(out, "largest free block {}", parts.join(", "));
        if big_outside_dma.is_empty() {
            let _ = write!(
                out,
                ": no free block of order >= {order} outside DMA (fragmented)"
            );
        } else {
            let _ = write!(
                out,
                ": {} had a block of order >= {order} (zone not allowed for the request, or below its watermark)",
                big_outside_dma.join(", ")
            );
        }
    } else {
        out.push_str("no buddy lists printed");
    }
    if let Some(p) = m.free_pages {
        let _ = write!(out, "; free {p} pages");
    }
    out
}

fn when(r: &Report) -> String {
    match (r.wall_us, r.mono) {
        (Some(t), _) => rfc3339(t),
        (None, Some(m)) => format!("[{m:.6}]"),
        (None, None) => format!("line {}", r.line),
    }
}

fn who(r: &Report) -> String {
    let mut s = r.comm.clone();
    if let Some(p) = r.pid {
        let _ = write!(s, "[{p}]");
    }
    if let Some(c) = r.cpu {
        let _ = write!(s, " cpu{c}");
    }
    s
}

/// Groups of failures judged for advice; more are counted, not judged.
const MAX_ADVICE_GROUPS: usize = 256;

/// Failures of one host, kernel and order, for advice.
#[derive(Debug, Clone)]
struct AdviceGroup {
    host: String,
    kernel: String,
    order: u32,
    reports: u64,
    with_mem: u64,
    /// Each report judged against its own Mem-Info.
    causes: BTreeMap<Cause, u64>,
    /// The last report that printed Mem-Info, and which report it was.
    last: Option<(MemInfo, String)>,
}

/// Advice from the memory each report recorded: failures grouped by host,
/// kernel and order, each group judged (with the same rules and numbers as
/// `pagefail check`) against the Mem-Info of its last report that printed
/// one; every report is also judged against its own, and the tally shown.
#[derive(Debug, Default)]
pub struct LogAdvice {
    groups: Vec<AdviceGroup>,
    overflow: u64,
}

/// The advice for one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupAdvice {
    pub host: String,
    pub kernel: String,
    pub order: u32,
    pub reports: u64,
    /// Reports of the group that printed a usable Mem-Info.
    pub with_mem: u64,
    /// Causes when each report is judged against its own Mem-Info.
    pub one_by_one: BTreeMap<Cause, u64>,
    /// `None` when no report of the group printed a usable Mem-Info.
    pub advice: Option<Advice>,
    /// Why there is no advice.
    pub unknown: Option<String>,
    /// Failures of the group by the outcome of their call site (`terminal`,
    /// `fallback`, `unknown`): the memory verdict says what the zone looked
    /// like, the outcome whether the failure cost anything.
    pub outcomes: BTreeMap<String, u64>,
}

/// A summary row for one report (one failure), for judging it alone.
fn row_of(r: &Report, a: &Analysis) -> SummaryRow {
    let t = r.wall_us.map(rfc3339).unwrap_or_default();
    SummaryRow {
        window_start: t.clone(),
        window_end: t.clone(),
        host: r.host.clone().unwrap_or_default(),
        kernel: a.kernel.clone(),
        comm: r.comm.clone(),
        pid: r.pid.map(|p| p.to_string()).unwrap_or_default(),
        cgroup: String::new(),
        context: a.context.as_str().to_owned(),
        path: a.path.clone(),
        order: Some(r.order),
        gfp: format!("{:#x}", r.gfp),
        gfp_flags: a.gfp_names.clone(),
        atomic: Some(a.atomic),
        failures: 1,
        warned: 1,
        first_seen: t.clone(),
        last_seen: t,
        top_stack: a.stack.clone(),
        // Judged on its memory alone, as before the two columns.
        cause: String::new(),
        outcome: String::new(),
    }
}

/// Which report: `2026-11-22T03:00:05Z, line 4 of kern.log`.
#[must_use]
pub fn report_label(r: &Report, input: &str) -> String {
    let place = format!("line {} of {input}", r.line);
    match (r.wall_us, r.mono) {
        (Some(t), _) => format!("{}, {place}", rfc3339(t)),
        (None, Some(m)) => format!("[{m:.6}], {place}"),
        (None, None) => place,
    }
}

impl LogAdvice {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one report read from `input` (a file name, or `-`).
    pub fn add(&mut self, r: &Report, a: &Analysis, input: &str) {
        let host = r.host.clone().unwrap_or_default();
        let i = match self
            .groups
            .iter()
            .position(|g| g.order == r.order && g.host == host && g.kernel == a.kernel)
        {
            Some(i) => i,
            None if self.groups.len() >= MAX_ADVICE_GROUPS => {
                self.overflow += 1;
                return;
            }
            None => {
                self.groups.push(AdviceGroup {
                    host: host.clone(),
                    kernel: a.kernel.clone(),
                    order: r.order,
                    reports: 0,
                    with_mem: 0,
                    causes: BTreeMap::new(),
                    last: None,
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[i];
        g.reports += 1;
        let Some(mem) = &r.mem else { return };
        let label = report_label(r, input);
        let kernel = (!a.kernel.is_empty()).then_some(a.kernel.as_str());
        let Some((snap, rec)) = mem.memory_state(kernel, r.host.as_deref(), &label) else {
            return;
        };
        g.with_mem += 1;
        let cause = advice::cause_of(&row_of(r, a), r.order, &snap, &Source::Report(rec));
        *g.causes.entry(cause).or_default() += 1;
        g.last = Some((mem.clone(), label));
    }

    /// Whether any report was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Groups beyond the bound, not judged.
    #[must_use]
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Judge each group; `rows` are the summary's rows (failure counts and
    /// times per row, for the demand).
    #[must_use]
    pub fn advise(&self, rows: &[SummaryRow]) -> Vec<GroupAdvice> {
        self.groups
            .iter()
            .map(|g| {
                let of_group = |r: &&SummaryRow| {
                    r.order == Some(g.order) && r.host == g.host && r.kernel == g.kernel
                };
                let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
                for r in rows.iter().filter(of_group) {
                    let o = if r.outcome.is_empty() {
                        "unknown"
                    } else {
                        r.outcome.as_str()
                    };
                    *outcomes.entry(o.to_owned()).or_default() += r.failures;
                }
                let mine: Vec<SummaryRow> = rows
                    .iter()
                    .filter(of_group)
                    // Judged on the report's memory alone, as before the
                    // cause and outcome columns (live and CSV advice use them).
                    .map(|r| SummaryRow {
                        cause: String::new(),
                        outcome: String::new(),
                        ..r.clone()
                    })
                    .collect();
                let kernel = (!g.kernel.is_empty()).then_some(g.kernel.as_str());
                let host = (!g.host.is_empty()).then_some(g.host.as_str());
                let state = g
                    .last
                    .as_ref()
                    .and_then(|(m, at)| m.memory_state(kernel, host, at));
                let (advice, unknown) = match state {
                    Some((snap, rec)) => (
                        Some(advice::advise_from(&mine, &snap, Source::Report(rec), None)),
                        None,
                    ),
                    None => (
                        None,
                        Some(format!(
                            "cannot judge the memory: none of the {} report(s) printed a Mem-Info \
                             with zone watermarks (rate-limited, cut off, or filtered out of the \
                             log)",
                            g.reports
                        )),
                    ),
                };
                GroupAdvice {
                    host: g.host.clone(),
                    kernel: g.kernel.clone(),
                    order: g.order,
                    reports: g.reports,
                    with_mem: g.with_mem,
                    one_by_one: g.causes.clone(),
                    advice,
                    unknown,
                    outcomes,
                }
            })
            .collect()
    }
}

/// Whether the group's failures need a change, by their call sites'
/// outcomes: "no change needed" when every failure with a known outcome had
/// a fallback; `None` when no outcome is known.
#[must_use]
pub fn outcome_line(outcomes: &BTreeMap<String, u64>) -> Option<String> {
    let n = |k: &str| outcomes.get(k).copied().unwrap_or(0);
    let (terminal, fallback, unknown) = (n("terminal"), n("fallback"), n("unknown"));
    let rest = if unknown > 0 {
        format!("; {unknown} of unknown outcome")
    } else {
        String::new()
    };
    match (terminal, fallback) {
        (0, 0) => None,
        (0, f) => Some(format!(
            "outcome: all {f} with a known outcome had a fallback (the caller retried smaller, \
             elsewhere or later): no change needed for these, whatever the memory verdict{rest}"
        )),
        (t, f) => Some(format!(
            "outcome: {t} terminal (the caller got nothing: an error or a drop), {f} with a \
             fallback: the terminal ones are what a change is for{rest}"
        )),
    }
}

/// The advice as text: with `full`, every finding, sysctl value and
/// caution; otherwise one verdict line per group.
#[must_use]
pub fn render_advice(groups: &[GroupAdvice], overflow: u64, suppressed: u64, full: bool) -> String {
    let mut o = String::new();
    if groups.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\nAdvice from the memory each report recorded{}:",
        if full {
            ""
        } else {
            " (--advice for the sysctl values, their cost and the cautions)"
        }
    );
    for g in groups {
        let mut title = format!("order {}", g.order);
        if !g.host.is_empty() {
            let _ = write!(title, " on {}", g.host);
        }
        if !g.kernel.is_empty() {
            let _ = write!(title, " (kernel {})", g.kernel);
        }
        let tally: Vec<String> = g
            .one_by_one
            .iter()
            .map(|(c, n)| format!("{n} {}", c.as_str()))
            .collect();
        let _ = writeln!(
            o,
            "\n  {title}: {} report(s), {} with Mem-Info{}",
            g.reports,
            g.with_mem,
            if tally.is_empty() {
                String::new()
            } else {
                format!("; each judged against its own: {}", tally.join(", "))
            }
        );
        match (&g.advice, &g.unknown) {
            (Some(a), _) if full => {
                for line in a.to_text().lines() {
                    if line.is_empty() {
                        o.push('\n');
                    } else {
                        let _ = writeln!(o, "    {line}");
                    }
                }
            }
            (Some(a), _) => {
                let _ = writeln!(o, "    verdict: {}", a.verdict);
                for r in &a.recommendations {
                    let _ = writeln!(
                        o,
                        "    {} in {}: see --advice for vm.watermark_scale_factor / vm.min_free_kbytes",
                        r.cause.as_str(),
                        r.zone
                    );
                }
            }
            (None, Some(why)) => {
                let _ = writeln!(o, "    {why}");
            }
            (None, None) => {}
        }
        if let Some(line) = outcome_line(&g.outcomes) {
            let _ = writeln!(o, "    {line}");
        }
    }
    if suppressed > 0 {
        let _ = writeln!(
            o,
            "\n  the kernel hid {suppressed} more failure(s) (\"callbacks suppressed\"): the \
             failures per second above count printed reports only, so each demand is a lower bound"
        );
    }
    if overflow > 0 {
        let _ = writeln!(
            o,
            "\n  ... {overflow} report(s) beyond {MAX_ADVICE_GROUPS} groups not judged"
        );
    }
    o
}

#[cfg(test)]
#[path = "advice_tests.rs"]
mod advice_tests;
