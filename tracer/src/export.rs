//! Output formats and the files' contract: every writer and reader of the
//! CSV summary (here, with its JSON lines), the totals CSV of `record`
//! ([`totals`]) and the memory CSV ([`memory`]). Columns are only ever
//! appended; readers require the columns a file has always had, in order,
//! and read later ones by name when present (README, "CSV summary").

pub mod memory;
pub mod totals;

use std::{
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The CSV summary columns, in order. This header is a stable contract
/// (README, "CSV summary").
pub const CSV_HEADER: [&str; 20] = [
    "window_start",
    "window_end",
    "host",
    "kernel",
    "comm",
    "pid",
    "cgroup",
    "context",
    "path",
    "order",
    "gfp",
    "gfp_flags",
    "atomic",
    "failures",
    "warned",
    "first_seen",
    "last_seen",
    "top_stack",
    "cause",
    "outcome",
];

/// The columns of summary files written before `cause` and `outcome` were
/// appended: readers accept both.
pub const CSV_HEADER_BEFORE_VERDICT: &[&str] = CSV_HEADER.split_at(CSV_REQUIRED_COLUMNS).0;

/// Whether `found` is a summary header readers accept: the contract's, or
/// the one before the `cause` and `outcome` columns.
#[must_use]
pub fn is_summary_header<S: AsRef<str>>(found: &[S]) -> bool {
    let found: Vec<&str> = found.iter().map(AsRef::as_ref).collect();
    found == CSV_HEADER || found == CSV_HEADER_BEFORE_VERDICT
}
/// The leading columns of [`CSV_HEADER`] that every summary CSV has, in
/// this order; a reader refuses a file without them. Columns appended to the
/// contract later go after them, at the end of [`CSV_HEADER`], and their
/// [`SummaryRow`] fields carry `#[serde(default)]` so that older files (and
/// other tools' files without them) still read.
pub const CSV_REQUIRED_COLUMNS: usize = 18;

/// One row of the CSV summary: failures of one (comm, pid, context, path,
/// order, gfp) in one window. Times are RFC 3339 UTC ([`crate::timestamp`]);
/// empty when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub window_start: String,
    pub window_end: String,
    pub host: String,
    pub kernel: String,
    pub comm: String,
    /// Thread-group id (the userspace pid); empty when unknown.
    pub pid: String,
    /// cgroup path, or id where the path is unknown; empty when unknown.
    pub cgroup: String,
    /// `task`, `softirq`, `hardirq` or `unknown`.
    pub context: String,
    /// Network path labels joined by `+`; `none` when not network.
    pub path: String,
    /// Empty when rows are not grouped by order.
    pub order: Option<u32>,
    /// Hex, like `0x820`.
    pub gfp: String,
    /// Flag names joined by `|`.
    pub gfp_flags: String,
    /// Empty when rows are not grouped by gfp.
    pub atomic: Option<bool>,
    pub failures: u64,
    pub warned: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Most frequent stack of the row, folded: root first, frames joined by `;`.
    pub top_stack: String,
    /// Why the allocator said no: `zone`, `memcg`, `nolock` or `unknown`
    /// (see `verdict`). Empty in files written before the column existed.
    #[serde(default)]
    pub cause: String,
    /// What the failure meant for the caller: `terminal`, `fallback` or
    /// `unknown`. Empty in files written before the column existed.
    #[serde(default)]
    pub outcome: String,
}

