//! `cargo xtask vm-test`: real atomic page allocation failures in Debian
//! kernels under qemu, traced by `pagefail watch` and checked against tracefs.
//!
//! For each kernel the initramfs holds `pagefail` and the guest program
//! `vm-scenario` (crate `pagefail-tests`), both built static as `cargo xtask
//! dist` builds pagefail, iproute2 (with its shared libraries),
//! and the `veth` and `bonding` modules. `/init` builds the guest topology
//! (bond0, balance-xor layer3+4 over v0 and v2, to bond1 in the
//! netns `peer`; MTU 9000; RPS on both CPUs) and runs `vm-scenario run`, which:
//!
//! 1. starts `pagefail -v watch --min-order 1 --csv ...` (atomic only, the
//!    default) and waits for it to print that it attached;
//! 2. opens the ground-truth window: hist triggers (the kernel counts, no
//!    buffer to overrun, no reader to keep up; where the kernel has none, as
//!    Debian's 5.10, the events read from `trace_pipe` while the window is
//!    open) on `kmem/mm_page_alloc` by order and gfp mask, with the filter
//!    `pfn == 18446744073709551615 && order >= 1 && ((gfp_flags & 0x20) || !(gfp_flags & 0x400))`
//!    (failed, order >= 1, and the tracer's atomic rule: `__GFP_HIGH`, or no
//!    `__GFP_DIRECT_RECLAIM`), and on a kprobe event `p:wa warn_alloc`;
//! 3. creates every traffic thread and the fragmenter process, fragments memory
//!    until no free block of order >= 1 remains, then releases the traffic
//!    (neighbour growth, ARP flood with RPS, 8 bulk TCP flows, a
//!    connect/close storm, `SO_REUSEPORT` groups) for a bounded time;
//! 4. quiesces: joins the traffic, lets the fragmenter exit (its memory
//!    merges back into high-order blocks), waits 2 s, closes the tracefs
//!    window, then stops pagefail with SIGINT.
//!
//! # Why the counts must be equal
//! pagefail's window contains the tracefs window. Outside the tracefs window
//! memory is not fragmented, so no order >= 1 allocation fails there: both
//! windows hold the same failures. The check is therefore exact equality of
//! pagefail's matched count (recorded + lost) with the tracefs count, with no
//! event dropped by the hist tables, and of the `warn_alloc` kprobe counts.
//! The CSV's (order, gfp mask) totals must equal the hist's, or by names
//! those tracefs printed (exactly when nothing was lost).
//!
//! # Attach styles
//! `--attach raw_tp|tp_btf|tracepoint` forces pagefail's style in the guest
//! (`PAGEFAIL_ATTACH`). Measured: `raw_tp` and `tp_btf` equal tracefs exactly on
//! 5.10, 6.1 and 6.12 (they need the enter/main/nested/exit programs of
//! tracer-ebpf on 6.1 and 6.12, whose `__bpf_trace_run` skips a program
//! nested in itself). The classic tracepoint does not: its program and the
//! `warn_alloc` kprobe share the per-CPU `bpf_prog_active` guard, so events nested
//! in either are skipped by the kernel (0.1-0.7% of failures, and of `warn_alloc`
//! entries, in these runs); it is only pagefail's last fallback.
//!
//! # Time
//! Each guest has a hard limit of [`GUEST_TIMEOUT`]; a panic or soft lockup
//! fails the run (see [`super::qemu`]). The report goes to `target/vm/report.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::initramfs::Initramfs;
use super::kernel;
use super::qemu::{self, QemuConfig};
use crate::arch::Arch;

/// Hard wall-clock limit of one guest.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(280);

/// Hard wall-clock limit of one arm64 guest: TCG emulates aarch64 about
/// twice as slowly as `x86_64` on these machines.
pub const ARM64_GUEST_TIMEOUT: Duration = Duration::from_mins(9);

/// The scenarios `run_matrix` accepts (`--scenario` also takes `bare`,
/// the static binary alone: [`super::bare`], and `all`).
pub const SCENARIOS: &[&str] = &["atomic-net"];

/// Seconds of traffic after fragmenting.
const TRAFFIC_SECS: u32 = 8;

/// Host iproute2 binary copied into the guest (busybox `ip` lacks bonding/netns).
const HOST_IP: &[&str] = &["/usr/bin/ip", "/sbin/ip", "/bin/ip"];

/// Arguments of `cargo xtask vm-test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Which kernel: 5.10, 6.1, 6.12, or all (the bare check then runs on 6.1).
    #[arg(long, default_value = "all")]
    pub kernel: String,
    /// Which scenario: `atomic-net` (traffic, pagefail against tracefs),
    /// `bare` (the static binary alone in an initramfs without shell or
    /// libraries), `pressure` (`record` through OOM kills and a full
    /// output directory), or `all`.
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// Force pagefail's attach style in the guest (`PAGEFAIL_ATTACH`):
    /// `raw_tp`, `tp_btf` or tracepoint; or `lean` (`--lean`), `pair` (the
    /// marked pair, `PAGEFAIL_CHAIN=pair`, instead of the default
    /// four-program chain) or `failures-only` (`--failures-only`); default:
    /// pagefail's own choice.
    #[arg(long)]
    pub attach: Option<String>,
    /// Guest architecture: amd64, or arm64 (Debian's cloud-arm64 kernels
    /// under qemu-system-aarch64, the cross-built static binaries).
    #[arg(long, value_enum, default_value_t = Arch::Amd64)]
    pub arch: Arch,
}

/// One check of one run.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

impl std::fmt::Display for Check {
    /// The check as a Markdown task-list item: `- [x] name: detail`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.pass { "x" } else { " " };
        write!(f, "- [{mark}] {}: {}", self.name, self.detail)
    }
}

/// The outcome of one kernel's run.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Short kernel name, with the architecture when it is not amd64
    /// (`6.1`, `6.1 arm64`).
    pub kernel: String,
    pub release: String,
    /// `mm_page_alloc` attach style pagefail chose (raw tracepoint, `tp_btf`, ...).
    pub style: String,
    /// Whether pagefail attached its `warn_alloc` kprobe.
    pub warn_probe: String,
    pub paths: Vec<String>,
    pub pf_matched: Option<u64>,
    pub pf_recorded: Option<u64>,
    pub pf_lost: Option<u64>,
    pub tracefs: Option<u64>,
    pub pf_warn: Option<u64>,
    pub tracefs_warn: Option<u64>,
    /// Allocation events the kernel kept from pagefail's programs (summary).
    pub pf_unseen: Option<u64>,
    /// pagefail ran with `--lean`.
    pub lean: bool,
    /// The nesting programs pagefail attached: `four` (default) or `pair`.
    pub chain: &'static str,
    /// pagefail ran with `--failures-only` (the `warn_alloc` kprobe alone).
    pub failures_only: bool,
    /// Of the lost records, those the kernel counted by row and pagefail
    /// rebuilt into the CSV's rows (summary).
    pub pf_kept: Option<u64>,
    pub seconds: f64,
    pub checks: Vec<Check>,
    /// A run that did not get as far as checks (boot, timeout, panic, ...).
    pub error: Option<String>,
    /// What the traffic generators did (connects, frames, bytes).
    pub traffic: String,
    pub log: PathBuf,
}

impl Row {
    /// Every check passed and the run completed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.pass)
    }
}

