//! `cargo xtask vm-test --scenario pressure`: `pagefail record` through the
//! incident it watches (also part of `cargo xtask test`, on [`KERNEL`]).
//!
//! The guest (256 MB, no swap) is cgroup v2 only: `/init` mounts cgroup2 at
//! `/sys/fs/cgroup` and a 1 MiB tmpfs at `/out`, then runs `vm-scenario
//! pressure` (crate `pagefail-tests`): `pagefail record --output /out
//! --interval 2s --all` with its own defaults (its `oom_score_adj` is its
//! own business), a failure generator in the cgroup `/pfgen` (accounted
//! order-6 allocations whose memory cgroup charge fails), a filler that
//! takes every byte of `/out`, then memory hogs one after the other until
//! the OOM killer has killed each. Then the filler goes, two intervals pass,
//! and pagefail gets SIGTERM.
//!
//! Checked on the host, from the guest's result line:
//! - the OOM killer killed (at least one per hog), and never pagefail;
//!   pagefail was running at the end and exited 0 on SIGTERM;
//! - writes failed for want of space (held back in memory), and every
//!   interval was written once space returned: none left unwritten, none
//!   dropped, as many summary files as totals files as intervals written;
//! - the books over all interval files: matched = recorded + lost, and the
//!   summary rows add up to recorded;
//! - the generator's failures are there, with its cgroup v2 path `/pfgen`.
//!
//! # Time
//! One kernel, boot ~6 s, the scenario ~30-40 s under TCG; [`GUEST_TIMEOUT`]
//! is the hard limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::initramfs::Initramfs;
use super::kernel;
use super::qemu::{self, QemuConfig};
use super::test::Check;

/// The kernel `cargo xtask test` runs the scenario on.
pub const KERNEL: &str = "6.1";

/// Hard wall-clock limit of the guest.
pub const GUEST_TIMEOUT: Duration = Duration::from_mins(3);

/// Hogs the guest starts, one after the other (as in `vm-scenario`).
const HOG_ROUNDS: u64 = 3;

/// The outcome of the scenario.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub kernel: String,
    pub release: String,
    /// The guest's `PAGEFAIL-RESULT` pairs.
    pub figures: BTreeMap<String, String>,
    pub seconds: f64,
    pub checks: Vec<Check>,
    /// A run that did not get as far as the guest's checks.
    pub error: Option<String>,
    pub log: PathBuf,
}

impl Outcome {
    /// Every check passed and the run completed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.pass)
    }

    fn fig(&self, key: &str) -> &str {
        self.figures.get(key).map_or("-", String::as_str)
    }

    /// The outcome as a Markdown section for `target/vm/report.md`.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "\n### under pressure: pagefail record on {} ({}): {} in {:.0} s (console: {})\n\n\
             - what pagefail went through: {} OOM kills in the guest ({} of {HOG_ROUNDS} hogs \
             killed; victims in the kernel log: {}; pagefail among them: {}), its own \
             oom_score_adj {}; `/out` filled ({} bytes of filler): {} interval(s) held back in \
             memory, failed flushes {} for no space, {} for no memory, {} other; \
             {} counter reads retried (no memory)\n\
             - afterwards: {} intervals written, {} not written, {} dropped; books: matched {} = \
             recorded {} + lost {}; summary rows {}; generator pid {}: {} failures, cgroup {}\n",
            self.kernel,
            self.release,
            if self.ok() { "pass" } else { "FAIL" },
            self.seconds,
            self.log.display(),
            self.fig("oom_kills"),
            self.fig("hog_kills"),
            self.fig("victims"),
            self.fig("pagefail_victim"),
            self.fig("oom_score_adj"),
            self.fig("filled_bytes"),
            self.fig("held_back"),
            self.fig("no_space"),
            self.fig("no_memory"),
            self.fig("other"),
            self.fig("map_retries"),
            self.fig("written"),
            self.fig("not_written"),
            self.fig("dropped"),
            self.fig("matched"),
            self.fig("recorded"),
            self.fig("lost"),
            self.fig("csv_failures"),
            self.fig("gen_pid"),
            self.fig("gen_failures"),
            self.fig("gen_cgroups"),
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "- error: {e}");
        }
        for c in &self.checks {
            let _ = writeln!(s, "{c}");
        }
        s
    }
}

/// Build the static binaries, boot `ver`, run the scenario and check. A
/// failure of any step is in the outcome (`error` or a failed check).
pub fn run(ver: &str) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome {
        kernel: ver.to_owned(),
        log: super::vm_dir()
            .join("logs")
            .join(format!("{}.log", run_name(ver))),
        ..Outcome::default()
    };
    if let Err(e) = try_run(ver, &mut out) {
        out.error = Some(format!("{e:#}"));
    }
    out.seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "vm-test: under pressure on {ver}: {} in {:.0} s",
        if out.ok() { "pass" } else { "FAIL" },
        out.seconds
    );
    out
}

fn run_name(ver: &str) -> String {
    format!("vm-pressure-{ver}")
}

const INIT: &str = "#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /out
mount -t tmpfs -o size=1m tmpfs /out
[ -e /dev/kmsg ] || mknod /dev/kmsg c 1 11
echo never > /sys/kernel/mm/transparent_hugepage/enabled
/bin/vm-scenario pressure /bin/pagefail
echo vm-scenario-exit=$?
poweroff -f
";

