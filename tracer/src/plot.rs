//! Timeline pictures of CSV summaries: failures per second per series over
//! the windows of the rows (record's intervals), and beside it the free
//! blocks that could serve the failing orders, from the memory snapshots
//! written next to the summaries. SVG, drawn with `plotters`.
//!
//! The numbers drawn are also carried in the SVG as JSON in a
//! `<desc id="pagefail-data">` element, so tools (and tests) can read them
//! without measuring pixels.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, UNIX_EPOCH},
};

use anyhow::Context as _;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    export::{self, SummaryRow},
    timestamp,
};

/// A window of time, seconds since the Unix epoch.
type Window = (u64, u64);

/// One memory CSV row, the columns the picture needs.
#[derive(Debug, Clone, Deserialize)]
pub struct MemoryRow {
    pub taken: String,
    pub node: u32,
    pub zone: String,
    /// Free blocks of order 0, 1, 2, ... separated by spaces.
    pub free_blocks: String,
}

/// What the picture shows, in numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// What the series are split by (`outcome`, `path`, ...).
    pub by: String,
    /// Window starts and ends, RFC 3339 UTC, in time order.
    pub windows: Vec<(String, String)>,
    /// Failures per second in each window, per series (same length as `windows`).
    pub rates: BTreeMap<String, Vec<f64>>,
    /// Failures per series over all windows.
    pub totals: BTreeMap<String, u64>,
    /// Per failing order and zone (`order 3, node 0 Normal`): (snapshot
    /// time RFC 3339, free blocks that could serve that order).
    pub capacity: BTreeMap<String, Vec<(String, u64)>>,
}