/// All runs of one `vm-test`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl Report {
    /// Every run passed.
    pub fn ok(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(Row::ok)
    }

    /// The report as Markdown: a summary table, then each run's checks.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| kernel | attach style | warn_alloc probe | paths seen | pagefail count | \
             tracefs count | lost | unseen (nested) | warn_alloc pagefail/tracefs | run time | \
             result |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} ({}) | {} {} | {} | {} | {} | {} | {} | {} | {}/{} | {:.0} s | {} |",
                r.kernel,
                r.release,
                r.style,
                if r.lean {
                    "--lean"
                } else if r.failures_only {
                    "--failures-only"
                } else {
                    r.chain
                },
                r.warn_probe,
                r.paths.join(" "),
                opt(r.pf_matched),
                opt(r.tracefs),
                opt(r.pf_lost),
                opt(r.pf_unseen),
                opt(r.pf_warn),
                opt(r.tracefs_warn),
                r.seconds,
                if r.ok() { "pass" } else { "FAIL" }
            );
        }
        for r in &self.rows {
            let _ = writeln!(s, "\n### {} (console: {})\n", r.kernel, r.log.display());
            if let Some(e) = &r.error {
                let _ = writeln!(s, "- error: {e}");
            }
            if !r.traffic.is_empty() {
                let _ = writeln!(s, "- traffic: {}", r.traffic);
            }
            for c in &r.checks {
                let _ = writeln!(s, "{c}");
            }
        }
        s
    }
}

/// `cargo xtask vm-test`: run, print the table, write `target/vm/report.md`,
/// fail when any run failed.
pub fn run(args: &TestArgs) -> Result<()> {
    let kernels: Vec<&str> = match args.kernel.as_str() {
        "all" => kernel::kernels(args.arch).iter().map(|k| k.ver).collect(),
        one => vec![kernel::spec_for(one, args.arch)?.ver],
    };
    let (net, bare, pressure) = match args.scenario.as_str() {
        "all" => (true, true, true),
        "bare" => (false, true, false),
        "pressure" => (false, false, true),
        s if SCENARIOS.contains(&s) => (true, false, false),
        s => bail!("unknown scenario {s:?}: use atomic-net, bare, pressure or all"),
    };
    let report = if net {
        Some(run_matrix_for(
            args.arch,
            &kernels,
            &args.scenario_net(),
            args.attach.as_deref(),
        )?)
    } else {
        None
    };
    let bare = bare.then(|| {
        let ver = if args.kernel == "all" {
            super::bare::KERNEL
        } else {
            kernels[0]
        };
        super::bare::run_for(ver, args.arch)
    });
    if pressure && args.arch != crate::arch::Arch::Amd64 {
        eprintln!("vm-test: the under-pressure scenario runs on x86_64 guests only; skipped");
    }
    let pressure = (pressure && args.arch == crate::arch::Arch::Amd64).then(|| {
        let ver = if args.kernel == "all" {
            super::pressure::KERNEL
        } else {
            kernels[0]
        };
        super::pressure::run(ver)
    });
    let mut md = report.as_ref().map(Report::markdown).unwrap_or_default();
    if let Some(b) = &bare {
        md.push_str(&b.markdown());
    }
    if let Some(p) = &pressure {
        md.push_str(&p.markdown());
    }
    println!("{md}");
    let path = super::vm_dir().join("report.md");
    fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("vm-test: report written to {}", path.display());
    if !report.as_ref().is_none_or(Report::ok)
        || !bare.as_ref().is_none_or(super::bare::Outcome::ok)
        || !pressure.as_ref().is_none_or(super::pressure::Outcome::ok)
    {
        bail!(
            "vm-test failed; see {} and the console logs it names",
            path.display()
        );
    }
    Ok(())
}

impl TestArgs {
    /// The network scenario to run (`all` means `atomic-net`).
    fn scenario_net(&self) -> String {
        if self.scenario == "all" {
            "atomic-net".to_owned()
        } else {
            self.scenario.clone()
        }
    }
}

/// Build the guest binaries, then boot each kernel and check the scenario.
/// A failed run is a row with `error` or failed checks, not an `Err`; `Err`
/// means the runs could not be made at all (build, missing host tools).
///
/// The newest kernel runs a second time with `--lean`: there the count may
/// fall short of tracefs only by events the kernel reports as skipped; and a
/// third time with `--failures-only`, whose count may fall short by the
/// failures that never reach `warn_alloc`.
pub fn run_all(kernels: &[&str], scenario: &str) -> Result<Report> {
    let mut report = run_matrix(kernels, scenario, None)?;
    if let Some(newest) = kernels.last() {
        report
            .rows
            .extend(run_matrix(&[newest], scenario, Some(LEAN))?.rows);
        report
            .rows
            .extend(run_matrix(&[newest], scenario, Some(FAILURES_ONLY))?.rows);
    }
    Ok(report)
}

/// The `--attach` value that runs pagefail with `--lean` (its own style).
pub const LEAN: &str = "lean";
/// The `--attach` value that runs pagefail in failure-only mode
/// (`--failures-only`: the `warn_alloc` kprobe alone).
pub const FAILURES_ONLY: &str = "failures-only";
/// The `--attach` value that runs pagefail with the marked pair
/// (`PAGEFAIL_CHAIN=pair`) instead of its default four-program chain.
pub const PAIR: &str = "pair";

/// [`run_all`] with pagefail's attach style forced (`None`: its own choice).
pub fn run_matrix(kernels: &[&str], scenario: &str, attach: Option<&str>) -> Result<Report> {
    run_matrix_for(Arch::Amd64, kernels, scenario, attach)
}

/// [`run_matrix`] on guests of `arch`.
pub fn run_matrix_for(
    arch: Arch,
    kernels: &[&str],
    scenario: &str,
    attach: Option<&str>,
) -> Result<Report> {
    if let Some(a) = attach
        && !["raw_tp", "tp_btf", "tracepoint", LEAN, PAIR, FAILURES_ONLY].contains(&a)
    {
        bail!(
            "unknown attach style {a:?}: use raw_tp, tp_btf, tracepoint, {LEAN}, {PAIR} or \
             {FAILURES_ONLY}"
        );
    }
    let qemu_package = qemu::machine(arch).package;
    if arch == Arch::Amd64 {
        crate::setup::ensure_packages(&[
            qemu_package,
            "busybox-static",
            "kmod",
            "xz-utils",
            "iproute2",
        ])?;
    } else {
        // busybox and iproute2 of the guest's architecture come from
        // Debian's packages (initramfs::userland).
        crate::setup::ensure_packages(&[qemu_package, "kmod", "xz-utils"])?;
    }
    if !SCENARIOS.contains(&scenario) {
        bail!(
            "unknown scenario {scenario:?}: use one of {}",
            SCENARIOS.join(", ")
        );
    }
    // The static builds `dist` ships: they share one release build of the
    // dependencies with the kernel tier and the bare check.
    let pagefail = crate::dist::build_static_for(arch)?;
    let scenario_bin = crate::dist::build_static_bin_for(arch, "pagefail-tests", "vm-scenario")?;
    let ip = if arch == Arch::Amd64 {
        HOST_IP
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .context("iproute2's ip not found: apt-get install iproute2")?
            .to_path_buf()
    } else {
        PathBuf::new()
    };
    let mut report = Report::default();
    for ver in kernels {
        let start = Instant::now();
        let mut row = match run_one(arch, ver, &pagefail, &scenario_bin, &ip, attach) {
            Ok(row) => row,
            Err(e) => Row {
                kernel: kernel_label(ver, arch),
                error: Some(format!("{e:#}")),
                log: super::vm_dir()
                    .join("logs")
                    .join(format!("{}.log", run_name(ver, attach, arch))),
                ..Row::default()
            },
        };
        row.seconds = start.elapsed().as_secs_f64();
        eprintln!(
            "vm-test: {ver} {arch}: {} in {:.0} s",
            if row.ok() { "pass" } else { "FAIL" },
            row.seconds
        );
        report.rows.push(row);
    }
    Ok(report)
}

