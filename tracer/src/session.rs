//! A tracing session: attach, pump records into an aggregator, stop on a
//! signal or deadline, detach and drain. Shared by `watch`, `record` and
//! `check --sample`.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracer_common::{EVENT_FOLLOW, FailureEvent};

use crate::{
    aggregate::{Aggregator, GroupBy, Window},
    cgroup::CgroupResolver,
    classify::Classifier,
    drops::{self, DropReport},
    events::EventStream,
    lost::LostRows,
    privilege,
    probe::{Counters, ProbeConfig, Tracer, WarnAllocProbe},
    symbolize::Kallsyms,
    verdict::OutcomeRules,
};

/// Why [`Session::next`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The interval timer fired.
    Tick,
    /// SIGHUP (configuration reload / reopen).
    Hangup,
    /// Stop: duration reached, SIGINT or SIGTERM.
    Stop(&'static str),
}

/// Signals a session stops on, installed before attaching so a Ctrl-C
/// during start-up is not lost.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    /// Install SIGINT, SIGTERM and SIGHUP handlers.
    ///
    /// # Errors
    /// When a handler cannot be installed (no tokio runtime).
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

/// An attached tracer feeding an aggregator.
pub struct Session {
    pub tracer: Tracer,
    pub stream: EventStream,
    pub agg: Aggregator,
    /// Counter values at attach time.
    pub baseline: Counters,
    /// Drop counters at attach time.
    pub drops_baseline: drops::Mark,
    pub window: Window,
    signals: Signals,
    /// The kallsyms parse, until the first record needs it.
    ksyms: Option<PendingKallsyms>,
    /// Drains what waits below the wake-up threshold.
    flush: tokio::time::Interval,
    /// What became of the capabilities after start-up.
    pub privileges: Privileges,
    /// The failures rebuilt into rows from the kernel's table of lost ones.
    pub lost_rows: LostRows,
}

/// How long a record may wait in the ring buffer when too few follow it to
/// wake the reader.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

fn flush_timer() -> tokio::time::Interval {
    let mut t = tokio::time::interval(FLUSH_EVERY);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

type PendingKallsyms = std::thread::JoinHandle<Result<Kallsyms, crate::symbolize::SymbolizeError>>;

/// Give the aggregator the kernel symbols, once they are parsed (the first
/// call waits for the parse; later calls do nothing).
fn symbols_ready(pending: &mut Option<PendingKallsyms>, agg: &mut Aggregator) {
    if let Some(handle) = pending.take() {
        let ksyms = handle
            .join()
            .unwrap_or_else(|_| Ok(Kallsyms::default()))
            .unwrap_or_else(|e| {
                crate::note!("pagefail: {e}");
                Kallsyms::default()
            });
        agg.set_kallsyms(ksyms);
    }
}

/// Hand one ring-buffer record on: a failure to the aggregator and then to
/// `on_record`; a follow record (`EVENT_FOLLOW`, `--observe-fallbacks`) to
/// the aggregator's observer only, as it is no failure.
#[inline]
fn take_record(
    agg: &mut Aggregator,
    ev: &FailureEvent,
    on_record: &mut impl FnMut(&Aggregator, &FailureEvent, u32, bool),
) {
    if ev.flags & EVENT_FOLLOW != 0 {
        agg.follow(ev);
        return;
    }
    let (sid, new) = agg.add(ev);
    on_record(agg, ev, sid, new);
}

/// What a session did with its capabilities once attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privileges {
    /// All dropped, `no_new_privs` set.
    Dropped,
    /// All but `CAP_BPF` (`CAP_SYS_ADMIN` before 5.8) dropped: this kernel's
    /// `bpf()` refuses map reads without it.
    KeptBpfOnly,
    /// `--keep-caps`.
    Kept,
}

/// How rows are built.
#[derive(Debug, Clone)]
pub struct AggregateConfig {
    pub by: GroupBy,
    pub key_cap: usize,
    pub classifier: Classifier,
    pub outcomes: OutcomeRules,
}

