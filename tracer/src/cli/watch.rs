//! `pagefail watch`: a live failure table during an incident; a summary and
//! exports at the end.

use std::{
    cell::RefCell,
    io::{self, IsTerminal, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Args;
use tracer_common::{FailureEvent, ORDER_SLOTS};

use crate::{
    aggregate::{Aggregator, RowStats},
    cli::common::{ExportArgs, FilterArgs, GroupArgs, MemoryTracker, run_summary},
    drops, events,
    memory::{Snapshot, one_line},
    probe::{Counters, WarnAllocProbe},
    session::{Session, Signals, Step, parse_duration},
    verdict::Outcome,
};

/// Trace failed page allocations live.
///
/// Shows a refreshing table of failures (by process, context, network path,
/// order and gfp flags, most failures first) with rates, allocation totals per
/// order and lost events. On exit (duration, Ctrl-C or SIGTERM) prints a
/// summary and writes the exports.
///
/// Examples:
///   sudo pagefail watch                              # atomic failures, until Ctrl-C
///   sudo pagefail watch --all --duration 5 --csv out.csv
///   sudo pagefail watch --min-order 2 --pid 1234 -v
///   sudo pagefail watch --by comm,path --flamegraph failures.svg
///   sudo pagefail watch --stacks --no-tui | tee watch.log
///   sudo pagefail watch --all --duration 30s --summary-json run.json
///   sudo pagefail watch --oom-score-adj -900         # keep watching through OOM kills
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct WatchArgs {
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C or SIGTERM.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Refresh the live table every interval (e.g. 1s, 500ms).
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub group: GroupArgs,
    #[command(flatten)]
    pub output: ExportArgs,
    /// Print every new distinct failure stack once, symbolized.
    #[arg(long)]
    pub stacks: bool,
    /// Plain periodic lines instead of a refreshing table (the default when
    /// stdout is not a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Write one JSON object for the run to this file at exit (atomically):
    /// allocations and failures per order, failures by cause and outcome,
    /// lost, unseen, `warn_alloc`, drops.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Set this process's OOM score adjustment (-1000..=1000; lowering it
    /// needs `CAP_SYS_RESOURCE`), e.g. -900 to keep watching through an OOM storm.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = crate::selfprotect::parse_oom_score_adj)]
    pub oom_score_adj: Option<i32>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err("the interval must be at least 100ms".to_owned());
    }
    Ok(d)
}

/// Run `pagefail watch`.
///
/// # Errors
/// Set-up failures (privileges, kernel support), I/O errors writing output.
pub async fn run(args: WatchArgs, verbose: u8) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    let probe = args.filter.probe_config()?;
    // Before the session drops its capabilities.
    if let Some(adj) = args.oom_score_adj {
        match crate::selfprotect::set_oom_score_adj(adj) {
            Ok(before) => crate::note!("pagefail: oom_score_adj {adj} (was {before})"),
            Err(e) => crate::note!("pagefail: {e}; going on"),
        }
    }
    let mut session = Session::start(&probe, &args.group.aggregate_config()?, signals)?;
    let _ = io::stderr().write_all(session.setup_report(verbose).as_bytes());

    // With --json the rows go to stdout at the end, so live output goes to stderr.
    let to_stderr = args.output.json;
    let tui = !args.no_tui
        && !to_stderr
        && io::stdout().is_terminal()
        && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
    let mut live: Box<dyn Write> = if to_stderr {
        Box::new(io::stderr())
    } else {
        Box::new(io::stdout())
    };
    let started = Instant::now();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    let mut last = session.baseline.clone();
    let mut drops_last = session.drops_baseline.clone();
    let mut closed = false;
    let memory = RefCell::new(MemoryTracker::default());
    let mut on_record = |agg: &Aggregator, ev: &FailureEvent, sid: u32, new: bool| {
        memory.borrow_mut().on_failure(agg.gfp().is_atomic(ev.gfp));
        if args.stacks && new && !tui {
            let _ = write!(io::stderr(), "{}", new_stack_text(agg, ev, sid));
        }
    };

    let stop_reason = loop {
        match session.next(&mut tick, deadline, &mut on_record).await? {
            Step::Tick => {
                let now = session.tracer.counters()?;
                let mut text = live_view(
                    &session.agg,
                    &now.since(&last),
                    &now.since(&session.baseline),
                    started.elapsed(),
                    args.interval,
                    tui,
                    session.tracer.lean,
                );
                text.push_str(&memory_line(&session.agg, args.filter.min_order));
                text.push_str(&drops_live(&session, &mut drops_last)?);
                session.agg.start_interval();
                last = now;
                if live
                    .write_all(text.as_bytes())
                    .and_then(|()| live.flush())
                    .is_err()
                {
                    closed = true;
                    break "output closed";
                }
            }
            Step::Hangup => {}
            Step::Stop(why) => break why,
        }
    };

    let totals = session.finish(&mut on_record)?;
    if verbose > 0 {
        crate::note!("pagefail: stopped: {stop_reason}");
    }
    let rows = session.agg.summary_rows(&session.window);
    let drops_from = session.drops_baseline.clone();
    let (drops, _) = session.drop_report(&drops_from)?;
    if !closed && !args.output.json {
        let text = final_summary(
            &session.agg,
            &totals,
            session.tracer.lean,
            &rows,
            session.stream.malformed,
            &session.tracer.warn_alloc,
        );
        let text = text + &drops::render::summary_text(&drops);
        // A closed pipe (`pagefail watch | head`) is not an error.
        let _ = io::stdout().write_all(text.as_bytes());
    }
    args.output.write_exports(&session.agg, &rows)?;
    if let Some(path) = &args.summary_json {
        let summary = run_summary(
            &session.window,
            &totals,
            &rows,
            &session.tracer.warn_alloc,
            &drops,
            session.agg.fallbacks_seen(totals.follow_lost),
        );
        crate::export::write_atomically(path, |w| crate::export::write_summary_json(w, &summary))?;
    }
    args.output.write_memory(&memory.borrow())
}

