//! `pagefail check`: what this kernel supports and what pagefail will use,
//! the memory state now, and advice for observed failures.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::logs::LogAdviceRead;
use crate::{
    export::{self, CSV_HEADER, SummaryRow},
    logs::summary::{GroupAdvice, render_advice},
    memory::{
        NetDrops, Snapshot, SnapshotSummary, VmStat,
        advice::{self, Advice},
        pages_text,
    },
    probe::{
        AttachStyle, KernelFeatures, ProbeConfig, Tracer, WarnAllocProbe, caps,
        support::{attach_plan, find_tracefs},
    },
};

/// Say what this kernel supports, show the memory state, and explain failures.
///
/// Lists each kernel feature pagefail uses (BTF, raw/BTF/classic tracepoint,
/// kprobes, ring buffer, lockdown, capabilities, tracefs) as OK or NO with its
/// consequence; as root, each attach style is verified by loading and
/// attaching it. Then the zones' free blocks per order and watermarks. With
/// `--from` or `--sample`, says whether the failures come from
/// fragmentation, exhaustion or a memory cgroup limit, and which
/// `min_free_kbytes` / `watermark_scale_factor` values would have kept a reserve.
///
/// `--from` takes a CSV summary of this machine (judged against its memory
/// now) or a kernel log (judged against the memory each report printed, at
/// the failure). A CSV from another host or kernel is not judged against
/// this machine's memory: check says so in one line.
///
/// Examples:
///   sudo pagefail check
///   sudo pagefail check --sample 10s
///   pagefail check --from failures.csv --no-probe
///   pagefail check --from /var/log/kern.log --no-probe
///   sudo pagefail check --json --from failures.csv
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "clap flags, each independent of the others"
)]
pub struct CheckArgs {
    /// Verify attach styles by loading and attaching them (default when the
    /// process may load BPF programs).
    #[arg(long, overrides_with = "no_probe")]
    pub probe: bool,
    /// Do not load anything: report what the kernel advertises only.
    #[arg(long)]
    pub no_probe: bool,
    /// Explain the failures of this CSV summary (`pagefail watch --csv`,
    /// `pagefail logs --csv`) or of this kernel log (dmesg, syslog, journal).
    #[arg(long, value_name = "FILE", conflicts_with = "sample")]
    pub from: Option<PathBuf>,
    /// With --from LOG: decode gfp masks with this kernel's table when the
    /// reports lost their `Not tainted` line.
    #[arg(long, value_name = "VERSION", requires = "from")]
    pub kernel: Option<String>,
    /// Trace failures live for this long (e.g. 10s), then explain them.
    #[arg(long, value_name = "DURATION", value_parser = crate::session::parse_duration)]
    pub sample: Option<Duration>,
    /// With --sample: also failures of requests that may sleep (default: atomic only).
    #[arg(long, requires = "sample")]
    pub all: bool,
    /// Print JSON for tools instead of text.
    #[arg(long)]
    pub json: bool,
}

/// OK, NO or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    No,
    Unknown,
}

impl Status {
    fn of(ok: bool) -> Self {
        if ok { Self::Ok } else { Self::No }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::No => "NO",
            Self::Unknown => "??",
        }
    }
}

/// One line of the support table.
#[derive(Debug, Clone, Serialize)]
pub struct SupportLine {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub consequence: String,
}

fn line(name: &str, status: Status, detail: String, consequence: &str) -> SupportLine {
    SupportLine {
        name: name.to_owned(),
        status,
        detail,
        consequence: consequence.to_owned(),
    }
}

/// The lockdown mode: the bracketed word of `/sys/kernel/security/lockdown`.
fn lockdown_mode(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = text[start..].find(']')?;
    Some(&text[start + 1..start + end])
}

/// Per attach style, Ok(kprobe state) or the error of trying it.
type Probes = [(AttachStyle, Result<WarnAllocProbe, String>)];

/// The support table. `probed`: per attach style, Ok(kprobe state) or the error.
fn support_lines(
    f: &KernelFeatures,
    tracefs_before: Option<&str>,
    eff: Option<u64>,
    probed: Option<&Probes>,
) -> Vec<SupportLine> {
    let mut out = vec![version_line(f), btf_line(f), ringbuf_line(f, probed)];
    out.extend(attach_lines(f, probed));
    out.extend(warn_alloc_lines(f, probed));
    out.push(tracefs_line(tracefs_before));
    out.push(lockdown_line());
    out.extend(cap_lines(eff));
    out
}

