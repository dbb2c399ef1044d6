//! The static binary alone in a guest: `cargo xtask vm-test --scenario bare`
//! (also part of the default `vm-test` and of `cargo xtask test`).
//!
//! The initramfs holds `/init` (the static `bare-init` of crate
//! `pagefail-tests`), the static `/pagefail` that `cargo xtask dist` ships,
//! `/dev/console`, `/dev/null` and empty directories: no shell, no busybox,
//! no dynamic loader, no shared library. `/init` mounts what pagefail needs,
//! runs `pagefail check --json` and `pagefail watch --all --duration 4` while
//! it touches 4096 fresh pages, prints the outputs between markers and powers
//! off.
//!
//! Checked on the host:
//! - the archive, read back from disk: no `*.so*` name, no symlink, and its
//!   only files are `init` and `pagefail`, each an ELF with neither a program
//!   interpreter (`PT_INTERP`) nor a needed library (`DT_NEEDED`);
//! - in the guest: `check` exits 0 and says the raw tracepoint loaded and
//!   attached; `watch` exits 0, attached, and counted at least as many
//!   order-0 allocations as pages `/init` touched while it watched.
//!
//! # Time
//! One kernel ([`KERNEL`], Debian 6.1), 256 MB: boot ~6 s, `check` ~2 s,
//! `watch` 4 s plus start-up under TCG; [`GUEST_TIMEOUT`] is the hard limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::initramfs::{Initramfs, read_cpio};
use super::kernel;
use super::qemu::{self, QemuConfig};
use super::test::Check;
use crate::arch::Arch;
use crate::elf;

/// The kernel `cargo xtask test` runs the check on.
pub const KERNEL: &str = "6.1";

/// Hard wall-clock limit of the guest.
pub const GUEST_TIMEOUT: Duration = Duration::from_mins(2);

/// The only files the archive may hold.
const FILES: [&str; 2] = ["init", "pagefail"];

/// The outcome of the check.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub kernel: String,
    pub release: String,
    /// Allocations `watch` counted (all orders), and order 0 alone.
    pub allocations: Option<u64>,
    pub order0: Option<u64>,
    /// Pages `/init` touched while `watch` counted.
    pub touched: Option<u64>,
    /// The attach style `watch` used.
    pub style: String,
    /// Bytes of the archive.
    pub image_bytes: usize,
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

    /// The outcome as a Markdown section for `target/vm/report.md`.
    pub fn markdown(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let mut s = format!(
            "\n### bare initramfs: static pagefail alone on {} ({}): {} in {:.0} s (console: {})\n\n\
             - archive: {} bytes; watch ({}): {} allocations, {} of order 0, {} pages touched\n",
            self.kernel,
            self.release,
            if self.ok() { "pass" } else { "FAIL" },
            self.seconds,
            self.log.display(),
            self.image_bytes,
            self.style,
            opt(self.allocations),
            opt(self.order0),
            opt(self.touched),
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

/// Build the static binaries, boot `ver` with them alone, and check. A
/// failure of any step is in the outcome (`error` or a failed check).
pub fn run(ver: &str) -> Outcome {
    run_for(ver, Arch::Amd64)
}

/// [`run`] on a guest of `arch` with that architecture's static binaries.
pub fn run_for(ver: &str, arch: Arch) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome {
        kernel: super::test::kernel_label(ver, arch),
        log: super::vm_dir()
            .join("logs")
            .join(format!("{}.log", run_name(ver, arch))),
        ..Outcome::default()
    };
    if let Err(e) = try_run(ver, arch, &mut out) {
        out.error = Some(format!("{e:#}"));
    }
    out.seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "vm-test: bare initramfs on {ver} {arch}: {} in {:.0} s",
        if out.ok() { "pass" } else { "FAIL" },
        out.seconds
    );
    out
}

fn run_name(ver: &str, arch: Arch) -> String {
    match arch {
        Arch::Amd64 => format!("vm-bare-{ver}"),
        other @ Arch::Arm64 => format!("vm-bare-{}-{ver}", other.deb()),
    }
}