/// The run's name: its console log is `target/vm/logs/<name>.log`.
fn run_name(ver: &str, attach: Option<&str>, arch: Arch) -> String {
    let ver = match arch {
        Arch::Amd64 => ver.to_owned(),
        other @ Arch::Arm64 => format!("{}-{ver}", other.deb()),
    };
    match attach {
        Some(a) => format!("vm-test-{ver}-{a}"),
        None => format!("vm-test-{ver}"),
    }
}

/// The kernel column of the report: `6.1`, `6.1 arm64`.
pub fn kernel_label(ver: &str, arch: Arch) -> String {
    match arch {
        Arch::Amd64 => ver.to_owned(),
        other @ Arch::Arm64 => format!("{ver} {other}"),
    }
}

fn init_script(modules: &[String], attach: Option<&str>) -> String {
    let mut s = String::from(
        "#!/bin/sh\n/bin/busybox --install -s /bin\nexport PATH=/bin:/sbin:/usr/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n\
         mount -t tmpfs tmpfs /tmp\nmount -t tmpfs tmpfs /run\n\
         [ -e /dev/kmsg ] || mknod /dev/kmsg c 1 11\n",
    );
    s.push_str(super::SHELL_HELPERS);
    s.push_str("pf_begin uname\nuname -r\npf_end uname\npf_begin net\n");
    for m in modules {
        let opts = if m.ends_with("/bonding.ko") {
            " max_bonds=0"
        } else {
            ""
        };
        let _ = writeln!(s, "insmod {m}{opts} || echo insmod-failed {m}");
    }
    // The guest topology (see the module comment). /sbin/ip is iproute2 (busybox's lacks
    // bonding and netns); the full path avoids busybox's applet.
    s.push_str(
        r"I=/sbin/ip
set -x
$I link set lo up
$I netns add peer
$I -n peer link set lo up
$I link add v0 type veth peer name v1
$I link add v2 type veth peer name v3
$I link add bond0 type bond mode balance-xor xmit_hash_policy layer3+4 miimon 100
$I link set v0 master bond0
$I link set v2 master bond0
$I link set v1 netns peer
$I link set v3 netns peer
$I -n peer link add bond1 type bond mode balance-xor xmit_hash_policy layer3+4 miimon 100
$I -n peer link set v1 master bond1
$I -n peer link set v3 master bond1
$I link set bond0 mtu 9000
$I -n peer link set bond1 mtu 9000
$I addr add 10.9.0.1/16 dev bond0
$I -n peer addr add 10.9.0.2/16 dev bond1
$I link set v0 up
$I link set v2 up
$I -n peer link set v1 up
$I -n peer link set v3 up
$I link set bond0 up
$I -n peer link set bond1 up
for d in v0 v2 bond0; do echo 3 > /sys/class/net/$d/queues/rx-0/rps_cpus; done
echo 8192 > /proc/sys/net/ipv4/neigh/default/gc_thresh1
echo 32768 > /proc/sys/net/ipv4/neigh/default/gc_thresh2
echo 65536 > /proc/sys/net/ipv4/neigh/default/gc_thresh3
echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse
set +x
sleep 1
$I -br link
$I -n peer -br addr
cat /proc/meminfo | head -3
pf_end net
",
    );
    match attach {
        Some(LEAN) => s.push_str("export PAGEFAIL_LEAN=1\n"),
        Some(PAIR) => s.push_str("export PAGEFAIL_CHAIN=pair\n"),
        Some(FAILURES_ONLY) => s.push_str("export PAGEFAIL_FAILURES_ONLY=1\n"),
        Some(a) => {
            let _ = writeln!(s, "export PAGEFAIL_ATTACH={a}");
        }
        None => {}
    }
    let _ = writeln!(
        s,
        "/bin/vm-scenario run /bin/pagefail {TRAFFIC_SECS}\necho vm-scenario-exit=$?\npoweroff -f"
    );
    s
}

fn run_one(
    arch: Arch,
    ver: &str,
    pagefail: &Path,
    scenario_bin: &Path,
    ip: &Path,
    attach: Option<&str>,
) -> Result<Row> {
    let k = kernel::fetch(&kernel::spec_for(ver, arch)?)?;
    let mut tree = Initramfs::for_arch(arch)?;
    let modules = tree.add_modules(&k, &["veth", "bonding"])?;
    if arch == Arch::Amd64 {
        tree.add_binary(ip, "/sbin/ip")?;
        tree.add_binary(pagefail, "/bin/pagefail")?;
        tree.add_binary(scenario_bin, "/bin/vm-scenario")?;
    } else {
        let root = super::initramfs::userland(arch)?;
        tree.add_foreign_binary(&root, "/sbin/ip", "/sbin/ip")?;
        // Static (dist checked them): nothing else to bring.
        tree.add_host_file(pagefail, "/bin/pagefail")?;
        tree.add_host_file(scenario_bin, "/bin/vm-scenario")?;
    }
    tree.set_init(&init_script(&modules, attach));
    let name = run_name(ver, attach, arch);
    let image = super::vm_dir().join("images").join(format!("{name}.cpio"));
    tree.write(&image)?;
    let mut cfg = QemuConfig::new(&name);
    cfg.timeout = match arch {
        Arch::Amd64 => GUEST_TIMEOUT,
        Arch::Arm64 => ARM64_GUEST_TIMEOUT,
    };
    let out = qemu::run(&k, &image, &cfg)?;
    let mut row = Row {
        kernel: kernel_label(ver, arch),
        release: k.release.clone(),
        log: out.log.clone(),
        lean: attach == Some(LEAN),
        chain: if attach == Some(PAIR) { "pair" } else { "four" },
        failures_only: attach == Some(FAILURES_ONLY),
        ..Row::default()
    };
    check_run(&out.console, &out.sections.present, &mut row);
    Ok(row)
}

fn checks_push(add: &mut impl FnMut(&'static str, bool, String), c: Check) {
    add(c.name, c.pass, c.detail);
}

/// pagefail's drops by reason (a reason left out counted none) and the
/// `kfree_skb` events the kernel kept from it, from the run summary JSON;
/// `None` unless it counted reasons.
fn pagefail_drops(json: &serde_json::Value) -> Option<(BTreeMap<String, u64>, Option<u64>)> {
    let reasons = json.get("drop_reasons")?.as_str()?;
    if !matches!(reasons, "memory" | "all") {
        return None;
    }
    let by = json
        .get("drops")?
        .as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_u64()?)))
        .collect::<Option<BTreeMap<_, _>>>()?;
    Some((by, json.get("drops_unseen")?.as_u64()))
}