/// The kernel release: 5.8 or later has the ring buffer and `CAP_BPF`.
fn version_line(f: &KernelFeatures) -> SupportLine {
    let v = f.version;
    line(
        "kernel version",
        Status::of(v.is_some_and(|v| v.at_least(5, 8))),
        f.release.clone(),
        if v.is_some_and(|v| v.at_least(5, 8)) {
            "5.8 or later: ring buffer, CAP_BPF/CAP_PERFMON"
        } else {
            "before 5.8: no BPF ring buffer, pagefail cannot trace here; use `pagefail logs`"
        },
    )
}

/// Kernel BTF, needed by `tp_btf` only.
fn btf_line(f: &KernelFeatures) -> SupportLine {
    line(
        "BTF",
        Status::of(f.btf),
        "/sys/kernel/btf/vmlinux".to_owned(),
        if f.btf {
            "tp_btf attach possible"
        } else {
            "no tp_btf; the raw tracepoint needs no BTF"
        },
    )
}

/// The BPF ring buffer: verified when a probe attached, else by version.
fn ringbuf_line(f: &KernelFeatures, probed: Option<&Probes>) -> SupportLine {
    let any_attached = probed.is_some_and(|p| p.iter().any(|(_, r)| r.is_ok()));
    line(
        "ring buffer",
        Status::of(f.has_ringbuf()),
        if any_attached {
            "created and attached (verified)".to_owned()
        } else {
            "needs 5.8 (by version)".to_owned()
        },
        if f.has_ringbuf() {
            "failure records reach userspace; losses are counted"
        } else {
            "pagefail cannot trace; use `pagefail logs`"
        },
    )
}

/// One line per attach style: probed, planned or not offered, and whether
/// pagefail will use it.
fn attach_lines(f: &KernelFeatures, probed: Option<&Probes>) -> Vec<SupportLine> {
    let plan = attach_plan(f, None);
    let first_ok = probed.and_then(|p| p.iter().find(|(_, r)| r.is_ok()).map(|(s, _)| *s));
    let mut out = Vec::new();
    for (style, name) in [
        (AttachStyle::Raw, "raw tracepoint"),
        (AttachStyle::Btf, "BTF tracepoint"),
        (AttachStyle::Classic, "classic tracepoint"),
    ] {
        let chosen = first_ok == Some(style);
        let (status, detail) = match probed.and_then(|p| p.iter().find(|(s, _)| *s == style)) {
            Some((_, Ok(_))) => (
                Status::Ok,
                format!("{style}: loaded and attached (verified)"),
            ),
            Some((_, Err(e))) => (Status::No, format!("{style}: {e}")),
            None if plan.contains(&style) => (
                Status::Unknown,
                format!("{style}: planned, not verified (run as root, or --probe)"),
            ),
            None => (Status::No, format!("{style}: not offered by this kernel")),
        };
        let consequence = match (status, chosen) {
            (Status::Ok, true) => "pagefail will use this",
            (Status::Ok, false) => "fallback, not needed",
            (Status::No, _) => "not used",
            _ => "used if it attaches",
        };
        out.push(line(name, status, detail, consequence));
    }
    out
}

/// The `warn_alloc` kprobe, and the failure-only mode that needs it.
fn warn_alloc_lines(f: &KernelFeatures, probed: Option<&Probes>) -> [SupportLine; 2] {
    let warn = probed.and_then(|p| p.iter().find_map(|(_, r)| r.as_ref().ok()));
    let (status, detail) = match warn {
        Some(WarnAllocProbe::Attached) => (
            Status::Ok,
            "warn_alloc kprobe attached (verified)".to_owned(),
        ),
        Some(WarnAllocProbe::Unavailable(why)) => (Status::No, why.clone()),
        _ => (
            Status::of(f.kprobes),
            if f.kprobes {
                "kprobe PMU present".to_owned()
            } else {
                "no kprobe PMU or kprobe_events (CONFIG_KPROBES off)".to_owned()
            },
        ),
    };
    [
        line(
            "kprobes (warn_alloc)",
            status,
            detail,
            if status == Status::Ok {
                "failures the kernel warned about are marked `warned`"
            } else {
                "failures are still counted; `warned` stays 0"
            },
        ),
        line(
            "failure-only mode (--failures-only)",
            status,
            if status == Status::Ok {
                "the warn_alloc kprobe alone: successful allocations cost nothing; blind to \
                 memcg charge failures and lock-free tries, no allocation totals"
                    .to_owned()
            } else {
                "needs the warn_alloc kprobe".to_owned()
            },
            if status == Status::Ok {
                "available; the default stays the exact tracepoint"
            } else {
                "not available on this kernel"
            },
        ),
    ]
}

