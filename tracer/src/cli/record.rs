//! `pagefail record`: continuous tracing as a service, one CSV summary per
//! interval with rotation, and Prometheus metrics.

use std::{
    cell::RefCell,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    aggregate::{OTHER, Window},
    cli::common::{FilterArgs, GroupArgs, MemoryTracker, run_summary},
    drops::{self, DropReport},
    export,
    metrics::{FailureLabels, Metrics},
    probe::Counters,
    recorder::{Recorder, Retain},
    selfprotect::{RECORD_OOM_SCORE_ADJ, parse_oom_score_adj, set_oom_score_adj, shortage_of},
    session::{Session, Signals, Step, parse_duration},
};

/// Record failures continuously: one CSV summary per interval.
///
/// Writes `pagefail-<UTC start>.csv` (the CSV summary contract; header only
/// when nothing failed) and `pagefail-<UTC start>.totals.csv` (allocations
/// and failures per order, lost records) every interval, atomically, and
/// prunes old intervals. SIGTERM or SIGINT writes the partial interval and
/// exits 0; SIGHUP re-reads the rule file and retries writing. While the
/// directory cannot be written it keeps counting and writes when it can.
///
/// Examples:
///   sudo pagefail record --output /var/lib/pagefail
///   sudo pagefail record --output /var/lib/pagefail --interval 5m --retain 2016
///   sudo pagefail record --output /srv/pf --max-bytes 500M --metrics 127.0.0.1:9435
///   sudo pagefail record --output /var/lib/pagefail --lean   # cheapest, counts what it skips
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RecordArgs {
    /// Directory for the interval files (must exist).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    /// Length of one interval (e.g. 60s, 5m).
    #[arg(long, short = 'i', default_value = "60s", value_parser = parse_record_interval)]
    pub interval: Duration,
    /// Keep only the newest N intervals.
    #[arg(long, value_name = "N", conflicts_with = "max_bytes", value_parser = clap::value_parser!(u64).range(1..))]
    pub retain: Option<u64>,
    /// Keep only the newest intervals that fit in this many bytes (e.g. 500M, 2G).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_bytes: Option<u64>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9435).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Stop after this long (default: run until SIGTERM/SIGINT).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// This process's OOM score adjustment (-1000..=1000): the OOM killer
    /// then picks pagefail only when it is itself the memory problem;
    /// -1000 makes it unkillable (lowering it needs `CAP_SYS_RESOURCE`).
    #[arg(long, value_name = "N", default_value_t = RECORD_OOM_SCORE_ADJ, allow_negative_numbers = true, value_parser = parse_oom_score_adj)]
    pub oom_score_adj: i32,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub group: GroupArgs,
}

fn parse_record_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("the interval must be at least 1s".to_owned());
    }
    Ok(d)
}

/// Parse a byte size: plain bytes or with a K/M/G/T suffix (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                'B' => 1,
                _ => return Err(format!("`{s}`: unknown size suffix (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 500M, 2G)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes == 0 {
        return Err("the size must be more than zero".to_owned());
    }
    Ok(bytes)
}

/// Metrics refresh at least this often, whatever the interval.
const METRICS_TICK: Duration = Duration::from_secs(1);