fn try_run(ver: &str, out: &mut Outcome) -> Result<()> {
    crate::setup::ensure_packages(&["qemu-system-x86", "busybox-static"])?;
    let pagefail = crate::dist::build_static()?;
    let scenario = crate::dist::build_static_bin("pagefail-tests", "vm-scenario")?;
    let k = kernel::fetch(&kernel::spec(ver)?)?;
    out.release.clone_from(&k.release);
    let mut tree = Initramfs::new()?;
    tree.add_binary(&pagefail, "/bin/pagefail")?;
    tree.add_binary(&scenario, "/bin/vm-scenario")?;
    tree.set_init(INIT);
    let name = run_name(ver);
    let image = super::vm_dir().join("images").join(format!("{name}.cpio"));
    tree.write(&image)?;
    let mut cfg = QemuConfig::new(&name);
    cfg.timeout = GUEST_TIMEOUT;
    let run = qemu::run(&k, &image, &cfg)?;
    out.log.clone_from(&run.log);
    let Some(line) = run
        .console
        .lines()
        .find_map(|l| l.split_once("PAGEFAIL-RESULT ").map(|(_, r)| r))
    else {
        anyhow::bail!(
            "the guest printed no PAGEFAIL-RESULT line; see {}",
            run.log.display()
        );
    };
    out.figures = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Some(e) = out.figures.get("error") {
        anyhow::bail!("the scenario failed in the guest: {e}");
    }
    out.checks = checks(&out.figures);
    Ok(())
}

/// The checks of the guest's figures.
fn checks(f: &BTreeMap<String, String>) -> Vec<Check> {
    let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
    let text = |k: &str| f.get(k).map_or("-", String::as_str);
    let mut c = Vec::new();
    let mut add = |name: &'static str, pass: bool, detail: String| {
        c.push(Check { name, pass, detail });
    };
    let kills = num("oom_kills");
    let hogs = num("hog_kills");
    add(
        "the OOM killer killed every hog (repeated OOM kills)",
        hogs == Some(HOG_ROUNDS) && kills.is_some_and(|k| k >= HOG_ROUNDS),
        format!(
            "{} of {HOG_ROUNDS} hogs killed, {} OOM kills (vmstat oom_kill)",
            text("hog_kills"),
            text("oom_kills")
        ),
    );
    add(
        "the OOM killer never picked pagefail",
        text("pagefail_victim") == "false",
        format!(
            "victims in the kernel log: {}; pagefail's oom_score_adj {}",
            text("victims"),
            text("oom_score_adj")
        ),
    );
    add(
        "pagefail record still running at the end, then exited 0 on SIGTERM",
        text("alive_at_end") == "true" && text("exit") == "0",
        format!(
            "running at the end: {}; exit {}",
            text("alive_at_end"),
            text("exit")
        ),
    );
    add(
        "record set its own oom_score_adj (-900 by default)",
        text("oom_score_adj") == "-900",
        format!("/proc/<pagefail>/oom_score_adj = {}", text("oom_score_adj")),
    );
    add(
        "writes failed for want of space and intervals were held back",
        num("no_space").is_some_and(|n| n > 0) && num("held_back").is_some_and(|n| n > 0),
        format!(
            "{} failed flushes (no space), {} intervals held back",
            text("no_space"),
            text("held_back")
        ),
    );
    let written = num("written");
    add(
        "every interval written once space returned, each once",
        written.is_some_and(|w| w > 0)
            && num("not_written") == Some(0)
            && num("dropped") == Some(0)
            && num("totals_files") == written
            && num("summary_files") == written,
        format!(
            "{} written, {} not written, {} dropped; files: {} totals, {} summaries",
            text("written"),
            text("not_written"),
            text("dropped"),
            text("totals_files"),
            text("summary_files")
        ),
    );
    let (m, r, l) = (num("matched"), num("recorded"), num("lost"));
    add(
        "the books are exact: matched = recorded + lost, rows add up to recorded",
        m.is_some() && m == r.zip(l).map(|(r, l)| r + l) && num("csv_failures") == r,
        format!(
            "matched {} = recorded {} + lost {}; summary rows {}",
            text("matched"),
            text("recorded"),
            text("lost"),
            text("csv_failures")
        ),
    );
    add(
        "the generator's failures are recorded with its cgroup v2 path",
        num("gen_failures").is_some_and(|n| n > 0) && text("gen_cgroups") == "/pfgen",
        format!(
            "{} failures of pid {}, cgroup(s) {}",
            text("gen_failures"),
            text("gen_pid"),
            text("gen_cgroups")
        ),
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(line: &str) -> BTreeMap<String, String> {
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    const GOOD: &str = "oom_kills=3 hog_kills=3 victims=3 pagefail_victim=false alive_at_end=true \
        exit=0 oom_score_adj=-900 no_space=4 held_back=5 no_memory=0 written=12 not_written=0 \
        dropped=0 totals_files=12 summary_files=12 matched=50 recorded=50 lost=0 \
        csv_failures=50 gen_pid=77 gen_failures=40 gen_cgroups=/pfgen";

    #[test]
    fn a_good_run_passes_every_check() {
        let c = checks(&figures(GOOD));
        assert!(c.iter().all(|c| c.pass), "{c:?}");
    }

    #[test]
    fn pagefail_as_a_victim_or_unbalanced_books_fail() {
        let bad = GOOD.replace("pagefail_victim=false", "pagefail_victim=true");
        assert!(checks(&figures(&bad)).iter().any(|c| !c.pass));
        let bad = GOOD.replace("recorded=50", "recorded=49");
        assert!(checks(&figures(&bad)).iter().any(|c| !c.pass));
        let bad = GOOD.replace("not_written=0", "not_written=1");
        assert!(checks(&figures(&bad)).iter().any(|c| !c.pass));
        let bad = GOOD.replace("gen_cgroups=/pfgen", "gen_cgroups=/");
        assert!(checks(&figures(&bad)).iter().any(|c| !c.pass));
    }
}
