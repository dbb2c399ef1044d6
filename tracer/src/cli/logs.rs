//! `pagefail logs`: summarize the page allocation failure reports the kernel
//! already printed.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    export::memory::MEMORY_CSV_HEADER,
    export::{write_atomically, write_csv, write_json_lines},
    logs::{
        Event, Parser, Report,
        analyze::{Analysis, Analyzer},
        summary::{GroupAdvice, LogAdvice, Summary, diagnosis, render_advice},
    },
    timestamp::rfc3339_us as rfc3339,
};

/// Read page allocation failure reports from kernel logs: dmesg output (with
/// or without stamps, `-T`, `-r`, `-x`), syslog files (`/var/log/kern.log`,
/// `messages`) and `journalctl -k` (short, short-precise, short-iso),
/// kernels 2.6 to 6.x. `.gz` files are read transparently.
///
/// Prints failures by comm, order, gfp and path, the count of failures the
/// kernel's rate limit hid ("callbacks suppressed"), and for each report the
/// largest free block per zone against the requested order.
///
/// Example: pagefail logs /var/log/kern.log /var/log/kern.log.1 /var/log/kern.log.2.gz
///
/// Example: dmesg | pagefail logs
///
/// Example: journalctl -k -o short-iso --since yesterday | pagefail logs --csv failures.csv
///
/// Example: pagefail logs --kernel 3.4.2-1-amd64 --atomic-only old-messages.txt
///
/// Example: dmesg | pagefail logs --advice
///
/// Example: pagefail logs --memory-csv memory.csv /var/log/kern.log
///
/// The summary ends with one verdict per order (fragmentation, exhaustion,
/// memcg limit, expected) judged against the memory each report printed
/// (its Mem-Info), not this machine's; --advice adds the sysctl values.
#[derive(Debug, Clone, clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "clap flags, each independent of the others"
)]
pub struct LogsArgs {
    /// Log files; none or `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Write the CSV summary (the stable column contract) to FILE, atomically.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Print the summary rows as JSON lines instead of the human summary.
    #[arg(long, conflicts_with = "json_reports")]
    pub json: bool,

    /// Print every report as one JSON line (trace, Mem-Info, decoded fields)
    /// instead of the human summary.
    #[arg(long)]
    pub json_reports: bool,

    /// Decode gfp masks with this kernel's table instead of the version each
    /// report names (for logs whose reports lost their `Not tainted` line).
    #[arg(long, value_name = "VERSION")]
    pub kernel: Option<String>,

    /// Only reports of at least this order.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub min_order: u32,

    /// Only atomic requests (could not sleep: `GFP_ATOMIC`, `GFP_NOWAIT`).
    #[arg(long)]
    pub atomic_only: bool,

    /// Print the full advice per order: the verdict, the `vm.watermark_scale_factor`
    /// and `vm.min_free_kbytes` values that would have kept a block of that
    /// order, their cost and the cautions, from each report's own Mem-Info.
    #[arg(long, conflicts_with_all = ["json", "json_reports"])]
    pub advice: bool,

    /// Write the memory each report printed (Mem-Info: per-zone free pages,
    /// watermarks, free blocks per order) to FILE in the memory CSV columns,
    /// one row per zone per report; `taken` is the report's time, or its
    /// line when the log has no wall-clock time. Values a kernel log does not
    /// print are left empty.
    #[arg(long, value_name = "FILE")]
    pub memory_csv: Option<PathBuf>,

    /// Year of syslog stamps, which carry none (default: this year).
    #[arg(long, value_name = "YEAR", value_parser = clap::value_parser!(i32).range(1..=9999))]
    pub year: Option<i32>,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    #[serde(flatten)]
    report: &'a Report,
    time: Option<String>,
    #[serde(flatten)]
    analysis: &'a Analysis,
    diagnosis: Option<String>,
}

/// Run `pagefail logs`.
///
/// # Errors
/// When an input cannot be read or the CSV cannot be written.
pub fn run(args: &LogsArgs) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    run_to(args, &mut out)
}