/// One JSON object for a whole run (`watch --summary-json`, and beside each
/// of `record`'s totals files): what scripts and incident bots read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// RFC 3339 UTC.
    pub window_start: String,
    pub window_end: String,
    pub host: String,
    pub kernel: String,
    /// Successful allocations by order (the last slot counts that order and
    /// above: key `"15+"`), all processes, before filters.
    pub allocations_by_order: std::collections::BTreeMap<String, u64>,
    /// Failed allocations by order, all processes, before filters.
    pub failures_by_order: std::collections::BTreeMap<String, u64>,
    /// Failures that passed the filters: recorded + lost.
    pub failures: u64,
    /// Recorded failures by cause (`zone`, `memcg`, `nolock`, `unknown`).
    pub failures_by_cause: std::collections::BTreeMap<String, u64>,
    /// Recorded failures by outcome (`terminal`, `fallback`, `unknown`).
    pub failures_by_outcome: std::collections::BTreeMap<String, u64>,
    /// Failures that found the ring buffer full: counted, not attributed.
    pub lost: u64,
    /// Of the lost, those the kernel counted by row, which the rows hold
    /// (without their times); the rest are counted only.
    #[serde(default)]
    pub lost_kept: u64,
    /// Allocation events the kernel skipped (see the README); `null` where
    /// the kernel does not count them.
    pub unseen: Option<u64>,
    /// `warn_alloc` entries; `null` when the probe is not attached.
    pub warn_alloc: Option<u64>,
    /// Recorded failures that reached `warn_alloc` without `__GFP_NOWARN`.
    pub warned: u64,
    /// Packet drops the kernel attributes to memory, by reason (reasons
    /// with none left out); empty until drop counting is enabled.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Whether drop reasons were counted: `memory` or `all` (the reasons
    /// counted), `off`, or `not available: WHY`. Empty in older files.
    #[serde(default)]
    pub drop_reasons: String,
    /// `kfree_skb` events the kernel kept from the drop program (their
    /// reasons unknown); `null` where not counted.
    #[serde(default)]
    pub drops_unseen: Option<u64>,
    /// With `--observe-fallbacks`: failures seen to fall back at their own
    /// call site, by outcome (see `verdict::observed`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks_seen: Option<crate::verdict::observed::FallbacksSeen>,
}

impl RunSummary {
    /// Failures by cause and by outcome, and warned, summed from rows.
    pub fn add_rows(&mut self, rows: &[SummaryRow]) {
        for row in rows {
            let key = |s: &str| {
                if s.is_empty() {
                    "unknown".to_owned()
                } else {
                    s.to_owned()
                }
            };
            *self.failures_by_cause.entry(key(&row.cause)).or_default() += row.failures;
            *self
                .failures_by_outcome
                .entry(key(&row.outcome))
                .or_default() += row.failures;
            self.warned += row.warned;
        }
    }

    /// Counts by order slot, keyed `"0"`, `"1"`, ..., the last `"N+"`;
    /// zero slots left out.
    #[must_use]
    pub fn by_order(counts: &[u64]) -> std::collections::BTreeMap<String, u64> {
        let last = counts.len().saturating_sub(1);
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(order, n)| {
                let key = if order == last {
                    format!("{order}+")
                } else {
                    order.to_string()
                };
                (key, *n)
            })
            .collect()
    }
}

/// Write a run summary as one pretty-printed JSON object.
///
/// # Errors
/// I/O errors of the writer.
pub fn write_summary_json<W: Write>(mut out: W, summary: &RunSummary) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut out, summary)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Write rows as CSV (header first, even with no rows).
///
/// # Errors
/// I/O errors of the writer.
pub fn write_csv<W: Write>(out: W, rows: &[SummaryRow]) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    w.write_record(CSV_HEADER)?;
    for row in rows {
        w.serialize(row)?;
    }
    w.flush()?;
    Ok(())
}

/// Read the rows of one CSV summary; `name` names it in errors.
///
/// The header must start with the required columns
/// ([`CSV_REQUIRED_COLUMNS`]) in order; columns after them are read by name
/// when [`SummaryRow`] knows them and ignored otherwise.
///
/// # Errors
/// When the input cannot be read, its header is not the contract's, or a
/// row does not parse (the error names the line).
pub fn read_csv(name: &str, input: impl Read) -> anyhow::Result<Vec<SummaryRow>> {
    read_rows(
        name,
        input,
        &CSV_HEADER[..CSV_REQUIRED_COLUMNS],
        "a pagefail CSV summary (from `pagefail watch --csv`, `record` or `logs --csv`)",
    )
}

/// Rows of one of pagefail's CSV files whose header must start with
/// `required`; `what` names the kind of file in the error.
///
/// # Errors
/// When the input cannot be read, its header does not start with
/// `required`, or a row does not parse (the error names the line).
pub(crate) fn read_rows<T: serde::de::DeserializeOwned>(
    name: &str,
    input: impl Read,
    required: &[&str],
    what: &str,
) -> anyhow::Result<Vec<T>> {
    let mut reader = csv::Reader::from_reader(input);
    let header = reader
        .headers()
        .with_context(|| format!("{name}: cannot read the CSV header"))?
        .clone();
    let found: Vec<&str> = header.iter().collect();
    if !found.starts_with(required) {
        bail!(
            "{name}: not {what}: the header must start with\n  {}\nbut is\n  {}",
            required.join(","),
            found.join(",")
        );
    }
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize::<T>().enumerate() {
        rows.push(row.with_context(|| format!("{name}: row {} does not parse", i + 2))?);
    }
    Ok(rows)
}