/// The drop checks: where the kernel has drop reasons, pagefail's count per
/// memory reason equals the tracefs count over the inner window (short by at
/// most the `kfree_skb` events the kernel kept from pagefail), and the
/// scenario's full neighbour table produced `NEIGH_CREATEFAIL` drops; where
/// it has none, pagefail says so.
fn check_drops(
    sections: &BTreeMap<String, String>,
    res: &BTreeMap<String, String>,
    json: Option<&serde_json::Value>,
) -> Vec<Check> {
    let empty = String::new();
    let text = sections.get("tracefs-drops").unwrap_or(&empty);
    let mut out = Vec::new();
    if let Some(why) = text.trim().strip_prefix("unavailable: ") {
        out.push(Check {
            name: "no drop reasons: pagefail says so",
            pass: json
                .and_then(|j| j.get("drop_reasons")?.as_str())
                .is_some_and(|r| r.starts_with("not available")),
            detail: format!("kernel: {why}"),
        });
        return out;
    }
    let mut kernel: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        if let Some((name, n)) = line.split_once('\t')
            && let Ok(n) = n.trim().parse()
        {
            kernel.insert(name.to_owned(), n);
        }
    }
    let lost = res
        .get("drops_kernel_lost")
        .and_then(|v| v.parse::<u64>().ok());
    out.push(Check {
        name: "tracefs drop count lost nothing",
        pass: lost == Some(0) && !kernel.is_empty(),
        detail: format!(
            "method {}, lost {}; {}",
            res.get("drops_method").map_or("?", String::as_str),
            opt(lost),
            text.trim()
        ),
    });
    let neigh = kernel.get("NEIGH_CREATEFAIL").copied().unwrap_or(0);
    out.push(Check {
        name: "memory drops made on purpose (NEIGH_CREATEFAIL)",
        pass: neigh > 0,
        detail: format!(
            "tracefs NEIGH_CREATEFAIL {neigh}; {}",
            sections.get("neigh-table-full").map_or("?", |s| s.trim())
        ),
    });
    let Some((pf, unseen)) = json.and_then(pagefail_drops) else {
        out.push(Check {
            name: "drop counts per reason == tracefs",
            pass: false,
            detail: "pagefail's summary JSON counted no drop reasons".to_owned(),
        });
        return out;
    };
    let slack = unseen.unwrap_or(0);
    let mut diffs = Vec::new();
    let names: std::collections::BTreeSet<&String> = kernel.keys().chain(pf.keys()).collect();
    let mut equal = true;
    for name in names {
        let k = kernel.get(name).copied();
        // The JSON leaves out the reasons that counted none.
        let p = Some(pf.get(name).copied().unwrap_or(0));
        let ok = match (k, p) {
            (Some(k), Some(p)) => p <= k && k <= p + slack,
            _ => false,
        };
        equal &= ok;
        diffs.push(format!("{name} pagefail {} tracefs {}", opt(p), opt(k)));
    }
    out.push(Check {
        name: "drop counts per reason == tracefs",
        pass: equal && unseen.is_some(),
        detail: format!(
            "{}; unseen kfree_skb events {}",
            diffs.join(", "),
            opt(unseen)
        ),
    });
    out
}

/// `key=value` pairs of the guest's `PAGEFAIL-RESULT` line.
fn result_line(console: &str) -> Option<BTreeMap<String, String>> {
    let line = console
        .lines()
        .find_map(|l| l.split_once("PAGEFAIL-RESULT ").map(|(_, r)| r))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// The number after `prefix` on the first line holding it.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let i = text.find(prefix)? + prefix.len();
    text[i..].split_whitespace().next()?.parse().ok()
}

/// One CSV row's fields the checks use.
#[derive(Debug)]
struct CsvRow {
    comm: String,
    context: String,
    path: String,
    order: u32,
    /// The mask, `0x...`.
    gfp: u64,
    gfp_flags: String,
    failures: u64,
    /// Root first, `;`-joined (rows are grouped by stack: the row's only one).
    top_stack: String,
    outcome: String,
}

fn parse_csv(text: &str) -> Result<Vec<CsvRow>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let headers = r.headers().context("the CSV has no header")?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("the CSV lacks the column {name}"))
    };
    let (comm, context, path, order, gfp_flags, failures) = (
        col("comm")?,
        col("context")?,
        col("path")?,
        col("order")?,
        col("gfp_flags")?,
        col("failures")?,
    );
    let (gfp, top_stack, outcome) = (col("gfp")?, col("top_stack")?, col("outcome")?);
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.context("a malformed CSV record")?;
        rows.push(CsvRow {
            comm: rec[comm].to_owned(),
            context: rec[context].to_owned(),
            path: rec[path].to_owned(),
            order: rec[order].parse().context("order is not a number")?,
            gfp: rec[gfp]
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .context("gfp is not a 0x mask")?,
            gfp_flags: rec[gfp_flags].to_owned(),
            failures: rec[failures].parse().context("failures is not a number")?,
            top_stack: rec[top_stack].to_owned(),
            outcome: rec[outcome].to_owned(),
        });
    }
    Ok(rows)
}

fn check_run(console: &str, sections: &BTreeMap<String, String>, row: &mut Row) {
    let mut checks = Vec::new();
    check_into(console, sections, row, &mut checks);
    row.checks = checks;
}

