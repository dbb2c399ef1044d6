//! The totals CSV of `pagefail record` (`<stem>.totals.csv`): allocation and
//! failure totals per order, records matched, delivered and lost,
//! `warn_alloc` entries and events the kernel did not show the program, one
//! row per metric (and order) of one interval.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::{aggregate::Window, probe::Counters, timestamp::rfc3339};

/// The totals CSV columns, in order: a stable contract.
pub const TOTALS_HEADER: [&str; 7] = [
    "window_start",
    "window_end",
    "host",
    "kernel",
    "metric",
    "order",
    "value",
];

/// One row of the totals CSV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsRow {
    pub window_start: String,
    pub window_end: String,
    pub host: String,
    pub kernel: String,
    /// `allocations` and `failed` (per order), `matched`, `recorded`,
    /// `lost`, `lost_kept`, `lost_unkept`, `warn_alloc`, `unseen`; then the
    /// packet drops (`drops:<REASON>`, `drops_unattributed`, `drops_unseen`,
    /// the TCP counters, `rx_alloc_fail:<ifname>:<queue>`: see [`extra_rows`]).
    pub metric: String,
    /// Set for the per-order metrics only.
    pub order: Option<u32>,
    /// Empty where the kernel does not count it (`unseen` of the classic
    /// tracepoint).
    pub value: Option<u64>,
}

/// The rows of one interval: `allocations` and `failed` for every order
/// slot, then `matched`, `recorded` (records the collector read), `lost`,
/// `lost_kept` and `lost_unkept` (of the lost, those the kernel counted by
/// row, which the rows hold, and those it had no room for), `warn_alloc`
/// and `unseen`.
#[must_use]
pub fn rows(window: &Window, delta: &Counters, recorded: u64) -> Vec<TotalsRow> {
    let row = |metric: &str, order: Option<u32>, value: Option<u64>| TotalsRow {
        window_start: rfc3339(window.start),
        window_end: rfc3339(window.end),
        host: window.host.clone(),
        kernel: window.kernel.clone(),
        metric: metric.to_owned(),
        order,
        value,
    };
    let mut out = Vec::new();
    for (metric, counts) in [("allocations", &delta.allocs), ("failed", &delta.fails)] {
        for (order, n) in (0u32..).zip(counts.iter()) {
            out.push(row(metric, Some(order), Some(*n)));
        }
    }
    for (metric, n) in [
        ("matched", delta.matched),
        ("recorded", recorded),
        ("lost", delta.lost),
        ("lost_kept", delta.lost_kept),
        ("lost_unkept", delta.lost_unkept),
        ("warn_alloc", delta.warn_alloc),
    ] {
        out.push(row(metric, None, Some(n)));
    }
    out.push(row("unseen", None, delta.unseen));
    out
}

/// Rows of further per-interval metrics without an order (the packet drops
/// of `crate::drops::render::totals_rows`); `None`: not known.
#[must_use]
pub fn extra_rows(window: &Window, metrics: &[(String, Option<u64>)]) -> Vec<TotalsRow> {
    metrics
        .iter()
        .map(|(metric, value)| TotalsRow {
            window_start: rfc3339(window.start),
            window_end: rfc3339(window.end),
            host: window.host.clone(),
            kernel: window.kernel.clone(),
            metric: metric.clone(),
            order: None,
            value: *value,
        })
        .collect()
}

/// Write totals rows as CSV, header first.
///
/// # Errors
/// I/O errors of the writer.
pub fn write_csv<W: Write>(out: W, rows: &[TotalsRow]) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    w.write_record(TOTALS_HEADER)?;
    for row in rows {
        w.serialize(row)?;
    }
    w.flush()?;
    Ok(())
}

/// The totals file of an interval, as CSV text.
#[must_use]
pub fn csv_bytes(window: &Window, delta: &Counters, recorded: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_csv(&mut buf, &rows(window, delta, recorded));
    buf
}

/// Read a totals CSV; `name` names it in errors. Columns appended after
/// [`TOTALS_HEADER`] are ignored.
///
/// # Errors
/// When the header does not start with the contract's columns, or a row
/// does not parse (the error names the line).
pub fn read_csv(name: &str, input: impl Read) -> anyhow::Result<Vec<TotalsRow>> {
    super::read_rows(name, input, &TOTALS_HEADER, "a pagefail totals CSV")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn totals_list_every_order_and_the_loss_counters() {
        let w = Window {
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            end: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_060),
            host: "h,\"1\"".into(),
            kernel: "6.1".into(),
            clock: crate::events::BootClock::now(),
        };
        let c = Counters {
            allocs: vec![5, 1],
            fails: vec![0, 2],
            matched: 2,
            lost: 0,
            warn_alloc: 1,
            unseen: Some(6),
            ..Counters::default()
        };
        let text = String::from_utf8(csv_bytes(&w, &c, 2)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], TOTALS_HEADER.join(","));
        assert_eq!(
            lines[1],
            "2026-11-18T11:06:40Z,2026-11-18T11:07:40Z,\"h,\"\"1\"\"\",6.1,allocations,0,5"
        );
        assert!(lines.iter().any(|l| l.ends_with(",failed,1,2")));
        assert!(lines.iter().any(|l| l.ends_with(",recorded,,2")));
        assert!(lines.iter().any(|l| l.ends_with(",lost,,0")));
        assert!(lines.iter().any(|l| l.ends_with(",unseen,,6")));
        assert!(lines.iter().any(|l| l.ends_with(",lost_kept,,0")));
        assert!(lines.iter().any(|l| l.ends_with(",lost_unkept,,0")));
        assert_eq!(lines.len(), 1 + 2 + 2 + 7);
        let back = read_csv("t.csv", text.as_bytes()).unwrap();
        assert_eq!(back, rows(&w, &c, 2));
        assert_eq!(back[0].host, "h,\"1\"");
        let unknown = Counters { unseen: None, ..c };
        let text = String::from_utf8(csv_bytes(&w, &unknown, 2)).unwrap();
        assert!(text.lines().any(|l| l.ends_with(",unseen,,")), "{text}");
        let unseen = read_csv("t.csv", text.as_bytes()).unwrap().pop().unwrap();
        assert_eq!((unseen.metric.as_str(), unseen.value), ("unseen", None));
        let e = format!("{:#}", read_csv("x.csv", "a,b\n".as_bytes()).unwrap_err());
        assert!(e.contains("x.csv: not a pagefail totals CSV"), "{e}");
    }
}