impl Session {
    /// Attach and prepare the aggregator. Kallsyms problems are reported on
    /// stderr and stacks then stay raw addresses. Then, unless
    /// `cfg.keep_caps`, every capability is dropped and `no_new_privs` set:
    /// nothing later needs one (see [`privilege`]).
    ///
    /// # Errors
    /// Probe set-up errors (privileges, kernel support).
    pub fn start(
        cfg: &ProbeConfig,
        agg: &AggregateConfig,
        signals: Signals,
    ) -> anyhow::Result<Self> {
        // The session drains on its own timer too, so records need not wake
        // it one by one.
        let cfg = ProbeConfig {
            batch_wakeups: true,
            ..cfg.clone()
        };
        let mut tracer = Tracer::attach(&cfg)?;
        // Reading and parsing /proc/kallsyms takes longer than the attach
        // (100 ms and more): do it on another thread once attached, and wait
        // for it only when the first record needs symbols. Records wait in
        // the ring buffer meanwhile, as they would if it ran first.
        let ksyms = std::thread::spawn(Kallsyms::load);
        let window = Window::starting_now();
        let baseline = tracer.counters()?;
        let drops_baseline = drops::Mark::take(&tracer)?;
        let ring = tracer.take_ring()?;
        let stream = EventStream::new(ring).context("registering the ring buffer with tokio")?;
        let agg = Aggregator::new(
            tracer.gfp.clone(),
            Kallsyms::default(),
            agg.classifier.clone(),
            agg.key_cap,
        )
        .group_by(agg.by)
        .with_outcomes(agg.outcomes.clone())
        .with_warn_probe(matches!(tracer.warn_alloc, WarnAllocProbe::Attached))
        .with_cgroups(CgroupResolver::for_source(&tracer.cgroups))
        .observing_fallbacks(tracer.follows_fallbacks());
        // Capabilities are per thread: the kallsyms thread started above
        // keeps its own until it has read the addresses (which need
        // CAP_SYSLOG) and exits; this thread, which does all further work,
        // drops everything now.
        let privileges = if cfg.keep_caps {
            Privileges::Kept
        } else if tracer.counters_readable_without_caps() {
            privilege::drop_all()?;
            Privileges::Dropped
        } else {
            // This kernel's bpf() refuses even map reads to a process without
            // CAP_BPF: keep that one capability, drop the rest.
            privilege::drop_all_except(privilege::bpf_read_capability(
                tracer.features.has_cap_bpf(),
            ))?;
            Privileges::KeptBpfOnly
        };
        Ok(Self {
            tracer,
            stream,
            agg,
            baseline,
            drops_baseline,
            window,
            signals,
            ksyms: Some(ksyms),
            flush: flush_timer(),
            privileges,
            lost_rows: LostRows::default(),
        })
    }

    /// Add the failures the kernel counted by row key because the ring
    /// buffer was full (see [`crate::lost`]) to the rows.
    ///
    /// # Errors
    /// When the kernel's table cannot be read.
    pub fn rebuild_lost(&mut self) -> anyhow::Result<u64> {
        let table = self
            .tracer
            .lost_table()
            .context("reading the kernel's table of lost failures")?;
        if table.is_empty() {
            // Nothing lost: do not wait for the kallsyms parse.
            return Ok(0);
        }
        symbols_ready(&mut self.ksyms, &mut self.agg);
        Ok(self.lost_rows.add(table, &self.tracer, &mut self.agg))
    }

    /// Aggregate records until the interval ticks, a signal arrives or the
    /// deadline passes. `on_record` sees each record after aggregation with
    /// its stack id and whether the stack is new.
    ///
    /// # Errors
    /// When reading the ring buffer fails.
    pub async fn next(
        &mut self,
        tick: &mut tokio::time::Interval,
        deadline: Option<tokio::time::Instant>,
        on_record: &mut impl FnMut(&Aggregator, &FailureEvent, u32, bool),
    ) -> anyhow::Result<Step> {
        loop {
            let sleep = sleep_until(deadline);
            let (ksyms, agg) = (&mut self.ksyms, &mut self.agg);
            // Records are aggregated in place in the ring buffer.
            let mut sink = |ev: &FailureEvent| {
                symbols_ready(ksyms, agg);
                take_record(agg, ev, on_record);
            };
            // What waits below the wake-up threshold (FLUSH_EVERY at most).
            self.stream.drain(&mut sink);
            tokio::select! {
                r = self.stream.next_with(&mut sink) => {
                    r.context("reading the ring buffer")?;
                }
                _ = self.flush.tick() => {
                    self.rebuild_lost()?;
                }
                _ = tick.tick() => {
                    self.rebuild_lost()?;
                    return Ok(Step::Tick);
                }
                () = sleep => return Ok(Step::Stop("duration reached")),
                _ = self.signals.int.recv() => return Ok(Step::Stop("interrupted")),
                _ = self.signals.term.recv() => return Ok(Step::Stop("terminated")),
                _ = self.signals.hup.recv() => return Ok(Step::Hangup),
            }
        }
    }