fn parse_time(s: &str) -> Option<u64> {
    let t = timestamp::parse(s)?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

fn time_text(secs: u64) -> String {
    timestamp::rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The zones that matter for kernel allocations, best first.
fn zone_rank(zone: &str) -> u8 {
    match zone {
        "Normal" => 3,
        "DMA32" => 2,
        "DMA" => 1,
        _ => 0,
    }
}

impl Timeline {
    /// Build the numbers: `rows` with `key` naming each row's series, the
    /// windows of intervals that had no rows (`quiet`, from record's totals
    /// files), and the memory snapshots.
    ///
    /// # Errors
    /// When no row or window carries a time.
    pub fn build(
        by: &str,
        rows: &[SummaryRow],
        key: impl Fn(&SummaryRow) -> String,
        quiet: &[(String, String)],
        memory: &[MemoryRow],
    ) -> anyhow::Result<Self> {
        let mut windows: BTreeSet<Window> = BTreeSet::new();
        let mut per: BTreeMap<String, BTreeMap<Window, u64>> = BTreeMap::new();
        let mut orders: BTreeMap<u32, u64> = BTreeMap::new();
        for r in rows {
            let (Some(s), Some(e)) = (parse_time(&r.window_start), parse_time(&r.window_end))
            else {
                continue;
            };
            let w = (s, e.max(s));
            windows.insert(w);
            let n = per.entry(key(r)).or_default().entry(w).or_default();
            *n = n.saturating_add(r.failures);
            if let Some(o) = r.order {
                let n = orders.entry(o).or_default();
                *n = n.saturating_add(r.failures);
            }
        }
        for (s, e) in quiet {
            if let (Some(s), Some(e)) = (parse_time(s), parse_time(e)) {
                windows.insert((s, e.max(s)));
            }
        }
        anyhow::ensure!(
            !windows.is_empty(),
            "nothing to plot: no row or interval carries a window (window_start, window_end)"
        );
        let windows: Vec<Window> = windows.into_iter().collect();
        let mut rates = BTreeMap::new();
        let mut totals = BTreeMap::new();
        for (name, counts) in per {
            #[expect(
                clippy::cast_precision_loss,
                reason = "failure counts per window are far below 2^52"
            )]
            let series: Vec<f64> = windows
                .iter()
                .map(|w| counts.get(w).copied().unwrap_or(0) as f64 / (w.1 - w.0).max(1) as f64)
                .collect();
            totals.insert(name.clone(), counts.values().sum());
            rates.insert(name, series);
        }
        // The four most failing orders, each in the best zone of each node.
        let mut failing: Vec<(u32, u64)> = orders.into_iter().collect();
        failing.sort_by_key(|(o, n)| (std::cmp::Reverse(*n), *o));
        failing.truncate(4);
        let best: BTreeMap<u32, u8> = memory.iter().fold(BTreeMap::new(), |mut m, r| {
            let e = m.entry(r.node).or_default();
            *e = (*e).max(zone_rank(&r.zone));
            m
        });
        let mut cap: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for m in memory {
            if best.get(&m.node) != Some(&zone_rank(&m.zone)) || zone_rank(&m.zone) == 0 {
                continue;
            }
            let free: Vec<u64> = m
                .free_blocks
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            for (order, _) in &failing {
                let o = usize::try_from(*order).unwrap_or(usize::MAX);
                cap.entry(format!("order {order}, node {} {}", m.node, m.zone))
                    .or_default()
                    .push((
                        m.taken.clone(),
                        crate::memory::buddyinfo::order_capacity(&free, o),
                    ));
            }
        }
        for points in cap.values_mut() {
            points.sort_by_key(|(t, _)| parse_time(t));
        }
        Ok(Self {
            by: by.to_owned(),
            windows: windows
                .iter()
                .map(|(s, e)| (time_text(*s), time_text(*e)))
                .collect(),
            rates,
            totals,
            capacity: cap,
        })
    }

    /// The picture as an SVG document.
    ///
    /// # Errors
    /// When drawing fails (it does not on valid numbers).
    pub fn svg(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        self.draw(&mut out)
            .map_err(|e| anyhow::anyhow!("drawing the timeline: {e}"))?;
        let data = serde_json::to_string(self).context("timeline data")?;
        let desc = format!(
            "<desc id=\"pagefail-data\">{}</desc>\n",
            data.replace('&', "&amp;").replace('<', "&lt;")
        );
        // After the opening <svg ...> tag.
        let at = out.find('>').map_or(0, |i| i + 1);
        out.insert_str(at, &format!("\n{desc}"));
        Ok(out)
    }

    fn draw(&self, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
        let first = self
            .windows
            .first()
            .and_then(|w| parse_time(&w.0))
            .unwrap_or(0);
        let last = self
            .windows
            .last()
            .and_then(|w| parse_time(&w.1))
            .unwrap_or(first)
            .max(first + 1);
        let secs = |t: &str| parse_time(t).map_or(0.0, |t| t.saturating_sub(first) as f64);
        #[expect(clippy::cast_precision_loss, reason = "seconds of a timeline")]
        let span = (last - first) as f64;
        let clock = |x: &f64| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "x is a non-negative offset in seconds"
            )]
            let t = first + x.max(0.0) as u64;
            let text = time_text(t);
            text.get(11..19).unwrap_or(&text).to_owned()
        };
        let root = SVGBackend::with_string(out, (1100, 760)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(470);
        let max_rate = self
            .rates
            .values()
            .flatten()
            .copied()
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.1;
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!(
                    "pagefail: failed allocations per second by {}, {} to {} UTC",
                    self.by,
                    time_text(first)
                        .get(..19)
                        .unwrap_or_default()
                        .replace('T', " "),
                    time_text(last).get(11..19).unwrap_or_default()
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .margin_right(40)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..span, 0.0..max_rate)?;
        chart
            .configure_mesh()
            .x_desc("time (UTC)")
            .y_desc("failures/s")
            .x_label_formatter(&clock)
            .draw()?;
        // Each window's rate drawn over the whole window (a step line).
        for (i, (name, rates)) in self.rates.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut points = Vec::with_capacity(rates.len() * 2);
            for ((s, e), r) in self.windows.iter().zip(rates) {
                points.push((secs(s), *r));
                points.push((secs(e), *r));
            }
            let total = self.totals.get(name).copied().unwrap_or(0);
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(format!("{name} ({total} failures)"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;

        let max_cap = self
            .capacity
            .values()
            .flatten()
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        #[expect(clippy::cast_precision_loss, reason = "block counts for a picture")]
        let y_max = (max_cap as f64 * 1.1).max(1.0);
        let mut mem = ChartBuilder::on(&bottom)
            .caption(
                "free blocks that could serve the failing orders (memory snapshots)",
                ("sans-serif", 16),
            )
            .margin(12)
            .margin_right(40)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..span, 0.0..y_max)?;
        mem.configure_mesh()
            .x_desc("time (UTC)")
            .y_desc("free blocks")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_label_formatter(&clock)
            .draw()?;
        if self.capacity.is_empty() {
            bottom.draw(&Text::new(
                "no memory snapshots beside these files (record writes <interval>.memory.csv when atomic failures happen)",
                (90, 150),
                ("sans-serif", 14),
            ))?;
        }
        for (i, (name, points)) in self.capacity.iter().enumerate() {
            let color = Palette99::pick(i + 5).to_rgba();
            #[expect(clippy::cast_precision_loss, reason = "block counts for a picture")]
            let pts: Vec<(f64, f64)> = points.iter().map(|(t, n)| (secs(t), *n as f64)).collect();
            mem.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            mem.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        if !self.capacity.is_empty() {
            mem.configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

/// The window of a totals file (its first data row), if it has one.
#[must_use]
pub fn totals_window(text: &str) -> Option<(String, String)> {
    let row = export::totals::read_csv("totals", text.as_bytes())
        .ok()?
        .into_iter()
        .next()?;
    Some((row.window_start, row.window_end))
}

/// Read the columns the picture needs from a memory CSV
/// ([`export::memory::read_memory_csv`]).
///
/// # Errors
/// When the file is not a memory CSV or a row does not parse.
pub fn read_memory(name: &str, input: impl std::io::Read) -> anyhow::Result<Vec<MemoryRow>> {
    Ok(export::memory::read_memory_csv(name, input)?
        .into_iter()
        .map(|z| MemoryRow {
            taken: z.taken,
            node: z.node,
            zone: z.zone,
            free_blocks: z.free_blocks,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: &str, end: &str, path: &str, order: u32, failures: u64) -> SummaryRow {
        SummaryRow {
            window_start: start.into(),
            window_end: end.into(),
            host: "h".into(),
            kernel: "6.1".into(),
            comm: "c".into(),
            pid: "1".into(),
            cgroup: String::new(),
            context: "task".into(),
            path: path.into(),
            order: Some(order),
            gfp: "0x820".into(),
            gfp_flags: "GFP_ATOMIC".into(),
            atomic: Some(true),
            failures,
            warned: 0,
            first_seen: start.into(),
            last_seen: end.into(),
            top_stack: String::new(),
            cause: "zone".into(),
            outcome: "terminal".into(),
        }
    }

    const T0: &str = "2026-12-04T10:00:00Z";
    const T1: &str = "2026-12-04T10:01:00Z";
    const T2: &str = "2026-12-04T10:02:00Z";
    const T3: &str = "2026-12-04T10:03:00Z";

    fn memory(taken: &str, zone: &str, blocks: &str) -> MemoryRow {
        MemoryRow {
            taken: taken.into(),
            node: 0,
            zone: zone.into(),
            free_blocks: blocks.into(),
        }
    }

    #[test]
    fn rates_per_window_with_quiet_windows_as_zero() {
        let rows = vec![
            row(T0, T1, "tcp", 3, 120),
            row(T0, T1, "tcp", 3, 60),
            row(T0, T1, "none", 0, 6),
            row(T2, T3, "tcp", 3, 30),
        ];
        let mem = vec![
            memory(T1, "Normal", "10 4 2 1 0"),
            memory(T1, "DMA32", "100 50 20 10 5"),
            memory(T3, "Normal", "10 4 0 0 0"),
        ];
        let t = Timeline::build(
            "path",
            &rows,
            |r| r.path.clone(),
            &[(T1.into(), T2.into())],
            &mem,
        )
        .unwrap();
        assert_eq!(t.windows.len(), 3);
        assert_eq!(t.rates["tcp"], vec![3.0, 0.0, 0.5]);
        assert_eq!(t.rates["none"], vec![0.1, 0.0, 0.0]);
        assert_eq!(t.totals["tcp"], 210);
        // Order 3 failed most, then order 0; the Normal zone only.
        assert_eq!(
            t.capacity["order 3, node 0 Normal"],
            vec![(T1.to_owned(), 1), (T3.to_owned(), 0)]
        );
        assert_eq!(
            t.capacity["order 0, node 0 Normal"],
            vec![(T1.to_owned(), 10 + 8 + 8 + 8), (T3.to_owned(), 18)]
        );
        assert!(!t.capacity.keys().any(|k| k.contains("DMA32")));
    }

    #[test]
    fn svg_carries_title_axes_legend_and_its_numbers() {
        let rows = vec![
            row(T0, T1, "tcp", 3, 120),
            row(T1, T2, "bonding+tcp", 2, 30),
        ];
        let mem = vec![memory(T1, "Normal", "10 4 2 1 0")];
        let t = Timeline::build("path", &rows, |r| r.path.clone(), &[], &mem).unwrap();
        let svg = t.svg().unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("valid XML");
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(|s| s.trim().to_owned())
            .collect();
        assert!(
            texts.iter().any(|t| t.starts_with("pagefail: failed allocations per second by path, 2026-12-04 10:00:00 to 10:02:00 UTC")),
            "{texts:?}"
        );
        for must in [
            "failures/s",
            "time (UTC)",
            "free blocks",
            "tcp (120 failures)",
            "bonding+tcp (30 failures)",
            "order 3, node 0 Normal",
            "10:01:00",
        ] {
            assert!(texts.iter().any(|t| t == must), "{must} missing: {texts:?}");
        }
        let desc = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("pagefail-data"))
            .and_then(|n| n.text())
            .expect("data element");
        let back: Timeline = serde_json::from_str(desc).unwrap();
        assert_eq!(back, t);
        // One step line per series: two points per window.
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| {
                n.attribute("points")
                    .is_some_and(|p| p.split_whitespace().count() == 4)
            })
            .count();
        assert!(lines >= 2, "{lines} step lines");
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let mut r = row(T0, T1, "tcp", 3, 1);
        r.window_start = "garbage".into();
        let err = Timeline::build("path", &[r], |r| r.path.clone(), &[], &[]).unwrap_err();
        assert!(err.to_string().contains("nothing to plot"), "{err}");
    }
}