/// Whether tracefs was mounted before pagefail looked.
fn tracefs_line(tracefs_before: Option<&str>) -> SupportLine {
    line(
        "tracefs",
        Status::of(tracefs_before.is_some()),
        tracefs_before.map_or_else(|| "not mounted".to_owned(), |t| format!("mounted at {t}")),
        if tracefs_before.is_some() {
            "gfp names and record layout read from the format file"
        } else {
            "pagefail mounts it at /sys/kernel/tracing when it starts (root needed)"
        },
    )
}

/// The lockdown mode and what it refuses.
fn lockdown_line() -> SupportLine {
    let lockdown_path = Path::new("/sys/kernel/security/lockdown");
    let (status, detail, consequence) = match fs::read_to_string(lockdown_path) {
        Ok(t) => match lockdown_mode(&t) {
            Some("none") => (Status::Ok, "none".to_owned(), "no restriction on tracing"),
            Some("integrity") => (
                Status::Ok,
                "integrity".to_owned(),
                "tracepoints and kprobes allowed; BPF writes to user memory refused",
            ),
            Some(m) => (
                Status::No,
                m.to_owned(),
                "kprobes, tracefs and BPF kernel reads refused: pagefail cannot trace; use `pagefail logs`",
            ),
            None => (Status::Unknown, t.trim().to_owned(), "cannot tell"),
        },
        Err(_) => (
            Status::Unknown,
            format!("{} absent", lockdown_path.display()),
            "unknown (securityfs not mounted or no lockdown LSM); attaching decides",
        ),
    };
    line("lockdown", status, detail, consequence)
}