fn try_run(ver: &str, arch: Arch, out: &mut Outcome) -> Result<()> {
    crate::setup::ensure_packages(&[qemu::machine(arch).package])?;
    let pagefail = crate::dist::build_static_for(arch)?;
    let init = crate::dist::build_static_bin_for(arch, "pagefail-tests", "bare-init")?;
    let k = kernel::fetch(&kernel::spec_for(ver, arch)?)?;
    out.release.clone_from(&k.release);
    let mut tree = Initramfs::bare();
    tree.add_host_file(&init, "/init")?;
    tree.add_host_file(&pagefail, "/pagefail")?;
    let name = run_name(ver, arch);
    let image = super::vm_dir().join("images").join(format!("{name}.cpio"));
    tree.write(&image)?;
    let archive = fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
    out.image_bytes = archive.len();
    out.checks = archive_checks(&archive, arch)?;
    let mut cfg = QemuConfig::new(&name);
    cfg.timeout = match arch {
        Arch::Amd64 => GUEST_TIMEOUT,
        // TCG runs aarch64 about half as fast.
        Arch::Arm64 => GUEST_TIMEOUT * 3,
    };
    let run = qemu::run(&k, &image, &cfg)?;
    out.log.clone_from(&run.log);
    guest_checks(&run.console, &run.sections.present, out);
    Ok(())
}

/// Checks of the archive as written: what the guest will have.
fn archive_checks(archive: &[u8], arch: Arch) -> Result<Vec<Check>> {
    let entries = read_cpio(archive)?;
    let mut checks = Vec::new();
    let libs: Vec<&str> = entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| {
            n.rsplit('/')
                .next()
                .is_some_and(|base| base.contains(".so"))
        })
        .collect();
    checks.push(Check {
        name: "no shared library (*.so*) in the archive",
        pass: libs.is_empty(),
        detail: if libs.is_empty() {
            format!("{} entries", entries.len())
        } else {
            libs.join(", ")
        },
    });
    let mut elf_notes = Vec::new();
    let mut dynamic = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.is_file() && elf::is_elf(&e.data))
    {
        let machine = elf::machine(&e.data);
        if machine != Some(arch.elf_machine()) {
            dynamic.push(format!("{}: ELF machine {machine:?}, not {arch}", e.name));
            continue;
        }
        match elf::linking(&e.data) {
            Some(l) if l.is_static() => {
                elf_notes.push(format!("{}: static {}", e.name, arch.uname()));
            }
            Some(l) => dynamic.push(format!(
                "{}: interpreter {}, {} needed libraries",
                e.name,
                if l.interp { "yes" } else { "no" },
                l.needed
            )),
            None => dynamic.push(format!("{}: unreadable ELF headers", e.name)),
        }
    }
    checks.push(Check {
        name: "every ELF static and of the guest's architecture",
        pass: dynamic.is_empty() && !elf_notes.is_empty(),
        detail: if dynamic.is_empty() {
            elf_notes.join(", ")
        } else {
            dynamic.join("; ")
        },
    });
    let mut files: Vec<&str> = entries
        .iter()
        .filter(|e| e.is_file())
        .map(|e| e.name.as_str())
        .collect();
    files.sort_unstable();
    let links: Vec<&str> = entries
        .iter()
        .filter(|e| e.is_symlink())
        .map(|e| e.name.as_str())
        .collect();
    let all_elf = entries
        .iter()
        .filter(|e| e.is_file())
        .all(|e| elf::is_elf(&e.data));
    checks.push(Check {
        name: "only /init and /pagefail, both executables, no links (no shell, no busybox)",
        pass: files == FILES && links.is_empty() && all_elf,
        detail: format!("files {files:?}, symlinks {links:?}"),
    });
    Ok(checks)
}

