//! A short live sample of failures, summarized into rows: shared by
//! subcommands that need failures without `watch`'s live display.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::{
    aggregate::{Aggregator, DEFAULT_KEY_CAP, Window},
    cgroup::CgroupResolver,
    classify::Classifier,
    events::EventStream,
    export::SummaryRow,
    probe::{Counters, ProbeConfig, Tracer},
    symbolize::Kallsyms,
};

/// What a sample saw.
#[derive(Debug)]
pub struct Sample {
    pub rows: Vec<SummaryRow>,
    /// Kernel counters over the sample (matched, lost, per-order totals).
    pub totals: Counters,
}

/// Attach, collect failures for `duration` (or until Ctrl-C), detach, and
/// summarize them.
///
/// # Errors
/// Set-up failures (privileges, kernel support) and ring-buffer errors.
pub async fn collect(cfg: &ProbeConfig, duration: Duration) -> anyhow::Result<Sample> {
    let mut tracer = Tracer::attach(cfg)?;
    let mut window = Window::starting_now();
    let baseline = tracer.counters()?;
    let mut stream =
        EventStream::new(tracer.take_ring()?).context("registering the ring buffer with tokio")?;
    let ksyms = Kallsyms::load().unwrap_or_else(|e| {
        log::warn!("{e}: stacks stay unsymbolized");
        Kallsyms::default()
    });
    let mut agg = Aggregator::new(
        tracer.gfp.clone(),
        ksyms,
        Classifier::builtin(),
        DEFAULT_KEY_CAP,
    );
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            r = stream.next_batch(&mut batch) => {
                r.context("reading the ring buffer")?;
                for ev in batch.drain(..) {
                    agg.add(&ev);
                }
            }
            () = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Detach, then drain: every matched failure is then recorded or counted lost.
    tracer.detach();
    stream.drain(&mut |ev| {
        agg.add(ev);
    });
    let totals = tracer.counters()?.since(&baseline);
    window.end = SystemTime::now();
    let rows = agg.summary_rows(&window, &mut CgroupResolver::new());
    Ok(Sample { rows, totals })
}
