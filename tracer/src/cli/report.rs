//! `pagefail report`: merge and re-summarize CSV summaries (from several
//! hosts, intervals or runs) by any keys.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    cli::common::{is_broken_pipe, rows_table},
    export::{self, SummaryRow},
    timestamp,
};

/// Columns rows can be merged by.
const KEYS: [&str; 10] = [
    "host", "kernel", "comm", "pid", "cgroup", "context", "path", "order", "gfp", "stack",
];

/// Merge CSV summaries and summarize them again.
///
/// Reads files written by `watch --csv`, `record` or `logs --csv` (the CSV
/// contract; `-` is stdin), groups their rows by `--by` and adds up failures
/// and warnings. Columns that are not keys are kept where all merged rows
/// agree and left empty where they differ.
///
/// Examples:
///   pagefail report host1.csv host2.csv
///   pagefail report --by host,path record/*.csv
///   pagefail report --by comm --csv merged.csv a.csv b.csv
///   pagefail report --plot timeline.svg /var/lib/pagefail/pagefail-*.csv
///   pagefail report --plot by-comm.svg --plot-by comm record/*.csv
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReportArgs {
    /// CSV summary files (`-`: stdin).
    #[arg(required = true, value_name = "FILE.csv")]
    pub files: Vec<PathBuf>,
    /// Merge rows by these columns: any of host,kernel,comm,pid,cgroup,context,path,order,gfp,stack.
    #[arg(long, default_value = "comm,pid,context,path,order,gfp")]
    pub by: Keys,
    /// Write the merged rows as CSV to this file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Print the merged rows as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Draw a timeline SVG: failures per second per window (record's
    /// intervals) by `--plot-by`, and the free blocks of the failing orders
    /// from the `.memory.csv` files beside the inputs.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The column that splits the timeline into series (one of the --by keys).
    #[arg(long, value_name = "KEY", default_value = "path", value_parser = parse_plot_key)]
    pub plot_by: String,
}

fn parse_plot_key(s: &str) -> Result<String, String> {
    let mut keys = parse_keys(s)?;
    if keys.len() != 1 {
        return Err("give one column to split the timeline by".to_owned());
    }
    Ok(keys.remove(0))
}

/// A sibling of an interval file: `X.csv` -> `X.<kind>.csv`.
fn sibling(path: &Path, kind: &str) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".csv")?;
    Some(path.with_file_name(format!("{stem}.{kind}.csv")))
}

/// Write the timeline of `rows` (read from `files`) to `out`.
fn plot(args: &ReportArgs, rows: &[SummaryRow], out: &Path) -> anyhow::Result<()> {
    let mut quiet = Vec::new();
    let mut memory = Vec::new();
    for f in &args.files {
        if let Some(t) = sibling(f, "totals")
            && let Ok(text) = std::fs::read_to_string(&t)
            && let Some(w) = crate::plot::totals_window(&text)
        {
            quiet.push(w);
        }
        if let Some(m) = sibling(f, "memory")
            && m.exists()
        {
            let name = m.display().to_string();
            memory.extend(crate::plot::read_memory(&name, open(&m)?)?);
        }
    }
    let by = std::slice::from_ref(&args.plot_by);
    let timeline = crate::plot::Timeline::build(
        &args.plot_by,
        rows,
        |r| key_of(r, by).join(","),
        &quiet,
        &memory,
    )?;
    let svg = timeline.svg()?;
    export::write_atomically(out, |w| {
        io::Write::write_all(w, svg.as_bytes())?;
        Ok(())
    })?;
    crate::note!(
        "pagefail: wrote a timeline of {} windows and {} series to {}",
        timeline.windows.len(),
        timeline.rates.len(),
        out.display()
    );
    Ok(())
}

/// The `--by` columns of `report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys(pub Vec<String>);

impl std::str::FromStr for Keys {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_keys(s).map(Self)
    }
}

