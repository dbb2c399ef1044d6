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
        prefix::rfc3339,
        summary::{Summary, diagnosis},
    },
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
/// Example: dmesg | pagefail logs
/// Example: journalctl -k -o short-iso --since yesterday | pagefail logs --csv failures.csv
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

    /// Only atomic requests (could not sleep: GFP_ATOMIC, GFP_NOWAIT).
    #[arg(long)]
    pub atomic_only: bool,

    /// Year of syslog stamps, which carry none (default: this year).
    #[arg(long, value_name = "YEAR")]
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
pub fn run(args: LogsArgs) -> anyhow::Result<()> {
    let year = args.year.unwrap_or_else(this_year);
    let mut analyzer = Analyzer::new(args.kernel.clone());
    let mut summary = Summary::new();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
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
            let Event::Report(r) = ev else { return };
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
