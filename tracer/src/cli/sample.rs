//! A short live sample of failures, summarized into rows: for subcommands
//! that need failures without `watch`'s live display.

use std::time::Duration;

use crate::{
    aggregate::{DEFAULT_KEY_CAP, GroupBy},
    classify::Classifier,
    export::SummaryRow,
    probe::{Counters, ProbeConfig},
    session::{AggregateConfig, Session, Signals, Step},
};

/// What a sample saw.
#[derive(Debug)]
pub struct Sample {
    pub rows: Vec<SummaryRow>,
    /// Kernel counters over the sample (matched, lost, per-order totals).
    pub totals: Counters,
}

/// Attach, collect failures for `duration` (or until Ctrl-C / SIGTERM),
/// detach, and summarize them.
///
/// # Errors
/// Set-up failures (privileges, kernel support) and ring-buffer errors.
pub async fn collect(cfg: &ProbeConfig, duration: Duration) -> anyhow::Result<Sample> {
    let agg = AggregateConfig {
        by: GroupBy::default(),
        key_cap: DEFAULT_KEY_CAP,
        classifier: Classifier::builtin(),
        outcomes: crate::verdict::OutcomeRules::builtin(),
    };
    let mut session = Session::start(cfg, &agg, Signals::install()?)?;
    let end = tokio::time::Instant::now() + duration;
    let deadline = Some(end);
    // No periodic work: the first tick comes after the sample ends.
    let mut tick = tokio::time::interval_at(end + duration, duration);
    let mut ignore = |_: &_, _: &_, _, _| {};
    while !matches!(
        session.next(&mut tick, deadline, &mut ignore).await?,
        Step::Stop(_)
    ) {}
    let totals = session.finish(&mut ignore)?;
    let rows = session.agg.summary_rows(&session.window);
    Ok(Sample { rows, totals })
}