/// [`run`], printing to `out` instead of standard output.
///
/// # Errors
/// When an input cannot be read or an output cannot be written.
pub fn run_to(args: &LogsArgs, mut out: &mut dyn Write) -> anyhow::Result<()> {
    let (this_year, this_month) = today();
    let year = args.year.unwrap_or(this_year);
    let mut analyzer = Analyzer::new(args.kernel.clone());
    let mut summary = Summary::new();
    let mut advice = LogAdvice::new();
    let mut memory_rows: Vec<MemoryRow> = Vec::new();
    let mut write_err: Option<io::Error> = None;

    let inputs: Vec<PathBuf> = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    for path in &inputs {
        let reader = open(path)?;
        let input = path.display().to_string();
        let mut parser = Parser::new(year);
        if args.year.is_none() {
            parser = parser.not_after(this_month);
        }
        let mut on_event = |ev: Event| {
            let r = match ev {
                Event::Report(r) => r,
                Event::Slab(s) => {
                    let r = s.as_report();
                    let a = analyzer.analyze(&r);
                    if r.order < args.min_order || (args.atomic_only && !a.atomic) {
                        summary.add_filtered();
                    } else {
                        summary.add_slab(&r, &a);
                    }
                    return;
                }
                Event::Suppressed { .. } => return,
            };
            let a = analyzer.analyze(&r);
            if r.order < args.min_order || (args.atomic_only && !a.atomic) {
                summary.add_filtered();
                return;
            }
            if args.json_reports && write_err.is_none() {
                let j = ReportJson {
                    report: &r,
                    time: r.wall_us.map(rfc3339),
                    analysis: &a,
                    diagnosis: r.mem.as_ref().map(|m| diagnosis(r.order, m)),
                };
                if let Err(e) = serde_json::to_writer(&mut out, &j)
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
                {
                    write_err = Some(e);
                }
            }
            summary.add_report(&r, &a);
            advice.add(&r, &a, &input);
            if args.memory_csv.is_some() {
                memory_rows.extend(memory_rows_of(&r, &a, &input));
            }
        };
        parser
            .parse_reader(reader, &mut on_event)
            .with_context(|| format!("cannot read {}", path.display()))?;
        summary.add_stats(parser.stats());
    }
    if let Some(e) = write_err {
        return Err(e).context("cannot write to standard output");
    }

    let rows = summary.rows();
    if let Some(csv) = &args.csv {
        write_atomically(csv, |w| write_csv(w, &rows))?;
    }
    if let Some(path) = &args.memory_csv {
        write_atomically(path, |w| Ok(write_memory_rows(w, &memory_rows)?))?;
    }
    if args.json {
        write_json_lines(&mut out, &rows).context("cannot write to standard output")?;
    } else if !args.json_reports {
        let mut text = summary.render();
        text.push_str(&render_advice(
            &advice.advise(&rows),
            advice.overflow(),
            summary.suppressed(),
            args.advice,
        ));
        out.write_all(text.as_bytes())
            .context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    Ok(())
}

/// What `pagefail check --from LOG` needs from a kernel log.
#[derive(Debug)]
pub struct LogAdviceRead {
    pub reports: u64,
    pub suppressed: u64,
    pub overflow: u64,
    pub groups: Vec<GroupAdvice>,
}

/// Whether `path` starts like the CSV summary header (else it is read as a log).
///
/// # Errors
/// When the file cannot be opened or read.
pub fn is_summary_csv(path: &Path) -> anyhow::Result<bool> {
    // Bytes, not text: a log with a stray invalid byte is still a log.
    let mut first = Vec::new();
    open(path)?
        .take(64 * 1024)
        .read_until(b'\n', &mut first)
        .with_context(|| format!("cannot read {}", path.display()))?;
    // The first columns decide; the CSV owner's reader checks the rest.
    Ok(first.starts_with(crate::export::CSV_HEADER[..3].join(",").as_bytes()))
}

/// Parse a kernel log and judge its failures against the memory each
/// report printed, as `pagefail logs --advice` does.
///
/// # Errors
/// When the log cannot be read.
pub fn advice_of_log(path: &Path, kernel: Option<String>) -> anyhow::Result<LogAdviceRead> {
    let mut analyzer = Analyzer::new(kernel);
    let mut summary = Summary::new();
    let mut advice = LogAdvice::new();
    let input = path.display().to_string();
    let (year, month) = today();
    let mut parser = Parser::new(year).not_after(month);
    parser
        .parse_reader(open(path)?, &mut |ev: Event| {
            let Event::Report(r) = ev else { return };
            let a = analyzer.analyze(&r);
            summary.add_report(&r, &a);
            advice.add(&r, &a, &input);
        })
        .with_context(|| format!("cannot read {}", path.display()))?;
    summary.add_stats(parser.stats());
    Ok(LogAdviceRead {
        reports: summary.reports(),
        suppressed: summary.suppressed(),
        overflow: advice.overflow(),
        groups: advice.advise(&summary.rows()),
    })
}

/// One zone of one report's Mem-Info, in the memory CSV columns
/// ([`MEMORY_CSV_HEADER`]); sizes in pages; `None` (an empty cell) where a
/// kernel log does not tell.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRow {
    pub taken: String,
    pub node: u32,
    pub zone: String,
    /// Empty before about 3.10 (no `managed:` printed).
    pub managed: Option<u64>,
    pub free: u64,
    pub min: u64,
    pub low: u64,
    pub high: u64,
    /// Empty where the kernel does not print `boost:`.
    pub boost: Option<u64>,
    pub free_above_min: i64,
    pub largest_free_order: Option<u32>,
    pub free_blocks: String,
    /// Never in a kernel log.
    pub highatomic_blocks: Option<u64>,
    /// Derived from the lowmem zones' min watermarks (not printed by the kernel).
    pub min_free_kbytes: Option<u64>,
    /// Derived from a zone's low-min gap when it shows, else empty.
    pub watermark_scale_factor: Option<u64>,
}