/// [`read_csv`] of a file.
///
/// # Errors
/// When the file cannot be opened, or as [`read_csv`].
pub fn read_csv_file(path: &Path) -> anyhow::Result<Vec<SummaryRow>> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_csv(&path.display().to_string(), io::BufReader::new(file))
}

/// Write rows as JSON lines, one object per row with the CSV's fields.
///
/// # Errors
/// I/O errors of the writer.
pub fn write_json_lines<W: Write>(mut out: W, rows: &[SummaryRow]) -> anyhow::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Write folded stacks with counts (`root;...;leaf count`), the input of
/// flame graph tools. Empty stacks are written as `[unknown]`.
///
/// # Errors
/// I/O errors of the writer.
pub fn write_folded<W: Write>(mut out: W, stacks: &[(String, u64)]) -> anyhow::Result<()> {
    for line in folded_lines(stacks) {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

fn folded_lines(stacks: &[(String, u64)]) -> Vec<String> {
    stacks
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(stack, n)| {
            let stack = if stack.is_empty() { "[unknown]" } else { stack };
            format!("{stack} {n}")
        })
        .collect()
}

/// Write an SVG flame graph of failure stacks.
///
/// # Errors
/// I/O errors of the writer, or no stacks to draw.
pub fn write_flamegraph<W: Write>(
    out: W,
    title: &str,
    stacks: &[(String, u64)],
) -> anyhow::Result<()> {
    let lines = folded_lines(stacks);
    anyhow::ensure!(!lines.is_empty(), "no failure stacks to draw");
    let mut opts = inferno::flamegraph::Options::default();
    title.clone_into(&mut opts.title);
    "failures".clone_into(&mut opts.count_name);
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .context("drawing the flame graph")?;
    Ok(())
}

/// Mode of the files pagefail writes: owner read-write, group read. Failure
/// rows name processes and cgroups, which other users need not see.
pub const FILE_MODE: u32 = 0o640;

/// Temporary names tried before giving up (another writer, or a name
/// planted by someone else, takes one).
const TEMP_TRIES: u32 = 16;

/// Create a new temporary file beside `path`: `O_CREAT | O_EXCL |
/// O_NOFOLLOW`, mode [`FILE_MODE`], so a file or symlink planted at the
/// temporary name is never opened or followed; another name is tried.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> anyhow::Result<(fs::File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut last = None;
    for n in 0..TEMP_TRIES {
        let tmp = dir.join(format!(
            ".{}.tmp.{}.{n}",
            name.to_string_lossy(),
            std::process::id()
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((e, tmp)),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot create {} (is the directory writable?)",
                        tmp.display()
                    )
                });
            }
        }
    }
    let (e, tmp) = last.context("no temporary name tried")?;
    Err(e).with_context(|| {
        format!(
            "cannot create {}: every temporary name is taken",
            tmp.display()
        )
    })
}