/// The drop line under the live table: counters only (no stack lookups).
fn drops_live(session: &Session, last: &mut drops::Mark) -> anyhow::Result<String> {
    let now = drops::Mark::take_counts(&session.tracer)?;
    let (ksyms, classifier) = session.agg.attribution();
    let total = drops::report(
        &session.tracer,
        &session.drops_baseline,
        &now,
        ksyms,
        classifier,
    );
    let delta = drops::report(&session.tracer, last, &now, ksyms, classifier);
    *last = now;
    Ok(drops::render::live_text(&total, &delta))
}

/// The memory state under the live table, for the largest order that failed
/// (or the minimum order traced).
fn memory_line(agg: &Aggregator, min_order: u32) -> String {
    let order = agg
        .rows()
        .iter()
        .filter_map(|(k, _)| k.order)
        .max()
        .unwrap_or(min_order);
    match Snapshot::take() {
        Ok(snap) => format!("  {}\n", one_line(&snap, order)),
        Err(e) => format!("  memory: {e}\n"),
    }
}

fn new_stack_text(agg: &Aggregator, ev: &FailureEvent, sid: u32) -> String {
    let Some(info) = agg.stack(sid) else {
        return String::new();
    };
    let mut s = format!(
        "new stack: comm={} pid={} order={} gfp={} context={} path={}\n",
        events::comm(ev),
        ev.tgid,
        ev.order,
        agg.gfp().decode(ev.gfp),
        info.context,
        info.path,
    );
    for frame in info.folded.rsplit(';') {
        s.push_str("    ");
        s.push_str(frame);
        s.push('\n');
    }
    s
}

fn order_list(counts: &[u64]) -> String {
    let parts: Vec<String> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(o, c)| {
            if o == ORDER_SLOTS as usize - 1 {
                format!("o{o}+:{c}")
            } else {
                format!("o{o}:{c}")
            }
        })
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Rows shown in the live view at most.
const LIVE_ROWS: usize = 20;