    /// Counters since attach.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn totals(&self) -> anyhow::Result<Counters> {
        Ok(self.tracer.counters()?.since(&self.baseline))
    }

    /// Aggregate up to `limit` records waiting in the ring buffer now,
    /// without waiting for a wake-up (records sit there below the wake-up
    /// threshold). The ring is first in, first out: bounded by what an
    /// interval still owes, it stops before the records of later events.
    pub fn drain_now(
        &mut self,
        limit: usize,
        on_record: &mut impl FnMut(&Aggregator, &FailureEvent, u32, bool),
    ) {
        let (ksyms, agg) = (&mut self.ksyms, &mut self.agg);
        self.stream.drain_up_to(limit, &mut |ev| {
            symbols_ready(ksyms, agg);
            take_record(agg, ev, on_record);
        });
        if let Err(e) = self.rebuild_lost() {
            crate::note!("pagefail: {e:#}");
        }
    }

    /// Detach, then drain what is left: afterwards delivered + lost equals
    /// matched exactly. Returns the final totals.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn finish(
        &mut self,
        on_record: &mut impl FnMut(&Aggregator, &FailureEvent, u32, bool),
    ) -> anyhow::Result<Counters> {
        self.tracer.detach();
        symbols_ready(&mut self.ksyms, &mut self.agg);
        let agg = &mut self.agg;
        self.stream.drain(&mut |ev| take_record(agg, ev, on_record));
        // Detached: the table holds its final counts.
        self.rebuild_lost()?;
        self.window.end = std::time::SystemTime::now();
        self.totals()
    }

    /// The drops between `from` and now, attributed with the failures'
    /// symbols and rules; returns the mark taken now, for the next report.
    ///
    /// # Errors
    /// When a drop map cannot be read.
    pub fn drop_report(&mut self, from: &drops::Mark) -> anyhow::Result<(DropReport, drops::Mark)> {
        symbols_ready(&mut self.ksyms, &mut self.agg);
        let now = drops::Mark::take(&self.tracer)?;
        let (ksyms, classifier) = self.agg.attribution();
        Ok((
            drops::report(&self.tracer, from, &now, ksyms, classifier),
            now,
        ))
    }

    /// One line about the attach, and one about `warn_alloc` when it matters.
    #[must_use]
    pub fn setup_report(&self, verbose: u8) -> String {
        let t = &self.tracer;
        let mut s = if t.failures_only {
            format!(
                "pagefail: attached to warn_alloc (kprobe, failures only: memcg charge \
                 failures and lock-free tries unseen, no allocation totals) in {} ms on {}; \
                 Ctrl-C to stop\n",
                t.attach_time.as_millis(),
                t.features.release
            )
        } else {
            format!(
                "pagefail: attached to mm_page_alloc ({}) in {} ms on {}; Ctrl-C to stop\n",
                t.style,
                t.attach_time.as_millis(),
                t.features.release
            )
        };
        if verbose > 0 {
            for (style, why) in &t.fallbacks {
                s.push_str(&format!("pagefail: {style} not used: {why}\n"));
            }
            s.push_str(match self.privileges {
                Privileges::Dropped => "pagefail: all capabilities dropped, no_new_privs set\n",
                Privileges::KeptBpfOnly => {
                    "pagefail: capabilities dropped but the one this kernel needs to read BPF maps; no_new_privs set\n"
                }
                Privileges::Kept => "pagefail: capabilities kept (--keep-caps)\n",
            });
        }
        match &t.warn_alloc {
            WarnAllocProbe::Attached if verbose > 0 => {
                s.push_str("pagefail: warn_alloc kprobe attached\n");
            }
            WarnAllocProbe::Unavailable(why) => s.push_str(&format!(
                "pagefail: warn_alloc probe unavailable ({why}); failures are counted, `warned` stays 0\n"
            )),
            _ => {}
        }
        s.push_str(&drops::render::setup_line(&t.drops, verbose));
        s
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending::<()>().await,
    }
}

/// Parse a duration argument (`5s`, `2m`, `1h30m`, or plain seconds).
///
/// # Errors
/// A message for clap when it is not a positive duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .or_else(|_| s.parse::<u64>().map(Duration::from_secs))
        .map_err(|_| format!("`{s}` is not a duration (e.g. 5s, 2m, 1h)"))?;
    if d.is_zero() {
        return Err("the duration must be more than zero".to_owned());
    }
    Ok(d)
}

/// Run a future on a current-thread tokio runtime.
///
/// # Errors
/// The future's error, or a runtime that cannot start.
pub fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_validated() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
