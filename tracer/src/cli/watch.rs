//! `pagefail watch`: live failure tables during an incident, a summary and
//! CSV at the end.

use std::{
    collections::HashMap,
    io::{self, Write},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tracer_common::{FailureEvent, ORDER_SLOTS};

use crate::{
    aggregate::{Aggregator, DEFAULT_KEY_CAP, Window},
    cgroup::CgroupResolver,
    classify::Classifier,
    events::{self, EventStream},
    export,
    probe::{Counters, ProbeConfig, Tracer, WarnAllocProbe, support},
    symbolize::Kallsyms,
};

/// Trace failed page allocations live.
///
/// Shows a table of failures every interval (by process, order and gfp
/// flags), allocation totals per order, and lost events; on exit (duration,
/// Ctrl-C or SIGTERM) prints a summary and writes the CSV.
///
/// Examples:
///   sudo pagefail watch                              # atomic failures, until Ctrl-C
///   sudo pagefail watch --all --duration 5 --csv out.csv
///   sudo pagefail watch --min-order 2 --pid 1234 -v
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C or SIGTERM.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print a live table every interval (e.g. 1s, 500ms).
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Only failures of this order or larger.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=15))]
    pub min_order: u32,
    /// Also non-atomic failures (default: only requests that cannot sleep).
    #[arg(long)]
    pub all: bool,
    /// Only failures in this process (thread-group id).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only failures in this thread (thread id).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub tid: Option<u32>,
    /// Write the summary as CSV to this file at exit (atomically).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Cap on distinct summary rows; records beyond it go to an `[other]` row.
    #[arg(long, default_value_t = DEFAULT_KEY_CAP as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_rows: u64,
    /// Ring buffer size in KiB (power of two, at least 4); default from the CPU count.
    #[arg(long, value_name = "KIB", value_parser = parse_ring_kib)]
    pub ring_kib: Option<u32>,
    /// Print every new distinct failure stack once, symbolized.
    #[arg(long)]
    pub stacks: bool,
    /// Do not attach the warn_alloc kprobe.
    #[arg(long)]
    pub no_warn_alloc: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .or_else(|_| s.parse::<u64>().map(Duration::from_secs))
        .map_err(|_| format!("`{s}` is not a duration (e.g. 5s, 2m, 1h)"))?;
    if d.is_zero() {
        return Err("the duration must be more than zero".to_owned());
    }
    Ok(d)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err("the interval must be at least 100ms".to_owned());
    }
    Ok(d)
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

/// Failures of one interval, by (comm, tgid, order, gfp).
type IntervalCounts = HashMap<(String, u32, u32, u64), u64>;

/// Run `pagefail watch`.
///
/// # Errors
/// Set-up failures (privileges, kernel support), I/O errors writing output.
pub async fn run(args: WatchArgs, verbose: u8) -> anyhow::Result<()> {
    // Signals first, so a Ctrl-C during start-up is not lost.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let forced =
        support::forced_style().map_err(|e| anyhow::anyhow!("{}: {e}", support::ATTACH_ENV))?;
    let cfg = ProbeConfig {
        min_order: args.min_order,
        atomic_only: !args.all,
        tgid: args.pid,
        tid: args.tid,
        ring_bytes: args.ring_kib,
        force_style: forced,
        warn_alloc: !args.no_warn_alloc,
    };
    let mut tracer = Tracer::attach(&cfg)?;
    let mut window = Window::starting_now();
    let baseline = tracer.counters()?;
    let ring = tracer.take_ring()?;
    let mut stream = EventStream::new(ring).context("registering the ring buffer with tokio")?;

    report_setup(&tracer, verbose);

    let ksyms = match Kallsyms::load() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("pagefail: {e}");
            Kallsyms::default()
        }
    };
    let mut agg = Aggregator::new(
        tracer.gfp.clone(),
        ksyms,
        Classifier::builtin(),
        usize::try_from(args.max_rows).unwrap_or(DEFAULT_KEY_CAP),
    );
    let mut cgroups = CgroupResolver::new();
    let started = Instant::now();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    let mut interval: IntervalCounts = HashMap::new();
    let mut last = baseline.clone();
    let mut out = io::stdout().lock();
    let mut batch: Vec<FailureEvent> = Vec::new();

    let stop_reason = loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = stream.next_batch(&mut batch) => {
                r.context("reading the ring buffer")?;
                for ev in batch.drain(..) {
                    record(&mut agg, &mut interval, &ev, args.stacks, &mut out);
                }
            }
            _ = tick.tick() => {
                let now = tracer.counters()?;
                let line = live_table(&agg, &interval, &now.since(&last), &now.since(&baseline), started.elapsed());
                interval.clear();
                last = now;
                if write_out(&mut out, &line).is_err() {
                    break "stdout closed";
                }
            }
            _ = sleep => break "duration reached",
            _ = sigint.recv() => break "interrupted",
            _ = sigterm.recv() => break "terminated",
        }
    };

    // Detach, then drain: after this, delivered + lost equals matched exactly.
    tracer.detach();
    stream.drain(&mut |ev| record(&mut agg, &mut interval, ev, args.stacks, &mut out));
    let totals = tracer.counters()?.since(&baseline);
    window.end = SystemTime::now();
    if verbose > 0 {
        eprintln!("pagefail: stopped: {stop_reason}");
    }

    let rows = agg.summary_rows(&window, &mut cgroups);
    let _ = write_out(
        &mut out,
        &final_summary(&agg, &totals, &rows, stream.malformed, &tracer.warn_alloc),
    );
    if let Some(path) = &args.csv {
        export::write_atomically(path, |w| export::write_csv(w, &rows))?;
        eprintln!("pagefail: wrote {} rows to {}", rows.len(), path.display());
    }
    Ok(())
}