fn live_view(
    agg: &Aggregator,
    delta: &Counters,
    total: &Counters,
    elapsed: Duration,
    interval: Duration,
    tui: bool,
    lean: bool,
) -> String {
    let mut s = String::new();
    if tui {
        // Clear the screen and home the cursor: a top-like refresh.
        s.push_str("\x1b[H\x1b[2J");
    }
    s.push_str(&format!(
        "pagefail {:>7.1}s  failures {} (+{})  lost {} ({} rebuilt)  all failed by order: {}\n",
        elapsed.as_secs_f64(),
        total.matched,
        delta.matched,
        total.lost,
        agg.rebuilt,
        order_list(&total.fails),
    ));
    s.push_str(&format!(
        "  allocations/interval by order: {}\n",
        order_list(&delta.allocs)
    ));
    if total.unseen.is_some_and(|n| n > 0) {
        s.push_str("  ");
        s.push_str(&unseen_line(total.unseen, lean));
    }
    let mut rows = agg.rows();
    s.push_str(&outcome_headline(&rows, interval));
    // Terminal failures first: those are the ones that cost something.
    rows.sort_by_key(|(k, _)| k.outcome);
    let active = rows.iter().filter(|(_, r)| r.interval_failures > 0).count();
    if !tui && active == 0 {
        return s;
    }
    s.push_str(&format!(
        "  {:<8} {:<7} {:<16} {:>7} {:<8} {:<18} {:>5} {:>9} {:>8} {:>6}  {}\n",
        "OUTCOME",
        "CAUSE",
        "COMM",
        "PID",
        "CONTEXT",
        "PATH",
        "ORDER",
        "FAILURES",
        "RATE/s",
        "WARNED",
        "GFP_FLAGS"
    ));
    let secs = interval.as_secs_f64().max(0.001);
    // Plain lines show the rows active in this interval; the refreshing
    // table shows the top rows overall.
    for (k, r) in rows
        .iter()
        .filter(|(_, r)| tui || r.interval_failures > 0)
        .take(LIVE_ROWS)
    {
        s.push_str(&format!(
            "  {:<8} {:<7} {:<16} {:>7} {:<8} {:<18} {:>5} {:>9} {:>8.1} {:>6}  {}\n",
            k.outcome.as_str(),
            k.cause.as_str(),
            k.comm.as_deref().unwrap_or("*"),
            k.tgid.map_or_else(|| "*".to_owned(), |p| p.to_string()),
            k.context.map_or("*", |c| c.as_str()),
            k.path.as_deref().unwrap_or("*"),
            k.order.map_or_else(|| "*".to_owned(), |o| o.to_string()),
            r.failures,
            r.interval_failures as f64 / secs,
            r.warned,
            k.gfp
                .map_or_else(|| "*".to_owned(), |g| agg.gfp().decode(g)),
        ));
    }
    if rows.len() > LIVE_ROWS {
        s.push_str(&format!("  ... {} more rows\n", rows.len() - LIVE_ROWS));
    }
    s
}

/// What became of the lost failures: counted by row in the kernel and
/// rebuilt into the rows, or not kept; and which rows were rebuilt.
fn lost_lines(agg: &Aggregator, totals: &Counters) -> String {
    if totals.lost == 0 {
        return String::new();
    }
    let mut s = format!(
        "  of the lost: {} counted by row in the kernel and rebuilt into the rows ({} so far), {} not kept (the kernel's table was full or busy)\n",
        totals.lost_kept, agg.rebuilt, totals.lost_unkept
    );
    let rows = agg.rebuilt_rows();
    if !rows.is_empty() {
        s.push_str(
            "rows rebuilt from the kernel's table (exact counts; first/last seen only as the \
             table kept them):\n",
        );
    }
    for (k, rebuilt, failures) in rows.iter().take(LIVE_ROWS) {
        s.push_str(&format!(
            "  {:<16} {:>7} order {:>2} gfp {:<10} rebuilt {rebuilt} of {failures}\n",
            k.comm.as_deref().unwrap_or("*"),
            k.tgid.map_or_else(|| "*".to_owned(), |p| p.to_string()),
            k.order.map_or_else(|| "*".to_owned(), |o| o.to_string()),
            k.gfp.map_or_else(|| "*".to_owned(), crate::gfp::hex),
        ));
    }
    if rows.len() > LIVE_ROWS {
        s.push_str(&format!(
            "  ... {} more rebuilt rows\n",
            rows.len() - LIVE_ROWS
        ));
    }
    s
}

/// Failures recorded by outcome: terminal ones (with their rate over the
/// last interval) apart from fallbacks.
fn outcome_headline(rows: &[(&crate::aggregate::RowKey, RowStats)], interval: Duration) -> String {
    let mut total = [0u64; 3];
    let mut recent = [0u64; 3];
    for (k, r) in rows {
        let slot = k.outcome as usize;
        total[slot] += r.failures;
        recent[slot] += r.interval_failures;
    }
    let secs = interval.as_secs_f64().max(0.001);
    let (t, f, u) = (
        Outcome::Terminal as usize,
        Outcome::Fallback as usize,
        Outcome::Unknown as usize,
    );
    format!(
        "  terminal failures {} ({:.1}/s)   fallbacks {} ({:.1}/s)   unknown outcome {}\n",
        total[t],
        recent[t] as f64 / secs,
        total[f],
        recent[f] as f64 / secs,
        total[u],
    )
}

