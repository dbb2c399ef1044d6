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
    export::{write_atomically, write_csv, write_json_lines},
    logs::{
        Event, Parser, Report,
        analyze::{Analysis, Analyzer},
        summary::{Summary, diagnosis},
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
#[derive(Debug, Clone, clap::Args)]
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
    let year = args.year.unwrap_or_else(this_year);
    let mut analyzer = Analyzer::new(args.kernel.clone());
    let mut summary = Summary::new();
    let mut write_err: Option<io::Error> = None;

    let inputs: Vec<PathBuf> = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    for path in &inputs {
        let reader = open(path)?;
        let mut parser = Parser::new(year);
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
    if args.json {
        write_json_lines(&mut out, &rows).context("cannot write to standard output")?;
    } else if !args.json_reports {
        out.write_all(summary.render().as_bytes())
            .context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    Ok(())
}

/// Open a log: `-` is stdin; gzip is recognized by its magic bytes.
fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
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

fn this_year() -> i32 {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(0));
    rfc3339(us)
        .get(..4)
        .and_then(|y| y.parse().ok())
        .unwrap_or(1970)
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
    fn missing_file_says_what_to_check() {
        let err = run_to(
            &args(vec![PathBuf::from("/nonexistent/kern.log")]),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("cannot open /nonexistent/kern.log (check the path"));
    }
}