fn check_into(
    console: &str,
    sections: &BTreeMap<String, String>,
    row: &mut Row,
    checks: &mut Vec<Check>,
) {
    let mut add = |name: &'static str, pass: bool, detail: String| {
        checks.push(Check { name, pass, detail });
    };
    let Some(res) = result_line(console) else {
        row.error = Some(format!(
            "the guest printed no PAGEFAIL-RESULT line; see {}",
            row.log.display()
        ));
        return;
    };
    if let Some(e) = res.get("error") {
        row.error = Some(format!("the scenario failed in the guest: {e}"));
        return;
    }
    let num = |k: &str| res.get(k).and_then(|v| v.parse::<u64>().ok());
    let empty = String::new();
    let stderr = sections.get("pagefail-stderr").unwrap_or(&empty);
    let summary = sections.get("pagefail-summary").unwrap_or(&empty);
    row.style = stderr
        .split_once("attached to mm_page_alloc (")
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(s, _)| s.to_owned())
        .or_else(|| {
            stderr
                .contains("attached to warn_alloc (kprobe")
                .then(|| "kprobe".to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let probe = stderr.contains("warn_alloc kprobe attached");
    if probe { "attached" } else { "not attached" }.clone_into(&mut row.warn_probe);
    // The counts come from the machine-readable run summary
    // (`--summary-json`); the human summary is only cross-checked below.
    let json: Option<serde_json::Value> = sections
        .get("pagefail-summary-json")
        .and_then(|t| serde_json::from_str(t).ok());
    let field = |k: &str| json.as_ref().and_then(|v| v.get(k)?.as_u64());
    row.pf_matched = field("failures");
    row.pf_lost = field("lost");
    row.pf_recorded = row.pf_matched.zip(row.pf_lost).map(|(m, l)| m - l.min(m));
    row.pf_warn = field("warn_alloc");
    row.pf_unseen = field("unseen");
    row.pf_kept = field("lost_kept");
    row.tracefs = num("tracefs_failures");
    row.traffic = sections
        .get("traffic")
        .map_or_else(String::new, |t| t.trim().to_owned());
    row.tracefs_warn = num("tracefs_warn_alloc");

    add(
        "memory fragmented",
        res.get("fragmented").map(String::as_str) == Some("1"),
        format!(
            "fragmenter ready after {} s; buddyinfo:\n{}",
            res.get("frag_secs").map_or("?", String::as_str),
            sections
                .get("buddyinfo-fragmented")
                .map_or("?", String::as_str)
                .trim_end()
        ),
    );
    add(
        "pagefail ran and exited cleanly",
        res.get("pagefail_exit")
            .is_some_and(|s| s.contains("exit_status:_0")),
        format!(
            "exit {}; OOM kills in the guest: {} (victims in its kernel log: {})",
            res.get("pagefail_exit").map_or("?", String::as_str),
            res.get("oom_kills").map_or("?", String::as_str),
            res.get("oom_victims").map_or("?", String::as_str)
        ),
    );
    add(
        "tracefs lost nothing",
        num("tracefs_lost") == Some(0) && num("tracefs_unparsed") == Some(0),
        format!(
            "counted by {}: lost {} (hist tables full or buffers overrun), unparsed lines {}",
            res.get("tracefs_method").map_or("?", String::as_str),
            opt(num("tracefs_lost")),
            opt(num("tracefs_unparsed"))
        ),
    );
    add(
        "atomic order>=1 failures happened",
        row.tracefs.is_some_and(|n| n > 0),
        format!("tracefs counted {}", opt(row.tracefs)),
    );
    if row.failures_only {
        // Failure-only: warn_alloc sees the slow path's failures, not those
        // that never reach its end; the gap is what the mode cannot see.
        let bounded = matches!((row.pf_matched, row.tracefs), (Some(p), Some(t)) if p <= t);
        add(
            "pagefail <= tracefs (--failures-only; the gap is what it cannot see)",
            bounded,
            format!(
                "pagefail {} (= {} recorded + {} lost), tracefs {}, unseen by the mode {}",
                opt(row.pf_matched),
                opt(row.pf_recorded),
                opt(row.pf_lost),
                opt(row.tracefs),
                opt(row
                    .tracefs
                    .zip(row.pf_matched)
                    .map(|(t, p)| t.saturating_sub(p)))
            ),
        );
    } else if row.lean {
        // Lean: what the kernel kept from the main program is counted, not
        // caught, so the count may fall short of tracefs by at most that.
        let bounded = match (row.pf_matched, row.tracefs, row.pf_unseen) {
            (Some(p), Some(t), Some(u)) => p <= t && t <= p + u,
            _ => false,
        };
        add(
            "pagefail <= tracefs <= pagefail + unseen (--lean)",
            bounded,
            format!(
                "pagefail {} (= {} recorded + {} lost), tracefs {}, unseen {}",
                opt(row.pf_matched),
                opt(row.pf_recorded),
                opt(row.pf_lost),
                opt(row.tracefs),
                opt(row.pf_unseen)
            ),
        );
    } else {
        add(
            "pagefail count == tracefs count",
            row.pf_matched.is_some() && row.pf_matched == row.tracefs,
            format!(
                "pagefail {} (= {} recorded + {} lost), tracefs {}",
                opt(row.pf_matched),
                opt(row.pf_recorded),
                opt(row.pf_lost),
                opt(row.tracefs)
            ),
        );
    }
    add(
        "summary JSON read, and equal to the printed summary",
        json.is_some()
            && row.pf_matched.is_some()
            && row.pf_matched == number_after(summary, "failures matching the filters: "),
        format!(
            "JSON failures {}, printed {}",
            opt(row.pf_matched),
            opt(number_after(summary, "failures matching the filters: "))
        ),
    );
    add(
        "warn_alloc kprobe attached",
        probe,
        stderr
            .lines()
            .filter(|l| l.contains("warn_alloc"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    add(
        "warn_alloc count == tracefs kprobe count",
        row.pf_warn.is_some() && row.pf_warn == row.tracefs_warn,
        format!(
            "pagefail {}, tracefs wa {}",
            opt(row.pf_warn),
            opt(row.tracefs_warn)
        ),
    );

    for c in check_drops(sections, &res, json.as_ref()) {
        checks_push(&mut add, c);
    }
    if !row.failures_only {
        check_fallbacks_seen(json.as_ref(), row.pf_recorded, &mut add);
    }
    check_rows(sections, row, &mut add);
}

/// `--observe-fallbacks` (every run but `--failures-only`): every recorded
/// failure awaited its follow record, none was seen to fall back twice; the
/// detail carries the shares seen per outcome and the call sites.
fn check_fallbacks_seen(
    json: Option<&serde_json::Value>,
    recorded: Option<u64>,
    add: &mut impl FnMut(&'static str, bool, String),
) {
    let Some(seen) = json.and_then(|j| j.get("fallbacks_seen")) else {
        add(
            "fallbacks seen: reported",
            false,
            "the run summary has no fallbacks_seen".to_owned(),
        );
        return;
    };
    let count = |outcome: &str, k: &str| {
        seen.get("by_outcome")
            .and_then(|b| b.get(outcome)?.get(k)?.as_u64())
            .unwrap_or(0)
    };
    let outcomes = ["fallback", "terminal", "unknown"];
    let noted: u64 = outcomes.iter().map(|o| count(o, "failures")).sum();
    let bounded = outcomes
        .iter()
        .all(|o| count(o, "seen") <= count(o, "failures"));
    let shares: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{o} {} of {}", count(o, "seen"), count(o, "failures")))
        .collect();
    let sites: Vec<String> = seen
        .get("sites")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} ({}) {}",
                s.get("function").and_then(|v| v.as_str()).unwrap_or("?"),
                s.get("outcome").and_then(|v| v.as_str()).unwrap_or("?"),
                s.get("seen")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            )
        })
        .collect();
    let num = |k: &str| seen.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    add(
        "fallbacks seen: every recorded failure awaited, none seen twice",
        recorded == Some(noted) && bounded,
        format!(
            "awaited {noted} of {} recorded; seen: {}; elsewhere {}, follow records lost {}; sites: {}",
            opt(recorded),
            shares.join(", "),
            num("elsewhere"),
            num("lost"),
            if sites.is_empty() {
                "none".to_owned()
            } else {
                sites.join(", ")
            }
        ),
    );
    // The kernel shows the rules right: fallback call sites (slab's first
    // try, page_frag's refill) are seen falling back, no terminal one is.
    let site_outcomes: Vec<&str> = seen
        .get("sites")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("outcome")?.as_str())
        .collect();
    add(
        "fallbacks seen at fallback call sites, none at a terminal one",
        site_outcomes.contains(&"fallback") && !site_outcomes.contains(&"terminal"),
        format!("outcomes of the sites seen: {site_outcomes:?}"),
    );
}

/// The checks of pagefail's CSV rows: the paths and contexts the traffic
/// must produce, each call site's outcome (`x86_64` guests), and the totals per
/// (order, gfp mask) against the kernel's own count.
fn check_rows(
    sections: &BTreeMap<String, String>,
    row: &mut Row,
    add: &mut impl FnMut(&'static str, bool, String),
) {
    let empty = String::new();
    let csv = match parse_csv(sections.get("pagefail-csv").unwrap_or(&empty)) {
        Ok(c) => c,
        Err(e) => {
            add("CSV readable", false, format!("{e:#}"));
            return;
        }
    };
    let mut paths: Vec<String> = csv
        .iter()
        .flat_map(|r| r.path.split('+').map(str::to_owned))
        .collect();
    paths.sort();
    paths.dedup();
    row.paths.clone_from(&paths);
    for want in ["bonding", "tcp", "neigh"] {
        let n: u64 = csv
            .iter()
            .filter(|r| r.path.split('+').any(|p| p == want))
            .map(|r| r.failures)
            .sum();
        add(
            match want {
                "bonding" => "CSV rows with path bonding",
                "tcp" => "CSV rows with path tcp",
                _ => "CSV rows with path neigh",
            },
            n > 0,
            format!("{n} failures"),
        );
    }
    let softirq: Vec<String> = csv
        .iter()
        .filter(|r| {
            r.context == "softirq"
                && (r.comm.starts_with("ksoftirqd/") || r.comm.starts_with("swapper/"))
        })
        .map(|r| format!("{} {} o{}", r.comm, r.path, r.order))
        .collect();
    add(
        "softirq rows from ksoftirqd/N or swapper/N",
        !softirq.is_empty(),
        softirq.join(", "),
    );
    let task: Vec<String> = csv
        .iter()
        .filter(|r| r.context == "task" && r.comm.starts_with("pfgen-"))
        .map(|r| format!("{} {} o{}", r.comm, r.path, r.order))
        .collect();
    add(
        "task rows from the traffic generator",
        !task.is_empty(),
        task.iter().take(8).cloned().collect::<Vec<_>>().join(", "),
    );

    // The independent outcome table and the reuseport recipe were written
    // for x86_64 guests: arm64 kernels inline the slab paths differently and
    // the slower arm64 guest does not reach reuseport growth, so arm64 runs
    // check counts, paths and drops, not outcomes.
    if !row.kernel.contains("arm64") {
        check_outcomes(&csv, sections.get("traffic").unwrap_or(&empty), add);
    }

    // Orders and gfp: the CSV's totals per (order, gfp) against the kernel's
    // count of the same failures, by mask (`0x...`, a hist) or by the names
    // tracefs printed (kernels without hist triggers).
    let mut from_trace: BTreeMap<(u32, String), u64> = BTreeMap::new();
    for line in sections.get("tracefs-order-gfp").unwrap_or(&empty).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let [o, g, n] = f[..]
            && let (Ok(o), Ok(n)) = (o.parse(), n.parse::<u64>())
        {
            from_trace.insert((o, g.to_owned()), n);
        }
    }
    let by_mask = from_trace.keys().all(|(_, g)| g.starts_with("0x"));
    let mut from_csv: BTreeMap<(u32, String), u64> = BTreeMap::new();
    for r in &csv {
        let gfp = if by_mask {
            format!("{:#x}", r.gfp)
        } else {
            r.gfp_flags.clone()
        };
        *from_csv.entry((r.order, gfp)).or_default() += r.failures;
    }
    // With lost records (or, with --lean, events the kernel kept from the
    // program) the CSV holds a subset: each key at most what tracefs saw,
    // and the CSV's total is what pagefail recorded.
    // Lost records the kernel counted by row are rebuilt into the rows: only
    // those it had no room for leave the CSV short. Failure-only mode sees a
    // subset of tracefs's failures.
    let kept = row.pf_kept.unwrap_or(0);
    let lost = row.pf_lost.unwrap_or(0).saturating_sub(kept)
        + if row.lean {
            row.pf_unseen.unwrap_or(0)
        } else {
            0
        }
        + if row.failures_only {
            row.tracefs
                .zip(row.pf_matched)
                .map_or(0, |(t, p)| t.saturating_sub(p))
        } else {
            0
        };
    let csv_total: u64 = from_csv.values().sum();
    let within = from_csv
        .iter()
        .all(|(k, n)| from_trace.get(k).is_some_and(|t| n <= t));
    let same = if lost == 0 {
        from_csv == from_trace
    } else {
        within && Some(csv_total) == row.pf_recorded.map(|r| r + kept)
    };
    let diff: Vec<String> = from_trace
        .iter()
        .filter(|(k, n)| from_csv.get(*k) != Some(*n))
        .map(|((o, g), n)| {
            format!(
                "o{o} {g}: tracefs {n}, csv {}",
                opt(from_csv.get(&(*o, g.clone())).copied())
            )
        })
        .chain(
            from_csv
                .iter()
                .filter(|(k, _)| !from_trace.contains_key(*k))
                .map(|((o, g), n)| format!("o{o} {g}: csv only {n}")),
        )
        .collect();
    let detail = if diff.is_empty() {
        format!("{} distinct (order, gfp) keys, all equal", from_trace.len())
    } else if lost > 0 && same {
        format!(
            "{} keys; {lost} records lost or unseen, so the CSV holds a subset ({csv_total} = recorded + rebuilt): {}",
            from_trace.len(),
            diff.join("; ")
        )
    } else {
        diff.join("; ")
    };
    add(
        "CSV (order, gfp) totals == tracefs",
        same && !from_trace.is_empty(),
        detail,
    );
}

/// What the kernel source says a failure means for its caller, for the call
/// sites this scenario makes fail: read from `net/core/skbuff.c`,
/// `mm/slub.c`, `net/ipv4/tcp_output.c`, `net/core/neighbour.c`,
/// `net/ipv4/arp.c`, `net/core/sock.c`, `net/core/sock_reuseport.c` and
/// `net/packet/af_packet.c` of 5.10, 6.1 and 6.12. Written apart from
/// pagefail's rule file on purpose: the two readings must agree. Frames leaf
/// first; `None` for a site not listed here.
fn expected_outcome(leaf_first: &[&str], gfp_flags: &str, order: u32) -> Option<&'static str> {
    let noretry = gfp_flags.contains("__GFP_NORETRY");
    for (i, frame) in leaf_first.iter().enumerate() {
        // Compiler suffixes (.part.0) and the 6.10+ _noprof suffix.
        let f = frame.split(['.', ' ']).next().unwrap_or(frame);
        let f = f.strip_suffix("_noprof").unwrap_or(f);
        match f {
            // slab's first try at its preferred order (allocate_slab adds
            // NORETRY); the retry at the minimum order is handed up.
            "allocate_slab" if i == 0 && noretry => return Some("fallback"),
            "allocate_slab"
            | "___slab_alloc"
            | "__slab_alloc"
            | "new_slab"
            | "kmem_cache_alloc"
            | "kmem_cache_alloc_node"
            | "__kmem_cache_alloc_node"
            | "kmem_cache_alloc_lru"
            | "__kmalloc"
            | "__kmalloc_node"
            | "__kmalloc_node_track_caller"
            | "__kmalloc_large_node"
            | "___kmalloc_large_node"
            | "kmalloc_large_node"
            | "kmalloc_large"
            | "kmalloc_order"
            | "kmalloc_order_trace"
            | "kmalloc_trace"
            | "__kmalloc_cache"
            | "kmalloc_reserve"
            | "__alloc_skb"
            | "pskb_expand_head"
            | "__pskb_pull_tail"
            | "sk_prot_alloc"
            | "inet_csk_clone_lock"
            | "__skb_unclone_keeptruesize"
            | "__get_free_pages"
            | "get_free_pages" => {}
            // The code that allocated retries itself, later or smaller.
            "__tcp_send_ack"
            | "tcp_stream_alloc_skb"
            | "sk_stream_alloc_skb"
            | "tcp_fragment"
            | "tso_fragment"
            | "neigh_hash_alloc" => return Some("fallback"),
            "skb_page_frag_refill" if order > 0 => return Some("fallback"),
            "alloc_one_pg_vec_page" => {
                return Some(if noretry { "fallback" } else { "terminal" });
            }
            // The caller gets nothing: a packet not sent or dropped, a
            // connection refused, an error to the system call.
            "skb_segment"
            | "validate_xmit_skb"
            | "arp_create"
            | "tcp_make_synack"
            | "sk_clone_lock"
            | "__reuseport_alloc"
            | "___neigh_create"
            | "__neigh_create"
            | "neigh_alloc"
            | "__neigh_notify"
            | "__netdev_alloc_skb"
            | "__napi_alloc_skb"
            | "napi_alloc_skb"
            | "tcp_send_active_reset" => return Some("terminal"),
            _ => return None,
        }
    }
    None
}