fn record(
    agg: &mut Aggregator,
    interval: &mut IntervalCounts,
    ev: &FailureEvent,
    show_stacks: bool,
    out: &mut impl Write,
) {
    let (sid, is_new) = agg.add(ev);
    *interval
        .entry((events::comm(ev), ev.tgid, ev.order, ev.gfp))
        .or_default() += 1;
    if show_stacks
        && is_new
        && let Some(info) = agg.stack(sid)
    {
        let _ = writeln!(
            out,
            "new stack: comm={} pid={} order={} gfp={} context={} path={}\n  {}",
            events::comm(ev),
            ev.tgid,
            ev.order,
            agg.gfp().decode(ev.gfp),
            info.context,
            info.path,
            info.folded
                .replace(';', "\n  <- ")
                .lines()
                .rev()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

fn write_out(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn report_setup(tracer: &Tracer, verbose: u8) {
    eprintln!(
        "pagefail: attached to mm_page_alloc ({}) in {} ms on {}; Ctrl-C to stop",
        tracer.style,
        tracer.attach_time.as_millis(),
        tracer.features.release
    );
    if verbose > 0 {
        for (style, why) in &tracer.fallbacks {
            eprintln!("pagefail: {style} not used: {why}");
        }
    }
    match &tracer.warn_alloc {
        WarnAllocProbe::Attached => {
            if verbose > 0 {
                eprintln!("pagefail: warn_alloc kprobe attached");
            }
        }
        WarnAllocProbe::Unavailable(why) => {
            eprintln!(
                "pagefail: warn_alloc probe unavailable ({why}); failures are counted, `warned` stays 0"
            );
        }
        WarnAllocProbe::Disabled => {}
    }
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

fn live_table(
    agg: &Aggregator,
    interval: &IntervalCounts,
    delta: &Counters,
    total: &Counters,
    elapsed: Duration,
) -> String {
    let mut s = format!(
        "--- {:>6.1}s  failures: {} this interval, {} total (lost {})  all failures by order: {}\n",
        elapsed.as_secs_f64(),
        delta.matched,
        total.matched,
        total.lost,
        order_list(&total.fails),
    );
    s.push_str(&format!(
        "    allocations this interval by order: {}\n",
        order_list(&delta.allocs)
    ));
    if !interval.is_empty() {
        let mut rows: Vec<_> = interval.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        s.push_str(&format!(
            "    {:<16} {:>8} {:>5} {:>9}  {}\n",
            "COMM", "PID", "ORDER", "FAILURES", "GFP"
        ));
        for ((comm, tgid, order, gfp), n) in rows.into_iter().take(15) {
            s.push_str(&format!(
                "    {comm:<16} {tgid:>8} {order:>5} {n:>9}  {}\n",
                agg.gfp().decode(*gfp)
            ));
        }
    }
    s
}

fn final_summary(
    agg: &Aggregator,
    totals: &Counters,
    rows: &[export::SummaryRow],
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
    if malformed > 0 {
        s.push_str(&format!("malformed records: {malformed}\n"));
    }
    match warn {
        WarnAllocProbe::Attached => {
            s.push_str(&format!("warn_alloc entries: {}\n", totals.warn_alloc))
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
    s.push_str(&format!(
        "{:<16} {:>8} {:<8} {:<12} {:>5} {:>9} {:>6}  {}\n",
        "COMM", "PID", "CONTEXT", "PATH", "ORDER", "FAILURES", "WARNED", "GFP"
    ));
    for r in rows {
        s.push_str(&format!(
            "{:<16} {:>8} {:<8} {:<12} {:>5} {:>9} {:>6}  {} ({})\n",
            r.comm, r.pid, r.context, r.path, r.order, r.failures, r.warned, r.gfp_flags, r.gfp
        ));
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
    fn durations_and_sizes_are_validated() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_interval("10ms").is_err());
        assert_eq!(parse_ring_kib("64"), Ok(65536));
        assert!(parse_ring_kib("3").is_err());
        assert!(parse_ring_kib("100").is_err());
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
}