/// One line per capability pagefail uses, from the effective set `eff`.
fn cap_lines(eff: Option<u64>) -> Vec<SupportLine> {
    let names = eff.map(caps::listed);
    let mut out = Vec::new();
    for (i, (cap, why)) in [
        ("CAP_BPF", "load BPF programs and maps (5.8+)"),
        ("CAP_PERFMON", "attach to tracepoints and kprobes (5.8+)"),
        (
            "CAP_SYS_ADMIN",
            "replaces CAP_BPF + CAP_PERFMON; needed before 5.8",
        ),
        (
            "CAP_SYSLOG",
            "read kernel addresses in /proc/kallsyms: symbolized stacks",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let status = names.map_or(Status::Unknown, |n| Status::of(n[i].1));
        out.push(line(
            cap,
            status,
            if status == Status::Ok {
                "present".to_owned()
            } else {
                "missing".to_owned()
            },
            why,
        ));
    }
    out
}

/// Where the `cgroup` column comes from on this host (v2, v1 memory
/// controller read by the kernel or from /proc, or nothing).
fn cgroup_line(source: &crate::cgroup::CgroupSource) -> SupportLine {
    use crate::cgroup::CgroupSource;
    let (status, consequence) = match source {
        CgroupSource::Unified { .. } | CgroupSource::MemcgKernel { .. } => {
            (Status::Ok, "rows name the cgroup of the failing task")
        }
        CgroupSource::MemcgProc { .. } => (
            Status::Ok,
            "rows name the memory cgroup of the process at first sight (short-lived processes: empty)",
        ),
        CgroupSource::Unknown => (Status::No, "the cgroup column stays empty"),
    };
    line(
        "cgroup attribution",
        status,
        format!("{}: {source}", source.method()),
        consequence,
    )
}

/// Whether the kernel names packet drop reasons (`skb:kfree_skb`, 5.17+),
/// read from the tracepoint's format file.
fn drop_reasons_line(tracefs: Option<&str>) -> SupportLine {
    let name = "drop reasons (skb:kfree_skb)";
    let Some(tracefs) = tracefs else {
        return line(
            name,
            Status::Unknown,
            "tracefs not mounted".to_owned(),
            "pagefail reads the reasons when it starts",
        );
    };
    match crate::probe::drops::reason_table(tracefs) {
        Ok(table) => {
            let memory: Vec<String> = table
                .counted(crate::drops::reasons::DropReasons::Memory)
                .iter()
                .map(|(n, name)| format!("{name}={n}"))
                .collect();
            line(
                name,
                Status::Ok,
                format!(
                    "{} reasons; memory reasons here: {}",
                    table.counted(crate::drops::reasons::DropReasons::All).len(),
                    memory.join(" ")
                ),
                "drops the kernel attributes to memory are counted beside the failures",
            )
        }
        Err(why) => line(
            name,
            Status::No,
            why,
            "drop reasons not available: only the TCP drop counters are shown",
        ),
    }
}

/// Load and attach each style on its own; the first success also tries the kprobe.
fn probe_styles() -> Vec<(AttachStyle, Result<WarnAllocProbe, String>)> {
    let mut kprobe_tried = false;
    [AttachStyle::Raw, AttachStyle::Btf, AttachStyle::Classic]
        .into_iter()
        .map(|style| {
            let cfg = ProbeConfig {
                force_style: Some(style),
                warn_alloc: !kprobe_tried,
                ..ProbeConfig::default()
            };
            let r = match Tracer::attach(&cfg) {
                Ok(mut t) => {
                    kprobe_tried = true;
                    t.detach();
                    Ok(t.warn_alloc.clone())
                }
                Err(e) => Err(e.to_string()),
            };
            (style, r)
        })
        .collect()
}

/// Everything `check` found, for `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub probed: bool,
    pub support: Vec<SupportLine>,
    pub page_kb: u64,
    pub zones: Vec<SnapshotSummary>,
    pub sysctls: crate::memory::Sysctls,
    /// `(counter, value)`: since boot, or over the sample.
    pub vmstat: Vec<(String, u64)>,
    pub vmstat_over_sample: bool,
    pub pagetypeinfo_note: Option<String>,
    pub advice: Option<Advice>,
    /// Why the failures of `--from` were not judged against this machine's memory.
    pub advice_refused: Option<String>,
    /// `--from LOG`: advice per order from the memory each report printed.
    pub log_advice: Option<Vec<GroupAdvice>>,
    /// Failures seen by `--sample`, by order (index = order).
    pub sampled_failures_by_order: Option<Vec<u64>>,
}

/// This machine's host name, as `pagefail watch` writes it in the CSV.
fn this_host() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// One line saying why `rows` cannot be judged against this machine's
/// memory: they name another host, or (without a host) another kernel.
fn foreign(rows: &[SummaryRow], path: &Path, host: &str, release: &str) -> Option<String> {
    let other = |pick: fn(&SummaryRow) -> &str, mine: &str| {
        rows.iter()
            .map(pick)
            .find(|v| !v.is_empty() && *v != mine)
            .map(str::to_owned)
    };
    let hosts_known = rows.iter().any(|r| !r.host.is_empty());
    let (what, theirs, mine) = if let Some(h) = other(|r| &r.host, host) {
        ("host", h, host)
    } else if !hosts_known && let Some(k) = other(|r| &r.kernel, release) {
        ("kernel", k, release)
    } else {
        return None;
    };
    Some(format!(
        "cannot judge the memory for {}: its failures were recorded on {what} {theirs}, not on \
         this machine's {what} ({mine}), so the memory here says nothing about them; pass that \
         machine's kernel log instead (`pagefail check --from kern.log` or `pagefail logs \
         --advice`), which judges each failure by the memory it printed",
        path.display()
    ))
}

fn vmstat_list(v: &VmStat) -> Vec<(String, u64)> {
    v.watched()
        .into_iter()
        .map(|(n, c)| (n.to_owned(), c))
        .collect()
}