/// Run `pagefail record`.
///
/// # Errors
/// Set-up failures; a final interval that cannot be written.
pub async fn run(args: RecordArgs, verbose: u8) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    let retain = match (args.retain, args.max_bytes) {
        (Some(n), _) => Retain::Count(usize::try_from(n).unwrap_or(usize::MAX)),
        (None, Some(b)) => Retain::Bytes(b),
        (None, None) => Retain::All,
    };
    let recorder = Recorder::new(&args.output, retain)?;
    // Before the session drops its capabilities (lowering needs CAP_SYS_RESOURCE).
    match set_oom_score_adj(args.oom_score_adj) {
        Ok(before) => crate::note!(
            "pagefail: oom_score_adj {} (was {before})",
            args.oom_score_adj
        ),
        Err(e) => crate::note!("pagefail: {e}; going on"),
    }
    let probe = args.filter.probe_config()?;
    let mut session = Session::start(&probe, &args.group.aggregate_config()?, signals)?;
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        session.setup_report(verbose).as_bytes(),
    );

    let metrics = Arc::new(Mutex::new(
        Metrics::new(
            usize::try_from(args.group.max_rows).unwrap_or(usize::MAX),
            &session.window.kernel,
            session.tracer.style.as_str(),
        )
        .with_memory(crate::memory::Sources::proc()),
    ));
    let _server = match args.metrics {
        Some(addr) => {
            let task = crate::metrics::serve(addr, metrics.clone()).await?;
            crate::note!("pagefail: metrics on http://{addr}/metrics");
            Some(AbortOnDrop(task))
        }
        None => None,
    };

    let tick_every = args.interval.min(METRICS_TICK);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + tick_every, tick_every);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut boundary = tokio::time::Instant::now() + args.interval;
    let mut books = Books {
        window: session.window.clone(),
        recorder,
        metrics_base: session.baseline.clone(),
        interval_base: session.baseline.clone(),
        map_retries: 0,
        drops_metrics_base: session.drops_baseline.clone(),
        drops_interval_base: session.drops_baseline.clone(),
    };
    let memory = RefCell::new(MemoryTracker::default());
    let mut on_record =
        |agg: &crate::aggregate::Aggregator, ev: &tracer_common::FailureEvent, _, _| {
            memory.borrow_mut().on_failure(agg.gfp().is_atomic(ev.gfp));
        };
    let mut write_failing = false;

    let reason = loop {
        match session.next(&mut tick, deadline, &mut on_record).await? {
            Step::Tick => {
                let close = tokio::time::Instant::now() >= boundary;
                // A window whose counters could not be read (ENOMEM) closes
                // at the next tick that can read them.
                if books.advance(&mut session, &metrics, &memory, close, &mut on_record)? && close {
                    boundary += args.interval;
                    if boundary < tokio::time::Instant::now() {
                        boundary = tokio::time::Instant::now() + args.interval;
                    }
                }
                flush(&mut books.recorder, &mut write_failing);
            }
            Step::Hangup => {
                match args.group.aggregate_config() {
                    Ok(cfg) => {
                        // Close the window so its rows keep the stack ids they were built with.
                        books
                            .advance_or_wait(&mut session, &metrics, &memory, &mut on_record)
                            .await?;
                        session.agg.set_outcomes(cfg.outcomes);
                        session.agg.set_classifier(cfg.classifier);
                        crate::note!("pagefail: SIGHUP: rules re-read, interval closed");
                    }
                    Err(e) => crate::note!("pagefail: SIGHUP: keeping the old rules: {e:#}"),
                }
                flush(&mut books.recorder, &mut write_failing);
            }
            Step::Stop(why) => break why,
        }
    };

    session.finish(&mut on_record)?;
    // Counters after the detach and final drain close the last interval.
    books
        .advance_or_wait(&mut session, &metrics, &memory, &mut on_record)
        .await?;
    let map_retries = books.map_retries;
    let recorder = &mut books.recorder;
    // Space or memory may come back shortly (the OOM killer at work, a
    // cleanup): retry a bounded while before giving up the last intervals.
    let mut last = recorder.flush();
    for _ in 0..EXIT_RETRIES {
        match &last {
            Err(e) if shortage_of(e).is_some() => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                last = recorder.flush();
            }
            _ => break,
        }
    }
    if verbose > 0 {
        crate::note!("pagefail: stopped: {reason}");
    }
    crate::note!("{}", final_note(recorder, map_retries, &args.output));
    last.context("writing the last intervals before exit")
}

/// Seconds the exit waits for space or memory to write what is held back.
const EXIT_RETRIES: u32 = 10;