/// `key=value` pairs of the guest's `PAGEFAIL-BARE` line.
fn result_line(console: &str) -> Option<BTreeMap<String, String>> {
    let line = console
        .lines()
        .find_map(|l| l.split_once("PAGEFAIL-BARE ").map(|(_, r)| r))?;
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
    text[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The raw tracepoint's line of `check --json`: (status, detail).
fn raw_tracepoint(check_json: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(check_json).ok()?;
    let line = v
        .get("support")?
        .as_array()?
        .iter()
        .find(|l| l.get("name").and_then(|n| n.as_str()) == Some("raw tracepoint"))?;
    Some((
        line.get("status")?.as_str()?.to_owned(),
        line.get("detail")?.as_str()?.to_owned(),
    ))
}

fn guest_checks(console: &str, sections: &BTreeMap<String, String>, out: &mut Outcome) {
    let Some(res) = result_line(console) else {
        out.error = Some(format!(
            "the guest printed no PAGEFAIL-BARE line (did /init start?); see {}",
            out.log.display()
        ));
        return;
    };
    if let Some(e) = res.get("error") {
        out.error = Some(format!("/init failed in the guest: {e}"));
        return;
    }
    let empty = String::new();
    let get = |k: &str| res.get(k).map_or("?", String::as_str);
    let section = |k: &str| sections.get(k).unwrap_or(&empty);
    let mut add = |name: &'static str, pass: bool, detail: String| {
        out.checks.push(Check { name, pass, detail });
    };

    add(
        "pagefail check exited 0",
        get("check_exit") == "0",
        format!(
            "exit {}; stderr: {}",
            get("check_exit"),
            section("check-stderr").trim()
        ),
    );
    let raw = raw_tracepoint(section("check-stdout"));
    add(
        "check: raw tracepoint loaded and attached",
        raw.as_ref().is_some_and(|(status, detail)| {
            status == "ok" && detail.contains("loaded and attached (verified)")
        }),
        raw.map_or_else(
            || "no \"raw tracepoint\" line in check --json".to_owned(),
            |(s, d)| format!("{s}: {d}"),
        ),
    );

    let stderr = section("watch-stderr");
    // The summary `watch` prints at exit, after the live lines.
    let stdout = section("watch-stdout")
        .split_once("=== pagefail summary ===")
        .map_or("", |(_, s)| s);
    out.style = stderr
        .split_once("attached to mm_page_alloc (")
        .and_then(|(_, r)| r.split_once(')'))
        .map_or_else(|| "?".to_owned(), |(s, _)| s.to_owned());
    add(
        "pagefail watch exited 0",
        get("watch_exit") == "0",
        format!("exit {}", get("watch_exit")),
    );
    add(
        "watch attached",
        get("attached") == "1" && out.style != "?",
        stderr
            .lines()
            .find(|l| l.contains("attached to mm_page_alloc"))
            .unwrap_or("no \"attached to mm_page_alloc\" line")
            .to_owned(),
    );
    out.allocations = number_after(stdout, "allocations: ");
    out.order0 = stdout
        .split_once("succeeded by order: ")
        .and_then(|(_, r)| number_after(r, "o0:"));
    out.touched = res.get("touched_pages").and_then(|v| v.parse().ok());
    add(
        "watch counted page allocations",
        out.allocations.is_some_and(|n| n > 0),
        stdout
            .lines()
            .find(|l| l.starts_with("allocations: "))
            .unwrap_or("no \"allocations:\" summary line")
            .to_owned(),
    );
    add(
        "order-0 allocations >= pages touched while watching",
        get("touched_while_watching") == "1"
            && matches!((out.order0, out.touched), (Some(o), Some(t)) if t > 0 && o >= t),
        format!(
            "order 0: {}, touched {} in {} ms (while watching: {})",
            out.order0.map_or_else(|| "?".to_owned(), |v| v.to_string()),
            get("touched_pages"),
            get("touch_ms"),
            get("touched_while_watching")
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(check_status: &str, order0: u64) -> String {
        format!(
            "[    5.1] Run /init as init process\n\
=====PAGEFAIL-BEGIN check-stdout=====\n\
{{\"kernel\": \"6.1.0\", \"support\": [{{\"name\": \"raw tracepoint\", \"status\": \"{check_status}\", \
\"detail\": \"raw_tp: loaded and attached (verified)\", \"consequence\": \"pagefail will use this\"}}]}}\n\
=====PAGEFAIL-END check-stdout=====\n\
=====PAGEFAIL-BEGIN watch-stdout=====\n\
=== pagefail summary ===\n\
allocations: {total} succeeded, 0 failed (all orders, before filters)\n  succeeded by order: o0:{order0} o1:12\n\
=====PAGEFAIL-END watch-stdout=====\n\
=====PAGEFAIL-BEGIN watch-stderr=====\n\
pagefail: attached to mm_page_alloc (raw_tp) in 90 ms on 6.1.0; Ctrl-C to stop\n\
=====PAGEFAIL-END watch-stderr=====\n\
PAGEFAIL-BARE check_exit=0 watch_exit=0 attached=1 touched_pages=4096 touch_ms=300 touched_while_watching=1\n",
            total = order0 + 12
        )
    }

    fn checked(console: &str) -> Outcome {
        let mut out = Outcome::default();
        let sections = crate::vm::parse_sections(console).present;
        guest_checks(console, &sections, &mut out);
        out
    }

    #[test]
    fn a_good_guest_passes_every_check() {
        let out = checked(&console("ok", 5000));
        assert!(out.ok(), "{:?}", out.checks);
        assert_eq!(out.style, "raw_tp");
        assert_eq!(
            (out.allocations, out.order0, out.touched),
            (Some(5012), Some(5000), Some(4096))
        );
    }

    #[test]
    fn a_failed_attach_or_a_short_count_fails() {
        let out = checked(&console("no", 5000));
        assert!(!out.ok());
        let out = checked(&console("ok", 4000));
        let failed: Vec<_> = out
            .checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            failed,
            ["order-0 allocations >= pages touched while watching"]
        );
        let out = checked(&console("ok", 5000).replace("watch_exit=0", "watch_exit=1"));
        assert!(!out.ok());
        let out = checked("Kernel booted\n");
        assert!(out.error.is_some() && !out.ok());
    }

    #[test]
    fn the_archive_must_hold_only_static_executables() {
        // This test binary is a dynamic ELF (the gnu target's default).
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let dir = std::env::temp_dir().join(format!("pagefail-bare-{}", std::process::id()));
        let write = |t: &Initramfs| {
            let p = dir.join("t.cpio");
            t.write(&p).unwrap();
            fs::read(&p).unwrap()
        };
        let mut t = Initramfs::bare();
        t.add_file("/init", me.clone(), 0o755);
        t.add_file("/pagefail", me.clone(), 0o755);
        let checks = archive_checks(&write(&t), Arch::Amd64).unwrap();
        let failed: Vec<_> = checks.iter().filter(|c| !c.pass).map(|c| c.name).collect();
        if cfg!(target_feature = "crt-static") {
            assert!(failed.is_empty(), "{checks:?}");
        } else {
            assert_eq!(failed, ["every ELF static and of the guest's architecture"]);
        }
        // An x86_64 binary in an arm64 guest fails, static or not.
        let checks = archive_checks(&write(&t), Arch::Arm64).unwrap();
        let _ = fs::remove_dir_all(&dir);
        let c = checks
            .iter()
            .find(|c| c.name == "every ELF static and of the guest's architecture")
            .unwrap();
        assert!(!c.pass && c.detail.contains("not arm64"), "{c:?}");
        // A library, a script /init and a symlink all fail.
        let mut t = Initramfs::bare();
        t.add_file("/lib/libc.so.6", vec![0; 8], 0o644);
        t.add_file("/init", b"#!/bin/sh\n".to_vec(), 0o755);
        t.add_symlink("/bin/sh", "busybox");
        let checks = archive_checks(&write(&t), Arch::Amd64).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert!(checks.iter().all(|c| !c.pass), "{checks:?}");
    }
}