/// Run `pagefail check`.
///
/// # Errors
/// Unreadable memory-state files, an unreadable `--from` file, or a failed sample.
pub fn run(args: &CheckArgs, verbose: u8) -> anyhow::Result<()> {
    let features = KernelFeatures::detect();
    let tracefs_before = find_tracefs();
    let eff = caps::effective();
    let may_load = eff.is_some_and(|e| caps::missing(e, features.has_cap_bpf()).is_none());
    let probe = !args.no_probe && (args.probe || may_load);
    let probed = probe.then(probe_styles);
    let mut support = support_lines(&features, tracefs_before.as_deref(), eff, probed.as_deref());
    support.push(cgroup_line(&crate::cgroup::CgroupSource::detect()));
    support.push(drop_reasons_line(tracefs_before.as_deref()));

    let before = Snapshot::take().context("reading the memory state")?;
    let drops_before = NetDrops::read().ok();
    let mut refused = None;
    let mut from_log = None;
    let (rows, sampled, snap, vmstat, drops) = if let Some(path) = &args.from {
        let vm = vmstat_list(&before.vmstat);
        if super::logs::is_summary_csv(path)? {
            let rows = export::read_csv_file(path)?;
            refused = foreign(&rows, path, &this_host(), &features.release);
            let rows = refused.is_none().then_some(rows);
            (rows, None, before, vm, None)
        } else {
            let read = super::logs::advice_of_log(path, args.kernel.clone())?;
            if read.reports == 0 {
                anyhow::bail!(
                    "{} is neither a pagefail CSV summary (header `{}`) nor a kernel log with \
                     page allocation failure reports",
                    path.display(),
                    CSV_HEADER.join(",")
                );
            }
            from_log = Some(read);
            (None, None, before, vm, None)
        }
    } else if let Some(d) = args.sample {
        if !args.json {
            crate::note!(
                "pagefail: sampling {} failures for {}...",
                if args.all { "all" } else { "atomic" },
                humantime::format_duration(d)
            );
        }
        let cfg = ProbeConfig {
            atomic_only: !args.all,
            ..ProbeConfig::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let sample = rt.block_on(super::sample::collect(&cfg, d))?;
        let after = Snapshot::take().context("reading the memory state after the sample")?;
        let vm = vmstat_list(&after.vmstat.since(&before.vmstat));
        let drops = match (drops_before, NetDrops::read()) {
            (Some(b), Ok(a)) => Some(a.since(&b)),
            _ => None,
        };
        (
            Some(sample.rows),
            Some(sample.totals.fails),
            after,
            vm,
            drops,
        )
    } else {
        let vm = vmstat_list(&before.vmstat);
        (None, None, before, vm, None)
    };
    let advice = rows.as_deref().map(|r| advice::advise(r, &snap, drops));
    let report = Report {
        kernel: features.release.clone(),
        probed: probe,
        support,
        page_kb: snap.page_kb,
        zones: snap.summaries(),
        sysctls: snap.sysctls,
        vmstat,
        vmstat_over_sample: args.sample.is_some(),
        pagetypeinfo_note: snap.pagetype_note.clone(),
        advice,
        advice_refused: refused,
        log_advice: from_log.as_ref().map(|l| l.groups.clone()),
        sampled_failures_by_order: sampled,
    };
    let out = if args.json {
        serde_json::to_string_pretty(&report).context("encoding the report")? + "\n"
    } else {
        text(
            &report,
            &snap,
            args.from.as_deref(),
            from_log.as_ref(),
            verbose,
        )
    };
    // `print!` panics on a closed pipe; an error here is quiet in main.
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, out.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut stdout))
        .context("cannot write to standard output")
}

/// The human report: support table, memory now, free blocks, vmstat, advice.
fn text(
    r: &Report,
    snap: &Snapshot,
    from: Option<&Path>,
    log: Option<&LogAdviceRead>,
    verbose: u8,
) -> String {
    let mut s = String::new();
    support_text(&mut s, r);
    zones_text(&mut s, r);
    buddy_text(&mut s, r, snap);
    vmstat_text(&mut s, r);
    advice_text(&mut s, r, from, log);
    if verbose > 0 {
        s.push_str(&format!("\n{}\n", crate::memory::one_line(snap, 0)));
    }
    s
}

/// The title and the kernel support table.
fn support_text(s: &mut String, r: &Report) {
    s.push_str(&format!(
        "pagefail check on kernel {}\n\nkernel support{}:\n",
        r.kernel,
        if r.probed {
            " (each attach style loaded and attached)"
        } else {
            " (advertised, not verified: run as root to probe)"
        }
    ));
    for l in &r.support {
        s.push_str(&format!(
            "  {:<2}  {:<21} {} -> {}\n",
            l.status.label(),
            l.name,
            l.detail,
            l.consequence
        ));
    }
}