/// The memory CSV rows of one report: one per zone with watermarks.
fn memory_rows_of(r: &Report, a: &Analysis, input: &str) -> Vec<MemoryRow> {
    let Some(mem) = &r.mem else {
        return Vec::new();
    };
    let taken = r
        .wall_us
        .map_or_else(|| format!("line {} of {input}", r.line), rfc3339);
    let kernel = (!a.kernel.is_empty()).then_some(a.kernel.as_str());
    let Some((snap, rec)) = mem.memory_state(kernel, r.host.as_deref(), &taken) else {
        return Vec::new();
    };
    snap.zones
        .iter()
        .map(|z| {
            let printed = mem
                .zones
                .iter()
                .find(|m| m.node == z.node && m.name == z.zone);
            let buddy = snap.buddy_of(z.node, &z.zone);
            MemoryRow {
                taken: taken.clone(),
                node: z.node,
                zone: z.zone.clone(),
                managed: printed
                    .and_then(|m| m.managed_kb)
                    .map(|kb| kb / snap.page_kb),
                free: z.free,
                min: z.min,
                low: z.low,
                high: z.high,
                boost: z.boost,
                free_above_min: z.free_above_min(),
                largest_free_order: buddy.and_then(crate::memory::BuddyZone::largest_free_order),
                free_blocks: buddy
                    .map(crate::memory::BuddyZone::free_blocks_text)
                    .unwrap_or_default(),
                highatomic_blocks: None,
                min_free_kbytes: rec.min_free_kbytes,
                watermark_scale_factor: rec.watermark_scale_factor,
            }
        })
        .collect()
}

fn write_memory_rows(out: &mut dyn Write, rows: &[MemoryRow]) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    w.write_record(MEMORY_CSV_HEADER)?;
    for row in rows {
        w.serialize(row)?;
    }
    w.flush()
}

/// Open a log: `-` is stdin; gzip is recognized by its magic bytes.
pub fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    let raw: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| {
            format!(
                "cannot open {} (check the path; /var/log files may need sudo)",
                path.display()
            )
        })?)
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let magic = buffered
        .fill_buf()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(buffered),
        )))
    } else {
        Ok(Box::new(buffered))
    }
}

/// This year, and this month (0-11), in UTC.
fn today() -> (i32, u32) {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(0));
    let stamp = rfc3339(us);
    let year = stamp.get(..4).and_then(|y| y.parse().ok()).unwrap_or(1970);
    let month = stamp
        .get(5..7)
        .and_then(|m| m.parse::<u32>().ok())
        .map_or(0, |m| m.saturating_sub(1));
    (year, month)
}

#[cfg(test)]
mod tests {
    use std::{fs, io::Write as _};

    use super::*;

    const REAL_2: &str = include_str!("../../../tests/fixtures/logs/dmesg-02-reuseport-listen.txt");
    const V510: &str = include_str!("../../../tests/fixtures/logs/v5.10-journal-short-iso.txt");