fn parse_keys(s: &str) -> Result<Vec<String>, String> {
    let keys: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(format!("give at least one key: {}", KEYS.join(",")));
    }
    if let Some(bad) = keys.iter().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{bad}`: use any of {}",
            KEYS.join(",")
        ));
    }
    Ok(keys)
}

fn key_of(row: &SummaryRow, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| match k.as_str() {
            "host" => row.host.clone(),
            "kernel" => row.kernel.clone(),
            "comm" => row.comm.clone(),
            "pid" => row.pid.clone(),
            "cgroup" => row.cgroup.clone(),
            "context" => row.context.clone(),
            "path" => row.path.clone(),
            "order" => row.order.map(|o| o.to_string()).unwrap_or_default(),
            "gfp" => row.gfp.clone(),
            _ => row.top_stack.clone(),
        })
        .collect()
}

fn earliest(a: &str, b: &str) -> String {
    match (timestamp::parse(a), timestamp::parse(b)) {
        (Some(x), Some(y)) => timestamp::rfc3339(x.min(y)),
        (Some(_), None) => a.to_owned(),
        (None, _) => b.to_owned(),
    }
}

fn latest(a: &str, b: &str) -> String {
    match (timestamp::parse(a), timestamp::parse(b)) {
        (Some(x), Some(y)) => timestamp::rfc3339(x.max(y)),
        (Some(_), None) => a.to_owned(),
        (None, _) => b.to_owned(),
    }
}

fn agree(into: &mut String, other: &str) {
    if into != other {
        into.clear();
    }
}

/// Merge rows by the key columns; most failures first.
#[must_use]
pub fn merge(rows: impl IntoIterator<Item = SummaryRow>, keys: &[String]) -> Vec<SummaryRow> {
    struct Acc {
        row: SummaryRow,
        top_weight: u64,
    }
    let mut groups: HashMap<Vec<String>, Acc> = HashMap::new();
    let mut order: Vec<Vec<String>> = Vec::new();
    for row in rows {
        let key = key_of(&row, keys);
        match groups.get_mut(&key) {
            None => {
                order.push(key.clone());
                let top_weight = row.failures;
                groups.insert(key, Acc { row, top_weight });
            }
            Some(acc) => {
                let m = &mut acc.row;
                m.window_start = earliest(&m.window_start, &row.window_start);
                m.window_end = latest(&m.window_end, &row.window_end);
                m.first_seen = earliest(&m.first_seen, &row.first_seen);
                m.last_seen = latest(&m.last_seen, &row.last_seen);
                for (into, other) in [
                    (&mut m.host, &row.host),
                    (&mut m.kernel, &row.kernel),
                    (&mut m.comm, &row.comm),
                    (&mut m.pid, &row.pid),
                    (&mut m.cgroup, &row.cgroup),
                    (&mut m.context, &row.context),
                    (&mut m.path, &row.path),
                    (&mut m.gfp, &row.gfp),
                    (&mut m.gfp_flags, &row.gfp_flags),
                ] {
                    agree(into, other);
                }
                if m.order != row.order {
                    m.order = None;
                }
                if m.atomic != row.atomic {
                    m.atomic = None;
                }
                // Saturating: the counts come from files anyone may have written.
                m.failures = m.failures.saturating_add(row.failures);
                m.warned = m.warned.saturating_add(row.warned);
                if row.failures > acc.top_weight {
                    acc.top_weight = row.failures;
                    m.top_stack = row.top_stack;
                }
            }
        }
    }
    let mut out: Vec<SummaryRow> = order
        .into_iter()
        .filter_map(|k| groups.remove(&k).map(|a| a.row))
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.failures));
    out
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(f))
}

/// Run `pagefail report`.
///
/// # Errors
/// Unreadable or malformed input, unwritable output.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        all.extend(export::read_csv(&name, open(path)?)?);
    }
    if let Some(out) = &args.plot {
        plot(args, &all, out)?;
    }
    let input_rows = all.len();
    let total = all.iter().fold(0u64, |t, r| t.saturating_add(r.failures));
    let merged = merge(all, &args.by.0);
    if args.json {
        if let Err(e) = export::write_json_lines(io::stdout().lock(), &merged)
            && !is_broken_pipe(&e)
        {
            return Err(e);
        }
    } else {
        let text = format!(
            "{} rows from {} files ({input_rows} rows in), {total} failures, merged by {}\n{}",
            merged.len(),
            args.files.len(),
            args.by.0.join(","),
            rows_table(&merged)
        );
        let _ = io::Write::write_all(&mut io::stdout().lock(), text.as_bytes());
    }
    if let Some(path) = &args.csv {
        export::write_atomically(path, |w| export::write_csv(w, &merged))?;
        crate::note!(
            "pagefail: wrote {} rows to {}",
            merged.len(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::CSV_HEADER;
    use crate::{
        aggregate::{Aggregator, Window, tests::test_aggregator, tests::test_event},
        export::write_csv,
    };

    fn to_csv(agg: &Aggregator) -> Vec<u8> {
        let mut buf = Vec::new();
        write_csv(&mut buf, &agg.summary_rows(&Window::starting_now())).unwrap();
        buf
    }

    fn keys(s: &str) -> Vec<String> {
        parse_keys(s).unwrap()
    }

    #[test]
    fn merging_two_runs_equals_one_run_over_all_events() {
        let events: Vec<_> = (0..40u32)
            .map(|i| {
                test_event(
                    if i % 3 == 0 { "a" } else { "b" },
                    i % 4,
                    1 + i % 3,
                    if i % 2 == 0 { 0x820 } else { 0x2820 },
                    (i % 2) as usize,
                )
            })
            .collect();
        let (mut first, mut second, mut whole) =
            (test_aggregator(), test_aggregator(), test_aggregator());
        for (i, ev) in events.iter().enumerate() {
            whole.add(ev);
            if i < 17 {
                first.add(ev)
            } else {
                second.add(ev)
            };
        }
        let mut rows = export::read_csv("first", to_csv(&first).as_slice()).unwrap();
        rows.extend(export::read_csv("second", to_csv(&second).as_slice()).unwrap());
        let by = keys("comm,pid,context,path,order,gfp");
        let merged = merge(rows, &by);
        let single = merge(
            export::read_csv("whole", to_csv(&whole).as_slice()).unwrap(),
            &by,
        );
        let as_map = |rows: &[SummaryRow]| -> HashMap<Vec<String>, (u64, u64)> {
            rows.iter()
                .map(|r| (key_of(r, &by), (r.failures, r.warned)))
                .collect()
        };
        assert_eq!(as_map(&merged), as_map(&single));
        assert_eq!(merged.iter().map(|r| r.failures).sum::<u64>(), 40);
        // Coarser keys: totals per comm.
        let per_comm = merge(merged, &keys("comm"));
        let a = per_comm.iter().find(|r| r.comm == "a").unwrap();
        assert_eq!(a.failures, 14);
        assert_eq!(a.pid, "", "pids differ, so the column is blank");
    }

    #[test]
    fn wrong_headers_are_refused_with_both_headers_shown() {
        let err = export::read_csv("x.csv", "a,b,c\n1,2,3\n".as_bytes()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("x.csv: not a pagefail CSV summary"), "{msg}");
        assert!(msg.contains("window_start,window_end"), "{msg}");
        assert!(export::read_csv("empty.csv", "".as_bytes()).is_err());
    }

    #[test]
    fn bad_rows_name_their_line() {
        let text = format!(
            "{}\n{}\n",
            CSV_HEADER.join(","),
            "a,b,h,k,c,1,/,task,none,NaN,0x1,X,true,1,0,a,b,s"
        );
        let err = export::read_csv("bad.csv", text.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("row 2"), "{err:#}");
    }

    #[test]
    fn keys_are_validated() {
        assert!(parse_keys("host,zone").unwrap_err().contains("zone"));
        assert!(parse_keys(",").is_err());
        assert_eq!(parse_keys("host, path").unwrap(), ["host", "path"]);
    }

    #[test]
    fn times_merge_to_the_outer_window() {
        assert_eq!(
            earliest("2026-11-22T03:00:01.5Z", "2026-11-22T03:00:01Z"),
            "2026-11-22T03:00:01Z"
        );
        assert_eq!(
            latest("2026-11-22T03:00:01.5Z", "2026-11-22T03:00:01Z"),
            "2026-11-22T03:00:01.500000Z"
        );
        assert_eq!(
            latest("2026-11-22T03:00:01Z", "2026-11-22T04:00:00+01:00"),
            "2026-11-22T03:00:01Z"
        );
        assert_eq!(earliest("", "2026-11-22T03:00:01Z"), "2026-11-22T03:00:01Z");
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let line = |comm: &str| {
            format!(
                "S,E,h,k,{comm},1,/,task,none,3,0x820,GFP_ATOMIC,true,{},{},a,b,s",
                u64::MAX,
                u64::MAX - 1
            )
        };
        let text = format!("{}\n{}\n{}\n", CSV_HEADER.join(","), line("a"), line("a"));
        let rows = export::read_csv("big.csv", text.as_bytes()).unwrap();
        let merged = merge(rows, &keys("comm"));
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].failures, u64::MAX);
        assert_eq!(merged[0].warned, u64::MAX);
    }
}