/// The watermark sysctls and one line per zone: free memory against the
/// watermarks.
fn zones_text(s: &mut String, r: &Report) {
    let kb = r.page_kb;
    s.push_str(&format!(
        "\nmemory now ({} KiB pages): vm.min_free_kbytes {}, vm.watermark_scale_factor {}, vm.watermark_boost_factor {}\n",
        kb,
        r.sysctls.min_free_kbytes,
        r.sysctls.watermark_scale_factor,
        r.sysctls
            .watermark_boost_factor
            .map_or_else(|| "n/a".to_owned(), |v| v.to_string())
    ));
    s.push_str(&format!(
        "  {:<13} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11}\n",
        "ZONE", "MANAGED", "FREE", "MIN", "LOW", "HIGH", "FREE-MIN", "HIGHATOMIC"
    ));
    for z in &r.zones {
        s.push_str(&format!(
            "  {:<13} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11}\n",
            format!("node{} {}", z.node, z.zone),
            pages_text(z.managed, kb),
            pages_text(z.free, kb),
            pages_text(z.min, kb),
            pages_text(z.low, kb),
            pages_text(z.high, kb),
            if z.free_above_min >= 0 {
                pages_text(z.free_above_min.unsigned_abs(), kb)
            } else {
                format!("-{}", pages_text(z.free_above_min.unsigned_abs(), kb))
            },
            z.highatomic_blocks
                .map_or_else(|| "n/a".to_owned(), |b| format!("{b} blocks")),
        ));
    }
}

/// The buddy allocator's free blocks per order, per zone.
fn buddy_text(s: &mut String, r: &Report, snap: &Snapshot) {
    let orders = snap.buddy.iter().map(|b| b.free.len()).max().unwrap_or(0);
    s.push_str("\n  free blocks per order\n");
    s.push_str(&format!("  {:<13}", "ZONE"));
    for o in 0..orders {
        s.push_str(&format!(" {:>6}", format!("o{o}")));
    }
    s.push('\n');
    for b in &snap.buddy {
        s.push_str(&format!("  {:<13}", format!("node{} {}", b.node, b.zone)));
        for n in &b.free {
            s.push_str(&format!(" {n:>6}"));
        }
        s.push('\n');
    }
    if let Some(note) = &r.pagetypeinfo_note {
        s.push_str(&format!("  (highatomic reserve unknown: {note})\n"));
    }
}

/// The reclaim and compaction counters, since boot or over the sample.
fn vmstat_text(s: &mut String, r: &Report) {
    let counters: Vec<String> = r.vmstat.iter().map(|(n, v)| format!("{n} {v}")).collect();
    s.push_str(&format!(
        "\nvmstat {}: {}\n",
        if r.vmstat_over_sample {
            "over the sample"
        } else {
            "since boot"
        },
        counters.join(", ")
    ));
}