/// Each row's outcome against [`expected_outcome`]; the share of failures
/// per outcome; and the terminal case the scenario makes on purpose:
/// `SO_REUSEPORT` groups that cannot grow (`__reuseport_alloc`; `listen()`
/// gets ENOMEM).
fn check_outcomes(csv: &[CsvRow], traffic: &str, add: &mut impl FnMut(&'static str, bool, String)) {
    let total: u64 = csv.iter().map(|r| r.failures).sum();
    let mut by_outcome: BTreeMap<&str, u64> = BTreeMap::new();
    let mut wrong = Vec::new();
    let mut unlisted: BTreeMap<String, u64> = BTreeMap::new();
    let mut sites: BTreeMap<String, (String, u64)> = BTreeMap::new();
    // Lost failures the kernel counted by row without their frames (its
    // stack table full): no call site to judge.
    let mut stackless = 0;
    for r in csv {
        *by_outcome.entry(r.outcome.as_str()).or_default() += r.failures;
        if r.top_stack.is_empty() {
            stackless += r.failures;
            continue;
        }
        let leaf_first: Vec<&str> = r.top_stack.rsplit(';').collect();
        match expected_outcome(&leaf_first, &r.gfp_flags, r.order) {
            Some(want) if want == r.outcome => {
                let site = leaf_first
                    .iter()
                    .find(|f| {
                        !f.starts_with("allocate_slab")
                            && !f.contains("slab_alloc")
                            && !f.contains("kmalloc")
                            && !f.contains("kmem_cache")
                            && !f.starts_with("__alloc_skb")
                    })
                    .copied()
                    .unwrap_or("?");
                let e = sites
                    .entry(format!(
                        "{site} o{}{}",
                        r.order,
                        if r.gfp_flags.contains("NORETRY") {
                            " NORETRY"
                        } else {
                            ""
                        }
                    ))
                    .or_insert((want.to_owned(), 0));
                e.1 += r.failures;
            }
            Some(want) => wrong.push(format!(
                "{} o{} {}: pagefail {}, kernel source {want} ({} failures)",
                leaf_first
                    .iter()
                    .take(4)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" <- "),
                r.order,
                r.gfp_flags,
                r.outcome,
                r.failures
            )),
            None => {
                let site = leaf_first
                    .iter()
                    .take(4)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" <- ");
                *unlisted
                    .entry(format!("{site} ({})", r.outcome))
                    .or_default() += r.failures;
            }
        }
    }
    let share = |o: &str| {
        let n = by_outcome.get(o).copied().unwrap_or(0);
        let pct = if total == 0 {
            0.0
        } else {
            n as f64 * 100.0 / total as f64
        };
        format!("{o} {n} ({pct:.1}%)")
    };
    add(
        "share of failures per outcome",
        total > 0
            && by_outcome
                .keys()
                .all(|o| ["terminal", "fallback", "unknown"].contains(o)),
        format!(
            "{} of {total}",
            ["terminal", "fallback", "unknown"].map(share).join(", ")
        ),
    );
    let unlisted_n: u64 = unlisted.values().sum();
    add(
        "every call site's outcome == kernel source",
        wrong.is_empty() && unlisted.is_empty() && !sites.is_empty(),
        if wrong.is_empty() && unlisted.is_empty() {
            let mut listed: Vec<String> = sites
                .iter()
                .map(|(s, (o, n))| format!("{s}: {o} {n}"))
                .collect();
            if stackless > 0 {
                listed.push(format!(
                    "{stackless} lost failures without a stack, not judged"
                ));
            }
            listed.join("; ")
        } else {
            let mut parts = wrong;
            parts.extend(unlisted.iter().map(|(s, n)| format!("not listed: {s} {n}")));
            format!(
                "{}; {unlisted_n} failures at unlisted sites",
                parts.join("; ")
            )
        },
    );
    let enomem = traffic
        .split_whitespace()
        .find_map(|w| w.strip_prefix("reuseport_enomem="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let caught: u64 = csv
        .iter()
        .filter(|r| r.outcome == "terminal" && r.top_stack.contains("__reuseport_alloc"))
        .map(|r| r.failures)
        .sum();
    add(
        "terminal on purpose: reuseport growth refused and caught as terminal",
        enomem > 0 && caught > 0,
        format!("listen()/bind() ENOMEM {enomem}; terminal __reuseport_alloc failures {caught}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A console as a guest prints it, cut down to one CSV row a path.
    fn console(tracefs: u64, lost: u64) -> String {
        let recorded = tracefs - lost;
        format!(
            "boot noise\n\
=====PAGEFAIL-BEGIN pagefail-stderr=====\n\
pagefail: attached to mm_page_alloc (raw_tp) in 40 ms on 6.1.0; Ctrl-C to stop\n\
pagefail: warn_alloc kprobe attached\n\
=====PAGEFAIL-END pagefail-stderr=====\n\
=====PAGEFAIL-BEGIN pagefail-summary=====\n\
failures matching the filters: {tracefs} = {recorded} recorded + {lost} lost (ring buffer full)\n\
warn_alloc entries: 7\n\
packet drops (memory reasons, skb:kfree_skb): 3 => PROTO_MEM 0 NEIGH_CREATEFAIL 3 NOMEM 0\n\
\x20 unattributed (attribution map full): 0; without a stack: 0; kfree_skb events unseen (nested, reason unknown): 0\n\
=====PAGEFAIL-END pagefail-summary=====\n\
=====PAGEFAIL-BEGIN pagefail-summary-json=====\n\
{{\"failures\": {tracefs}, \"lost\": {lost}, \"lost_kept\": 0, \"unseen\": 0, \"warn_alloc\": 7, \
\"drops\": {{\"NEIGH_CREATEFAIL\": 3}}, \"drop_reasons\": \"memory\", \"drops_unseen\": 0, \
\"fallbacks_seen\": {{\"window_us\": 1000, \"by_outcome\": {{\"fallback\": {{\"failures\": {recorded}, \"seen\": 1}}, \
\"terminal\": {{\"failures\": 0, \"seen\": 0}}}}, \"elsewhere\": 0, \"lost\": 0, \
\"sites\": [{{\"function\": \"allocate_slab\", \"outcome\": \"fallback\", \"seen\": 1}}]}}}}\n\
=====PAGEFAIL-END pagefail-summary-json=====\n\
=====PAGEFAIL-BEGIN tracefs-drops=====\n\
PROTO_MEM\t0\nNEIGH_CREATEFAIL\t3\nNOMEM\t0\n\
=====PAGEFAIL-END tracefs-drops=====\n\
=====PAGEFAIL-BEGIN pagefail-csv=====\n\
window_start,window_end,host,kernel,comm,pid,cgroup,context,path,order,gfp,gfp_flags,atomic,failures,warned,first_seen,last_seen,top_stack,cause,outcome\n\
a,b,h,k,pfgen-bulk0,10,/,task,tcp,3,0x528c0,GFP_NOWAIT|__GFP_COMP,yes,{},0,a,b,tcp_sendmsg;skb_page_frag_refill,zone,fallback\n\
a,b,h,k,ksoftirqd/1,12,/,softirq,bonding+net-tx+tcp,2,0xa20,GFP_ATOMIC,yes,1,0,a,b,__inet_hash;__reuseport_alloc;__kmalloc,zone,terminal\n\
a,b,h,k,swapper/0,0,/,softirq,net-rx+neigh,1,0xa20,GFP_ATOMIC,yes,1,1,a,b,___neigh_create;neigh_hash_alloc,zone,fallback\n\
=====PAGEFAIL-END pagefail-csv=====\n\
=====PAGEFAIL-BEGIN traffic=====\n\
reuseport_listeners=9 reuseport_errors=2 reuseport_enomem=2\n\
=====PAGEFAIL-END traffic=====\n\
=====PAGEFAIL-BEGIN tracefs-order-gfp=====\n\
1\t0xa20\t1\n2\t0xa20\t1\n3\t0x528c0\t{}\n\
=====PAGEFAIL-END tracefs-order-gfp=====\n\
PAGEFAIL-RESULT fragmented=1 frag_secs=3.0 pagefail_exit=exit_status:_0 \
tracefs_method=hist tracefs_failures={tracefs} tracefs_warn_alloc=7 tracefs_lost=0 \
tracefs_unparsed=0 drops_method=hist drops_kernel_lost=0\n",
            recorded - 2,
            tracefs - 2
        )
    }

    fn checked(console: &str) -> Row {
        let mut row = Row::default();
        check_run(console, &parse_sections_of(console), &mut row);
        row
    }

    fn parse_sections_of(console: &str) -> BTreeMap<String, String> {
        crate::vm::parse_sections(console).present
    }

    #[test]
    fn an_outcome_against_the_kernel_source_fails_the_check() {
        let text = console(10, 0).replace(
            "___neigh_create;neigh_hash_alloc,zone,fallback",
            "___neigh_create;neigh_hash_alloc,zone,terminal",
        );
        let row = checked(&text);
        let c = row
            .checks
            .iter()
            .find(|c| c.name == "every call site's outcome == kernel source")
            .unwrap();
        assert!(!c.pass, "{c:?}");
        assert!(c.detail.contains("kernel source fallback"), "{c:?}");
        // A lost row the kernel kept without frames has no site to judge.
        let stackless = console(10, 0).replace(
            "a,b,___neigh_create;neigh_hash_alloc,zone,fallback",
            "a,b,,zone,unknown",
        );
        let row = checked(&stackless);
        let c = row
            .checks
            .iter()
            .find(|c| c.name == "every call site's outcome == kernel source")
            .unwrap();
        assert!(c.pass, "{c:?}");
        assert!(
            c.detail.contains("1 lost failures without a stack"),
            "{c:?}"
        );
        let unlisted = console(10, 0).replace("neigh_hash_alloc,zone", "mystery_alloc,zone");
        let row = checked(&unlisted);
        assert!(!row.ok());
        assert_eq!(
            expected_outcome(
                &[
                    "allocate_slab",
                    "___slab_alloc",
                    "kmem_cache_alloc",
                    "sk_prot_alloc",
                    "sk_clone_lock"
                ],
                "GFP_ATOMIC|__GFP_NOWARN|__GFP_NORETRY",
                3
            ),
            Some("fallback")
        );
        assert_eq!(
            expected_outcome(
                &[
                    "allocate_slab",
                    "___slab_alloc",
                    "kmem_cache_alloc",
                    "sk_prot_alloc",
                    "sk_clone_lock"
                ],
                "GFP_ATOMIC|__GFP_NOWARN",
                2
            ),
            Some("terminal")
        );
    }

    #[test]
    fn equal_counts_pass_every_check() {
        let row = checked(&console(10, 0));
        let failed: Vec<_> = row.checks.iter().filter(|c| !c.pass).collect();
        assert!(failed.is_empty(), "{failed:?}");
        assert!(row.ok());
        assert_eq!(row.style, "raw_tp");
        assert_eq!(
            (row.pf_matched, row.tracefs, row.pf_lost),
            (Some(10), Some(10), Some(0))
        );
        assert_eq!(row.paths, ["bonding", "neigh", "net-rx", "net-tx", "tcp"]);
    }

    #[test]
    fn gfp_totals_compare_by_mask_or_by_the_names_tracefs_printed() {
        let check = |console: &str| {
            checked(console)
                .checks
                .into_iter()
                .find(|c| c.name.starts_with("CSV (order, gfp) totals"))
                .expect("the gfp check")
        };
        let masks = console(10, 0);
        assert!(check(&masks).pass);
        // A kernel without hist triggers: the names tracefs printed.
        let names = masks.replace(
            "1\t0xa20\t1\n2\t0xa20\t1\n3\t0x528c0\t",
            "1\tGFP_ATOMIC\t1\n2\tGFP_ATOMIC\t1\n3\tGFP_NOWAIT|__GFP_COMP\t",
        );
        assert_ne!(names, masks);
        assert!(check(&names).pass);
        // One failure under another mask fails it.
        let other = masks.replace("2\t0xa20\t1", "2\t0xa22\t1");
        let c = check(&other);
        assert!(!c.pass);
        assert!(
            c.detail.contains("o2 0xa22: tracefs 1, csv -"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn fallbacks_seen_must_account_for_every_record_and_no_terminal_site() {
        let check = |text: &str, name: &str| {
            let row = checked(text);
            row.checks.into_iter().find(|c| c.name == name).unwrap()
        };
        let awaited = "fallbacks seen: every recorded failure awaited, none seen twice";
        let sites = "fallbacks seen at fallback call sites, none at a terminal one";
        let good = console(10, 3);
        assert!(check(&good, awaited).pass && check(&good, sites).pass);
        let short = good.replace(
            "\"failures\": 7, \"seen\": 1",
            "\"failures\": 6, \"seen\": 1",
        );
        assert!(!check(&short, awaited).pass, "one record not awaited");
        let twice = good.replace(
            "\"failures\": 7, \"seen\": 1",
            "\"failures\": 7, \"seen\": 8",
        );
        assert!(!check(&twice, awaited).pass, "more seen than failed");
        let terminal = good.replace(
            "\"outcome\": \"fallback\", \"seen\": 1",
            "\"outcome\": \"terminal\", \"seen\": 1",
        );
        assert!(
            !check(&terminal, sites).pass,
            "a terminal site seen falling back"
        );
        let missing = good.replace("\"fallbacks_seen\"", "\"other\"");
        assert!(!checked(&missing).ok());
    }

    #[test]
    fn lost_records_leave_a_subset_that_still_passes() {
        let row = checked(&console(10, 3));
        assert!(row.ok(), "{:?}", row.checks);
    }

    #[test]
    fn a_missed_failure_fails_the_count_check() {
        let text = console(10, 0).replace("tracefs_failures=10", "tracefs_failures=11");
        let row = checked(&text);
        let c = row
            .checks
            .iter()
            .find(|c| c.name == "pagefail count == tracefs count")
            .unwrap();
        assert!(!c.pass);
        assert!(!row.ok());
    }

    /// A lean run whose count fell short of tracefs by `short` events, with
    /// `unseen` reported by the kernel.
    fn lean_row(short: u64, unseen: u64) -> Row {
        let text = console(10, 0)
            .replace(
                "tracefs_failures=10",
                &format!("tracefs_failures={}", 10 + short),
            )
            .replace("\"unseen\": 0", &format!("\"unseen\": {unseen}"));
        let mut row = Row {
            lean: true,
            ..Row::default()
        };
        check_run(&text, &parse_sections_of(&text), &mut row);
        row
    }

    #[test]
    fn lean_runs_may_fall_short_only_by_the_unseen_events() {
        let row = lean_row(0, 0);
        assert!(row.ok(), "{:?}", row.checks);
        assert_eq!(row.pf_unseen, Some(0));
        let row = lean_row(2, 5);
        let name = "pagefail <= tracefs <= pagefail + unseen (--lean)";
        let c = row.checks.iter().find(|c| c.name == name).unwrap();
        assert!(c.pass, "{c:?}");
        // Short by more than the kernel says it skipped: a real miss.
        let row = lean_row(6, 5);
        let c = row.checks.iter().find(|c| c.name == name).unwrap();
        assert!(!c.pass, "{c:?}");
        assert!(!row.ok());
    }

    #[test]
    fn drop_checks_compare_per_reason() {
        let summary = serde_json::json!({
            "drops": {"NEIGH_CREATEFAIL": 12},
            "drop_reasons": "memory",
            "drops_unseen": 0
        });
        let sections = |neigh: u64| -> BTreeMap<String, String> {
            [
                (
                    "tracefs-drops".to_owned(),
                    format!("PROTO_MEM\t0\nNEIGH_CREATEFAIL\t{neigh}\nNOMEM\t0\n"),
                ),
                (
                    "neigh-table-full".to_owned(),
                    "sent=0 refused_einval=12".to_owned(),
                ),
            ]
            .into_iter()
            .collect()
        };
        let res: BTreeMap<String, String> = [("drops_kernel_lost", "0"), ("drops_method", "hist")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let passed = |neigh| {
            check_drops(&sections(neigh), &res, Some(&summary))
                .iter()
                .all(|c| c.pass)
        };
        assert!(passed(12));
        assert!(!passed(13), "a drop pagefail missed fails the check");
        assert!(!passed(11), "a drop tracefs did not see fails the check");
        let none: BTreeMap<String, String> = [(
            "tracefs-drops".to_owned(),
            "unavailable: no reason field\n".to_owned(),
        )]
        .into_iter()
        .collect();
        let said = serde_json::json!({
            "drops": {},
            "drop_reasons": "not available: the skb:kfree_skb tracepoint has no `reason` field",
            "drops_unseen": null
        });
        assert!(check_drops(&none, &res, Some(&said)).iter().all(|c| c.pass));
        assert!(
            !check_drops(&none, &res, Some(&summary))
                .iter()
                .all(|c| c.pass)
        );
        // No summary JSON at all: the drop counts cannot be compared.
        assert!(
            !check_drops(&sections(12), &res, None)
                .iter()
                .all(|c| c.pass)
        );
    }

    #[test]
    fn no_result_line_is_an_error() {
        let row = checked("Kernel booted\n");
        assert!(row.error.is_some());
        assert!(!row.ok());
    }
}