/// The summary's line on allocation events the kernel kept from pagefail.
fn unseen_line(unseen: Option<u64>, lean: bool) -> String {
    match (unseen, lean) {
        (None, _) => "allocation events unseen (nested): not counted by the kernel for this \
             attach style\n"
            .to_owned(),
        (Some(0), _) => "allocation events unseen (nested): 0\n".to_owned(),
        (Some(n), true) => format!(
            "allocation events unseen (nested, skipped by the kernel with --lean): {n}; \
             failures among them are unknown (run without --lean to catch them)\n"
        ),
        (Some(n), false) => format!(
            "allocation events unseen (nested): at most {n} (events the kernel kept from the \
             main program that its helper could not catch, or a bound of them)\n"
        ),
    }
}

fn final_summary(
    agg: &Aggregator,
    totals: &Counters,
    lean: bool,
    rows: &[crate::export::SummaryRow],
    malformed: u64,
    warn: &WarnAllocProbe,
) -> String {
    let allocs: u64 = totals.allocs.iter().sum();
    let fails: u64 = totals.fails.iter().sum();
    let mut s = String::from("\n=== pagefail summary ===\n");
    s.push_str(&format!(
        "allocations: {allocs} succeeded, {fails} failed (all orders, before filters)\n"
    ));
    s.push_str(&format!(
        "  succeeded by order: {}\n",
        order_list(&totals.allocs)
    ));
    s.push_str(&format!(
        "  failed by order:    {}\n",
        order_list(&totals.fails)
    ));
    s.push_str(&format!(
        "failures matching the filters: {} = {} recorded + {} lost (ring buffer full)\n",
        totals.matched, agg.events, totals.lost
    ));
    s.push_str(&lost_lines(agg, totals));
    s.push_str(&unseen_line(totals.unseen, lean));
    if malformed > 0 {
        s.push_str(&format!("malformed records: {malformed}\n"));
    }
    match warn {
        WarnAllocProbe::Attached => {
            s.push_str(&format!("warn_alloc entries: {}\n", totals.warn_alloc));
        }
        WarnAllocProbe::Unavailable(_) => s.push_str("warn_alloc entries: n/a (no kprobes)\n"),
        WarnAllocProbe::Disabled => {}
    }
    if agg.capped > 0 {
        s.push_str(&format!(
            "rows capped: {} records in [other] rows\n",
            agg.capped
        ));
    }
    if rows.is_empty() {
        s.push_str("no failures recorded\n");
        return s;
    }
    s.push_str(&verdict_lines(rows));
    if let Some(seen) = agg.fallbacks_seen(totals.follow_lost) {
        s.push_str(&seen.to_string());
    }
    s.push_str(&crate::cli::common::rows_table(rows));
    s
}

/// The recorded failures by outcome and by cause, one line each.
fn verdict_lines(rows: &[crate::export::SummaryRow]) -> String {
    let mut by_outcome: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let mut by_cause: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for r in rows {
        *by_outcome.entry(r.outcome.as_str()).or_default() += r.failures;
        *by_cause.entry(r.cause.as_str()).or_default() += r.failures;
    }
    let list = |m: &std::collections::BTreeMap<&str, u64>, order: &[&str]| {
        order
            .iter()
            .map(|k| format!("{k} {}", m.get(k).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "recorded failures by outcome: {}\nrecorded failures by cause: {}\n",
        list(&by_outcome, &["terminal", "fallback", "unknown"]),
        list(&by_cause, &["zone", "memcg", "nolock", "unknown"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_validated() {
        assert!(parse_interval("10ms").is_err());
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn order_lists_show_nonzero_slots() {
        let mut v = vec![0u64; ORDER_SLOTS as usize];
        assert_eq!(order_list(&v), "-");
        v[0] = 5;
        v[3] = 1;
        v[15] = 2;
        assert_eq!(order_list(&v), "o0:5 o3:1 o15+:2");
    }

    #[test]
    fn unseen_line_says_what_is_known() {
        assert!(unseen_line(None, false).contains("not counted by the kernel"));
        assert!(unseen_line(Some(0), true).ends_with("(nested): 0\n"));
        let lean = unseen_line(Some(7), true);
        assert!(lean.contains(": 7;") && lean.contains("unknown"), "{lean}");
        let full = unseen_line(Some(7), false);
        assert!(full.contains("at most 7"), "{full}");
    }
}