/// The advice: refused, from a kernel log, from a CSV or a sample, or how
/// to get some.
fn advice_text(s: &mut String, r: &Report, from: Option<&Path>, log: Option<&LogAdviceRead>) {
    match (&r.advice, &r.advice_refused, log) {
        (_, Some(why), _) => s.push_str(&format!("\nadvice: {why}\n")),
        (_, _, Some(l)) => {
            s.push_str(&format!(
                "\nadvice for {} (a kernel log with {} report(s)): judged against the memory \
                 each report printed, not this machine's\n",
                from.map_or_else(String::new, |p| p.display().to_string()),
                l.reports
            ));
            s.push_str(&render_advice(&l.groups, l.overflow, l.suppressed, true));
        }
        (None, _, _) => s.push_str(
            "\nadvice: pass --from FILE.csv (from `pagefail watch --csv`) or --sample 10s to explain failures\n",
        ),
        (Some(a), _, _) => {
            s.push_str("\nadvice");
            if let Some(p) = from {
                s.push_str(&format!(
                    " for {} (judged against the memory state now, not at the time of the failures)",
                    p.display()
                ));
            }
            if let Some(by_order) = &r.sampled_failures_by_order {
                let total: u64 = by_order.iter().sum();
                s.push_str(&format!(" for the sample ({total} failures of any kind)"));
            }
            s.push_str(":\n");
            s.push_str(&a.to_text());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::CSV_HEADER;

    fn features(kprobes: bool) -> KernelFeatures {
        KernelFeatures {
            release: "6.18.44-fc-v669".to_owned(),
            version: crate::kernel_version::KernelVersion::parse("6.18.44"),
            btf: true,
            kprobes,
            tracefs: Some("/sys/kernel/tracing".to_owned()),
        }
    }

    fn status_of<'a>(lines: &'a [SupportLine], name: &str) -> &'a SupportLine {
        lines.iter().find(|l| l.name == name).unwrap()
    }

    #[test]
    fn probed_styles_decide_the_lines() {
        let probed = vec![
            (
                AttachStyle::Raw,
                Ok(WarnAllocProbe::Unavailable("no kprobes".to_owned())),
            ),
            (AttachStyle::Btf, Err("load: verifier".to_owned())),
            (AttachStyle::Classic, Ok(WarnAllocProbe::Disabled)),
        ];
        let l = support_lines(
            &features(false),
            Some("/sys/kernel/tracing"),
            Some(u64::MAX),
            Some(&probed),
        );
        let raw = status_of(&l, "raw tracepoint");
        assert_eq!(raw.status, Status::Ok);
        assert_eq!(raw.consequence, "pagefail will use this");
        assert_eq!(status_of(&l, "BTF tracepoint").status, Status::No);
        assert_eq!(
            status_of(&l, "classic tracepoint").consequence,
            "fallback, not needed"
        );
        assert_eq!(status_of(&l, "kprobes (warn_alloc)").status, Status::No);
        let fo = status_of(&l, "failure-only mode (--failures-only)");
        assert_eq!(fo.status, Status::No);
        assert_eq!(fo.consequence, "not available on this kernel");
        assert!(status_of(&l, "ring buffer").detail.contains("verified"));
        assert_eq!(status_of(&l, "CAP_SYSLOG").status, Status::Ok);
    }

    #[test]
    fn unprobed_styles_are_unknown_and_caps_named() {
        let l = support_lines(&features(true), None, Some(0), None);
        assert_eq!(status_of(&l, "raw tracepoint").status, Status::Unknown);
        assert_eq!(status_of(&l, "kprobes (warn_alloc)").status, Status::Ok);
        assert_eq!(status_of(&l, "tracefs").status, Status::No);
        assert_eq!(status_of(&l, "CAP_BPF").status, Status::No);
    }

    #[test]
    fn the_cgroup_line_names_the_method() {
        use crate::cgroup::CgroupSource;
        let l = cgroup_line(&CgroupSource::MemcgProc {
            root: "/sys/fs/cgroup/memory".into(),
            why: "no BTF".into(),
        });
        assert!(l.detail.starts_with("v1-memcg-proc: ") && l.detail.contains("no BTF"));
        let l = cgroup_line(&CgroupSource::Unknown);
        assert_eq!(l.status, Status::No);
        assert!(l.detail.starts_with("none: "));
    }

    #[test]
    fn lockdown_mode_is_the_bracketed_word() {
        assert_eq!(
            lockdown_mode("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            lockdown_mode("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(lockdown_mode("garbage"), None);
    }

    #[test]
    fn from_csv_needs_the_contract_header() {
        let dir = std::env::temp_dir().join(format!("pagefail-check-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.csv");
        fs::write(&bad, "a,b\n1,2\n").unwrap();
        let e = format!("{:#}", export::read_csv_file(&bad).unwrap_err());
        assert!(e.contains("not a pagefail CSV summary"), "{e}");
        let good = dir.join("good.csv");
        let mut text = CSV_HEADER.join(",");
        text.push_str(
            "\n,,h,6.18.0,x,1,/,task,none,6,0x4428c0,GFP_NOWAIT|__GFP_ACCOUNT,true,3,0,,,a;b,memcg,fallback\n",
        );
        text.push_str(",,h,6.18.0,x,1,/,task,none,notanumber,0x0,none,true,3,0,,,,zone,terminal\n");
        fs::write(&good, text).unwrap();
        let e = format!("{:#}", export::read_csv_file(&good).unwrap_err());
        assert!(e.contains("row 3"), "{e}");
        assert!(export::read_csv_file(&dir.join("missing.csv")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