/// The closing account: intervals written, held back in memory (and why),
/// not written, dropped; counter reads retried.
fn final_note(recorder: &Recorder, map_retries: u64, dir: &std::path::Path) -> String {
    format!(
        "pagefail: {} intervals written to {}; {} held back in memory while writes failed \
         (failed flushes: {} no space, {} no memory, {} other); {} not written; {} dropped; \
         {} counter reads retried (no memory)",
        recorder.written,
        dir.display(),
        recorder.held_back,
        recorder.no_space,
        recorder.no_memory,
        recorder.other_errors,
        recorder.pending(),
        recorder.dropped,
        map_retries,
    )
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn flush(recorder: &mut Recorder, failing: &mut bool) {
    if recorder.pending() == 0 {
        return;
    }
    match recorder.flush() {
        Ok(()) => {
            if *failing {
                crate::note!(
                    "pagefail: output directory writable again; pending intervals written"
                );
            }
            *failing = false;
        }
        Err(e) => {
            if !*failing {
                crate::note!(
                    "pagefail: cannot write intervals ({e:#}); still tracing, {} interval(s) kept in memory, retrying every tick",
                    recorder.pending()
                );
            }
            *failing = true;
        }
    }
}

/// The record's running state between ticks: the open window, the files,
/// and the counter values the metrics and the window were last taken at.
struct Books {
    window: Window,
    recorder: Recorder,
    metrics_base: Counters,
    interval_base: Counters,
    /// Counter reads that failed for want of memory and were retried.
    map_retries: u64,
    /// Drop counters when the metrics were last updated.
    drops_metrics_base: drops::Mark,
    /// Drop counters when the open window started.
    drops_interval_base: drops::Mark,
}

impl Books {
    /// Bring the metrics up to the kernel's counters now; with `close`, also
    /// write the open window and start a new one.
    ///
    /// When closing, the counters are read first, then the ring buffer is
    /// drained of the records the window still owes (matched - lost -
    /// recorded) and no more, so the window's records are those of the events
    /// it counted; records of later events stay for the next window. Only a
    /// record whose program was still running on another CPU at that moment
    /// (microseconds) can fall into the next window. Consecutive windows
    /// balance (matched = recorded + lost over their sum), and the run's
    /// totals exactly.
    ///
    /// Returns `false` when the kernel's counters could not be read for want
    /// of memory (counted in `map_retries`): nothing changed, try again.
    fn advance(
        &mut self,
        session: &mut Session,
        metrics: &Mutex<Metrics>,
        memory: &RefCell<MemoryTracker>,
        close: bool,
        on_record: &mut impl FnMut(
            &crate::aggregate::Aggregator,
            &tracer_common::FailureEvent,
            u32,
            bool,
        ),
    ) -> anyhow::Result<bool> {
        let now = match session.tracer.counters() {
            Ok(c) => c,
            Err(e) => {
                let e = anyhow::Error::from(e);
                if shortage_of(&e).is_some() {
                    if self.map_retries == 0 {
                        crate::note!(
                            "pagefail: reading the kernel counters: {e:#}; retrying at the next tick"
                        );
                    }
                    self.map_retries += 1;
                    return Ok(false);
                }
                return Err(e);
            }
        };
        if close {
            let d = now.since(&self.interval_base);
            let owed = d
                .matched
                .saturating_sub(d.lost)
                .saturating_sub(session.agg.events);
            session.drain_now(usize::try_from(owed).unwrap_or(usize::MAX), on_record);
        }
        update_metrics(metrics, session, &now.since(&self.metrics_base));
        self.metrics_base = now.clone();
        let (drops, drops_now) = session.drop_report(&self.drops_metrics_base)?;
        if let Ok(m) = metrics.lock() {
            m.add_drops(&drops);
        }
        self.drops_metrics_base = drops_now.clone();
        if close {
            let delta = now.since(&self.interval_base);
            let (drops, interval_now) = session.drop_report(&self.drops_interval_base)?;
            close_interval(
                session,
                &mut self.window,
                &mut self.recorder,
                memory,
                &delta,
                &drops,
            )?;
            self.interval_base = now;
            self.drops_interval_base = interval_now;
        }
        Ok(true)
    }

    /// Close the window, waiting out a shortage of memory (bounded).
    async fn advance_or_wait(
        &mut self,
        session: &mut Session,
        metrics: &Mutex<Metrics>,
        memory: &RefCell<MemoryTracker>,
        on_record: &mut impl FnMut(
            &crate::aggregate::Aggregator,
            &tracer_common::FailureEvent,
            u32,
            bool,
        ),
    ) -> anyhow::Result<()> {
        for _ in 0..EXIT_RETRIES * 10 {
            if self.advance(session, metrics, memory, true, on_record)? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the kernel counters stayed unreadable (no memory) for 10 s")
    }
}

/// Add the failures since the last update to the metrics, and the counters.
fn update_metrics(metrics: &Mutex<Metrics>, session: &mut Session, delta: &Counters) {
    let Ok(mut m) = metrics.lock() else {
        return;
    };
    let agg = &session.agg;
    for (k, r) in agg.rows() {
        if r.interval_failures == 0 {
            continue;
        }
        let labels = FailureLabels {
            comm: k.comm.clone().unwrap_or_default(),
            context: k.context.map(|c| c.to_string()).unwrap_or_default(),
            path: k.path.clone().unwrap_or_default(),
            order: k.order.map(|o| o.to_string()).unwrap_or_default(),
            gfp_flags: k.gfp.map(|g| agg.gfp().decode(g)).unwrap_or_default(),
            atomic: k
                .gfp
                .map(|g| agg.gfp().is_atomic(g).to_string())
                .unwrap_or_default(),
            cause: k.cause.to_string(),
            outcome: k.outcome.to_string(),
        };
        let labels = if k.comm.as_deref() == Some(OTHER) {
            FailureLabels {
                comm: OTHER.to_owned(),
                ..labels
            }
        } else {
            labels
        };
        m.add_failures(labels, r.interval_failures);
    }
    m.add_counters(delta);
    drop(m);
    session.agg.start_interval();
}

/// Write the window's rows and totals (queued), then start a new window.
fn close_interval(
    session: &mut Session,
    window: &mut Window,
    recorder: &mut Recorder,
    memory: &RefCell<MemoryTracker>,
    delta: &Counters,
    drops: &DropReport,
) -> anyhow::Result<()> {
    window.end = SystemTime::now();
    let rows = session.agg.summary_rows(window);
    let mut csv = Vec::new();
    export::write_csv(&mut csv, &rows)?;
    let mut totals_rows = export::totals::rows(window, delta, session.agg.events);
    totals_rows.extend(export::totals::extra_rows(
        window,
        &drops::render::totals_rows(drops),
    ));
    let mut totals = Vec::new();
    export::totals::write_csv(&mut totals, &totals_rows)?;
    let snapshots = std::mem::take(&mut memory.borrow_mut().rows);
    let memory_csv = if snapshots.is_empty() {
        None
    } else {
        let mut buf = Vec::new();
        export::memory::write_memory_csv(&mut buf, &snapshots, true)?;
        Some(buf)
    };
    let summary = run_summary(
        window,
        delta,
        &rows,
        &session.tracer.warn_alloc,
        drops,
        session.agg.fallbacks_seen(delta.follow_lost),
    );
    let mut summary_json = Vec::new();
    export::write_summary_json(&mut summary_json, &summary)?;
    recorder.queue(window.start, csv, totals, memory_csv, Some(summary_json));
    session.agg.reset();
    window.start = window.end;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_bytes("500M"), Ok(500 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("5X").is_err());
        assert!(parse_bytes("M").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn intervals_are_at_least_a_second() {
        assert!(parse_record_interval("500ms").is_err());
        assert_eq!(parse_record_interval("2s"), Ok(Duration::from_secs(2)));
    }
}