    fn args(files: Vec<PathBuf>) -> LogsArgs {
        LogsArgs {
            files,
            csv: None,
            json: false,
            json_reports: false,
            kernel: None,
            min_order: 0,
            atomic_only: false,
            advice: false,
            memory_csv: None,
            year: Some(2026),
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pagefail-logs-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn gzip_csv_and_filters_end_to_end() {
        let dir = tmpdir("e2e");
        let gz = dir.join("kern.log.2.gz");
        let mut enc = flate2::write::GzEncoder::new(
            fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(REAL_2.as_bytes()).unwrap();
        enc.finish().unwrap();
        let plain = dir.join("journal.txt");
        fs::write(&plain, V510).unwrap();

        let mut a = args(vec![gz.clone(), plain.clone()]);
        a.csv = Some(dir.join("out.csv"));
        let mut out = Vec::new();
        run_to(&a, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("2 page allocation failure reports (1 atomic, 0 partial)"),
            "{text}"
        );
        assert!(text.contains("suppressed: 11955 more failures"), "{text}");
        let csv = fs::read_to_string(dir.join("out.csv")).unwrap();
        let rows = crate::export::read_csv("out.csv", csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].comm.as_str(), rows[0].order, rows[0].gfp.as_str()),
            ("nettool", Some(3), "0x40b20")
        );
        assert_eq!(rows[0].atomic, Some(true));
        assert_eq!(rows[0].context, "task");
        assert_eq!(rows[1].comm, "postgres");
        assert_eq!(rows[1].atomic, Some(false));

        // --atomic-only --json: only the nettool row, as JSON lines.
        let mut a = args(vec![gz, plain]);
        a.atomic_only = true;
        a.json = true;
        let mut out = Vec::new();
        run_to(&a, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["comm"], "nettool");
        assert_eq!(v["failures"], 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn min_order_and_json_reports() {
        let dir = tmpdir("min");
        let f = dir.join("dmesg.txt");
        fs::write(&f, format!("{REAL_2}{V510}")).unwrap();
        let mut a = args(vec![f]);
        a.min_order = 4;
        a.json_reports = true;
        let mut out = Vec::new();
        run_to(&a, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["comm"], "postgres");
        assert_eq!(v["order"], 4);
        assert_eq!(v["time"], "2026-11-22T03:45:17Z");
        assert_eq!(v["mem"]["free_pages"], 18231);
        assert!(
            v["diagnosis"]
                .as_str()
                .unwrap()
                .starts_with("order-4 request;")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_csv_has_each_reports_zones_and_leaves_the_unknown_empty() {
        let dir = tmpdir("memcsv");
        let old = dir.join("lkml.txt");
        fs::write(
            &old,
            include_str!("../../../tests/fixtures/logs/meminfo/v2.6.28-lkml-bug14403.txt"),
        )
        .unwrap();
        let syslog = dir.join("kern.log");
        fs::write(
            &syslog,
            include_str!("../../../tests/fixtures/logs/v3.4-kern.log"),
        )
        .unwrap();
        let guest = dir.join("dmesg.txt");
        fs::write(
            &guest,
            include_str!("../../../tests/fixtures/logs/dmesg-01-neigh_hash-tcp_connect-bond0.txt"),
        )
        .unwrap();
        let mut a = args(vec![old.clone(), syslog, guest]);
        a.memory_csv = Some(dir.join("memory.csv"));
        run_to(&a, &mut Vec::new()).unwrap();
        let text = fs::read_to_string(dir.join("memory.csv")).unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(r.headers().unwrap(), MEMORY_CSV_HEADER.as_slice());
        let rows: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>().unwrap();
        let get = |taken: &str, zone: &str| {
            rows.iter()
                .find(|row| row[0].starts_with(taken) && &row[2] == zone)
                .unwrap_or_else(|| panic!("no {zone} row taken {taken}:\n{text}"))
                .clone()
        };
        // 2.6.28, no wall-clock time: the report's line; no managed, boost or factor printed.
        let dma32 = get("line 1 of ", "DMA32");
        assert!(dma32[0].ends_with("lkml.txt"), "{dma32:?}");
        let cells: Vec<&str> = dma32.iter().collect();
        assert_eq!(
            cells[1..],
            [
                "0",
                "DMA32",
                "",
                "532",
                "1428",
                "1785",
                "2142",
                "",
                "-896",
                "8",
                "8 6 0 4 8 1 1 0 1 0 0",
                "",
                "5736",
                ""
            ]
        );
        // 3.4 syslog: the report's time.
        let normal = get("2026-11-22T03:00:05", "Normal");
        assert_eq!(&normal[4], &(22176 / 4).to_string());
        // 6.1: boost and managed printed.
        assert_eq!(rows.iter().filter(|r| &r[2] == "DMA32").count(), 3);
        let guest_dma32 = rows
            .iter()
            .find(|r| r[0].ends_with("dmesg.txt") && &r[2] == "DMA32")
            .unwrap();
        assert_eq!((&guest_dma32[3], &guest_dma32[8]), ("52007", "981"));
        assert_eq!(&guest_dma32[13], "1872");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_says_what_to_check() {
        let err = run_to(
            &args(vec![PathBuf::from("/nonexistent/kern.log")]),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("cannot open /nonexistent/kern.log (check the path"));
    }
}