/// Write a file atomically: a new temporary file beside it (see
/// [`create_temp`]), fsync, rename. A reader sees the old file or the whole
/// new one, never half of one. The file gets mode [`FILE_MODE`] (less what
/// the umask removes).
///
/// # Errors
/// When the directory is missing or not writable, or the disk is full.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<&fs::File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let (file, tmp) = create_temp(&dir, name)?;
    let result: anyhow::Result<()> = (|| {
        let mut w = io::BufWriter::new(&file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> SummaryRow {
        SummaryRow {
            window_start: "2026-11-22T03:00:00Z".into(),
            window_end: "2026-11-22T03:00:05Z".into(),
            host: "h".into(),
            kernel: "6.18.0".into(),
            comm: "a,b \"c\"".into(),
            pid: "42".into(),
            cgroup: "/x".into(),
            context: "task".into(),
            path: "none".into(),
            order: Some(6),
            gfp: "0x400cc0".into(),
            gfp_flags: "GFP_KERNEL_ACCOUNT".into(),
            atomic: Some(false),
            failures: 3,
            warned: 0,
            first_seen: "2026-11-22T03:00:01Z".into(),
            last_seen: "2026-11-22T03:00:02Z".into(),
            top_stack: "do_syscall_64;dup2;expand_files;alloc_fdtable".into(),
            cause: "memcg".into(),
            outcome: "fallback".into(),
        }
    }

    #[test]
    fn csv_header_is_the_contract_and_rows_round_trip() {
        let mut buf = Vec::new();
        write_csv(&mut buf, &[row()]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "window_start,window_end,host,kernel,comm,pid,cgroup,context,path,order,gfp,gfp_flags,atomic,failures,warned,first_seen,last_seen,top_stack,cause,outcome"
        );
        assert_eq!(read_csv("t.csv", text.as_bytes()).unwrap(), vec![row()]);
    }

    #[test]
    fn reader_takes_appended_columns_and_refuses_foreign_headers() {
        let mut buf = Vec::new();
        write_csv(&mut buf, &[row()]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        // A later version appended columns: the known ones still read.
        let mut lines = text.lines();
        let appended = format!(
            "{},later,more\n{},x,\"y,z\"\n",
            lines.next().unwrap(),
            lines.next().unwrap()
        );
        assert_eq!(
            read_csv("new.csv", appended.as_bytes()).unwrap(),
            vec![row()]
        );
        // Missing, reordered or foreign columns are refused, naming the file.
        let mut swapped = CSV_HEADER.to_vec();
        swapped.swap(0, 1);
        let short = CSV_HEADER[..CSV_REQUIRED_COLUMNS - 1].join(",");
        for (header, why) in [
            (swapped.join(","), "reordered"),
            (short, "a column short"),
            ("a,b,c".to_owned(), "foreign"),
        ] {
            let e = format!(
                "{:#}",
                read_csv("x.csv", format!("{header}\n").as_bytes()).unwrap_err()
            );
            assert!(
                e.contains("x.csv: not a pagefail CSV summary"),
                "{why}: {e}"
            );
            assert!(e.contains("window_start,window_end,host"), "{why}: {e}");
        }
        let e = format!("{:#}", read_csv("e.csv", "".as_bytes()).unwrap_err());
        assert!(e.contains("e.csv"), "{e}");
        let bad = format!(
            "{}\n{}\n",
            CSV_HEADER.join(","),
            text.lines().nth(1).unwrap().replace(",6,", ",six,")
        );
        let e = format!("{:#}", read_csv("b.csv", bad.as_bytes()).unwrap_err());
        assert!(e.contains("b.csv: row 2 does not parse"), "{e}");
    }

    #[test]
    fn files_without_the_cause_and_outcome_columns_still_read() {
        let mut buf = Vec::new();
        write_csv(&mut buf, &[row()]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        // The same file as written before the two columns existed.
        let mut old = String::new();
        for line in text.lines() {
            old.push_str(line.rsplitn(3, ',').nth(2).unwrap());
            old.push('\n');
        }
        assert!(old.lines().next().unwrap().ends_with(",top_stack"));
        let mut r = csv::Reader::from_reader(old.as_bytes());
        let back: Vec<SummaryRow> = r.deserialize().collect::<Result<_, _>>().unwrap();
        let mut expected = row();
        expected.cause.clear();
        expected.outcome.clear();
        assert_eq!(back, vec![expected]);
    }

    #[test]
    fn run_summary_sums_rows_by_cause_and_outcome() {
        let mut s = RunSummary {
            window_start: String::new(),
            window_end: String::new(),
            host: "h".into(),
            kernel: "k".into(),
            allocations_by_order: RunSummary::by_order(&[5, 0, 2, 0, 1]),
            failures_by_order: RunSummary::by_order(&[0, 3]),
            failures: 7,
            failures_by_cause: std::collections::BTreeMap::new(),
            failures_by_outcome: std::collections::BTreeMap::new(),
            lost: 1,
            lost_kept: 1,
            unseen: None,
            warn_alloc: Some(2),
            warned: 0,
            drops: std::collections::BTreeMap::new(),
            drop_reasons: "off".into(),
            drops_unseen: None,
            fallbacks_seen: None,
        };
        let mut terminal = row();
        terminal.outcome = "terminal".into();
        terminal.cause = "zone".into();
        terminal.warned = 2;
        s.add_rows(&[row(), terminal]);
        assert_eq!(s.failures_by_cause["memcg"], 3);
        assert_eq!(s.failures_by_cause["zone"], 3);
        assert_eq!(s.failures_by_outcome["fallback"], 3);
        assert_eq!(s.failures_by_outcome["terminal"], 3);
        assert_eq!(s.warned, 2);
        let keys: Vec<&str> = s.allocations_by_order.keys().map(String::as_str).collect();
        assert_eq!(keys, ["0", "2", "4+"]);
        let mut buf = Vec::new();
        write_summary_json(&mut buf, &s).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["drops"], serde_json::json!({}));
        assert_eq!(v["failures_by_outcome"]["terminal"], 3);
        assert_eq!(v["unseen"], serde_json::Value::Null);
        assert_eq!(v["lost_kept"], 1);
        // A summary written before lost_kept and the drop fields existed reads.
        let mut old = v.clone();
        for k in ["lost_kept", "drop_reasons", "drops_unseen"] {
            old.as_object_mut().unwrap().remove(k);
        }
        let back: RunSummary = serde_json::from_value(old).unwrap();
        assert_eq!((back.lost_kept, back.drop_reasons.as_str()), (0, ""));
    }

    #[test]
    fn json_lines_have_the_csv_fields() {
        let mut buf = Vec::new();
        write_json_lines(&mut buf, &[row(), row()]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 2);
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for key in CSV_HEADER {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["failures"], 3);
    }

    #[test]
    fn folded_lines_carry_counts() {
        let mut buf = Vec::new();
        write_folded(
            &mut buf,
            &[
                ("a;b [bonding]".into(), 3),
                (String::new(), 1),
                ("z".into(), 0),
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "a;b [bonding] 3\n[unknown] 1\n"
        );
    }

    #[test]
    fn flame_graph_is_xml_naming_the_frames() {
        let mut buf = Vec::new();
        let stacks = [
            ("do_syscall_64;expand_files;alloc_fdtable".to_owned(), 5),
            (
                "net_rx_action;bond_start_xmit [bonding];skb_segment".to_owned(),
                2,
            ),
        ];
        write_flamegraph(&mut buf, "failures", &stacks).unwrap();
        let svg = String::from_utf8(buf).unwrap();
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(&svg, opts).expect("valid XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let text: String = doc.descendants().filter_map(|n| n.text()).collect();
        for frame in [
            "alloc_fdtable",
            "expand_files",
            "bond_start_xmit [bonding]",
            "skb_segment",
        ] {
            assert!(text.contains(frame), "{frame} missing from the SVG");
        }
        assert!(write_flamegraph(Vec::new(), "x", &[]).is_err());
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("pagefail-export-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.csv");
        write_atomically(&path, |w| write_csv(w, &[row()])).unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains("alloc_fdtable"));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let err = write_atomically(&dir.join("missing/out.csv"), |_| Ok(())).unwrap_err();
        assert!(format!("{err:#}").contains("cannot create"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_has_mode_0640_and_never_follows_a_planted_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("pagefail-export-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "untouched").unwrap();
        // Links at the first temporary names: one to an existing file, one dangling.
        let pid = std::process::id();
        std::os::unix::fs::symlink(&victim, dir.join(format!(".out.csv.tmp.{pid}.0"))).unwrap();
        std::os::unix::fs::symlink(dir.join("new"), dir.join(format!(".out.csv.tmp.{pid}.1")))
            .unwrap();
        let path = dir.join("out.csv");
        write_atomically(&path, |w| write_csv(w, &[row()])).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!dir.join("new").exists(), "dangling link followed");
        assert!(fs::read_to_string(&path).unwrap().contains("alloc_fdtable"));
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        // The umask may only remove bits.
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & !FILE_MODE, 0, "mode {mode:o}");
        assert_eq!(mode & 0o600, 0o600, "mode {mode:o}");
        assert_eq!(mode & 0o007, 0, "others must not read: {mode:o}");

        // Every temporary name taken: an error, and nothing followed.
        for n in 0..TEMP_TRIES {
            let _ = fs::remove_file(dir.join(format!(".taken.tmp.{pid}.{n}")));
            std::os::unix::fs::symlink(&victim, dir.join(format!(".taken.tmp.{pid}.{n}"))).unwrap();
        }
        let err = write_atomically(&dir.join("taken"), |w| Ok(w.write_all(b"x")?)).unwrap_err();
        assert!(
            format!("{err:#}").contains("every temporary name is taken"),
            "{err:#}"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        fs::remove_dir_all(&dir).unwrap();
    }
}
