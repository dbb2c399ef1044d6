//! The VM test tier: Debian kernels booted under qemu with a generated initramfs.
//!
//! The host kernel of the development machines lacks kprobes and runs with
//! lockdown, and its memory cannot be fragmented safely. Debian's own cloud
//! kernels (5.10, 6.1, 6.12) are what users run, so they are booted in qemu.
//!
//! # How the pieces fit
//! 1. [`kernel`]: [`kernel::fetch`] downloads a Debian `linux-image-*-cloud-amd64-unsigned`
//!    package with `apt-get download` (other suites through a private sources list
//!    under `target/vm/apt/<suite>/`, so the host's apt state is never changed),
//!    extracts it with `dpkg-deb -x` and runs `depmod` on the extracted tree, all
//!    cached under `target/vm/kernels/<ver>/`. A second call finds the cache and
//!    does no network traffic.
//! 2. [`initramfs`]: [`initramfs::Initramfs`] collects a guest file tree in memory
//!    (static busybox, an `/init` script, host binaries plus the shared libraries
//!    `ldd` names, kernel modules with their `modules.dep` dependencies, `.ko.xz`
//!    decompressed) and writes it as an uncompressed `newc` cpio archive, which
//!    every kernel can unpack without a decompressor. No root is needed: device
//!    nodes are written into the archive, not created on the host.
//! 3. [`qemu`]: [`qemu::run`] boots the kernel with that archive under
//!    `qemu-system-x86_64` (TCG: nested KVM does not work on these machines),
//!    console on ttyS0 captured to `target/vm/logs/<name>.log`, and returns the
//!    console text and the result sections. The guest prints each result
//!    between `=====PAGEFAIL-BEGIN <name>=====` and [`end_marker`] lines (the
//!    shell functions [`SHELL_HELPERS`] do it) and powers off.
//! 4. [`capture`]: `cargo xtask vm-capture` uses the three to regenerate the
//!    fixtures under `tests/fixtures/` from real kernels; [`smoke`]
//!    (`cargo xtask vm-smoke`) checks modules and host binaries work in guests.
//! 5. [`test`]: `cargo xtask vm-test` causes real atomic allocation failures
//!    (fragmented memory, traffic over a bond) in each kernel and checks
//!    `pagefail watch` against tracefs in the same guest; the table goes to
//!    `target/vm/report.md`. [`test::run_all`] is the entry for `cargo xtask test`.
//! 6. [`bare`]: the static binary of `cargo xtask dist` alone in a guest (no
//!    shell, busybox, loader or shared library; a static `/init` of ours),
//!    where `pagefail check` and `pagefail watch` must work. Part of
//!    `vm-test` (`--scenario bare` runs only it) and of `cargo xtask test`.
//!
//! # Time limits
//! Under TCG a cloud kernel boots to `/init` in 4-8 s (256 MB, 2 vCPUs). Every
//! run has a hard wall-clock timeout ([`qemu::QemuConfig::timeout`], 120 s for
//! captures): when it passes, qemu is killed and the run fails. A run also fails
//! when qemu exits non-zero or the console shows `Kernel panic` or
//! `soft lockup`. The kernel is started with `panic=-1` and qemu with
//! `-no-reboot`, so a panic ends qemu at once instead of waiting for the timeout.
//! Downloads (once per kernel) take a few seconds each. Measured on these
//! machines: `vm-capture --kernel all` ~26 s with warm caches (boots 4.7 s for
//! 5.10, 6.0 s for 6.1, 8.1 s for 6.12), `vm-smoke` ~29 s, and
//! `cargo test -p xtask -- --ignored` (panic and timeout detection) ~20 s,
//! `vm-test --kernel all` ~80 s with warm caches (24-33 s a kernel: boot,
//! attach ~1 s, fragmenting 2-5 s, 8 s of traffic, quiesce, report), each
//! guest limited to [`test::GUEST_TIMEOUT`].
//!
//! # arm64
//! `--arch arm64` boots Debian's `cloud-arm64` kernels
//! ([`kernel::ARM64_KERNELS`]) under `qemu-system-aarch64` (`virt` board,
//! Cortex-A57, console on `ttyAMA0`: [`qemu::machine`]) with the cross-built
//! static binaries (`crate::cross`) and a busybox and iproute2 (with its
//! libraries, found from its ELF headers) extracted from Debian's arm64
//! packages ([`initramfs::userland`]). Measured: Debian 6.1 boots to `/init`
//! in ~5 s; the atomic-net guest runs ~32 s and the bare guest ~12 s.
//!
//! # Host requirements
//! `qemu-system-x86 busybox-static kmod xz-utils` (and `iproute2` for
//! `vm-smoke` and `vm-test`), installed with apt; each missing tool is named
//! in the error (`vm-test` installs them itself when run as root on Debian).
//! No `ethtool` is needed: the guest turns scatter-gather off with the
//! `SIOCETHTOOL` ioctl.

pub mod bare;
pub mod capture;
pub mod initramfs;
pub mod kernel;
pub mod pressure;
pub mod qemu;
pub mod smoke;
pub mod test;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `target/vm` under the cargo target directory: kernels, apt state, images, logs.
pub fn vm_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("vm")
}

const MARK: &str = "=====PAGEFAIL";

/// The line a guest prints after the result section `name`.
pub fn end_marker(name: &str) -> String {
    format!("{MARK}-END {name}=====")
}

/// busybox `sh` functions for `/init` scripts that print results between markers:
/// `pf_file NAME PATH` prints a file (or an absent marker), `pf_begin NAME` and
/// `pf_end NAME` bracket any output.
pub const SHELL_HELPERS: &str = r#"pf_begin() { echo "=====PAGEFAIL-BEGIN $1====="; }
pf_end() { echo "=====PAGEFAIL-END $1====="; }
pf_file() {
    if [ -e "$2" ]; then pf_begin "$1"; cat "$2"; pf_end "$1"
    else echo "=====PAGEFAIL-ABSENT $1====="; fi
}
"#;

/// The result sections of a console log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sections {
    /// Section name -> the exact text between its markers.
    pub present: BTreeMap<String, String>,
    /// Sections the guest reported absent.
    pub absent: Vec<String>,
}

/// Cut the result sections out of a console log (carriage returns already removed).
///
/// A section's text starts after the line holding its begin marker (which may be
/// preceded by firmware escape codes on the same line) and ends where its end
/// marker starts, so a file without a final newline is reproduced exactly.
pub fn parse_sections(console: &str) -> Sections {
    let mut out = Sections::default();
    let begin = format!("{MARK}-BEGIN ");
    let absent = format!("{MARK}-ABSENT ");
    let mut pos = 0;
    while pos < console.len() {
        let rest = &console[pos..];
        let next_begin = rest.find(&begin);
        let next_absent = rest.find(&absent);
        match (next_begin, next_absent) {
            (Some(b), a) if a.is_none_or(|a| b < a) => {
                let name_start = pos + b + begin.len();
                let Some(name_len) = console[name_start..].find("=====") else {
                    break;
                };
                let name = &console[name_start..name_start + name_len];
                let Some(nl) = console[name_start..].find('\n') else {
                    break;
                };
                let body_start = name_start + nl + 1;
                let end = end_marker(name);
                let Some(e) = console[body_start..].find(&end) else {
                    break;
                };
                out.present.insert(
                    name.to_owned(),
                    console[body_start..body_start + e].to_owned(),
                );
                pos = body_start + e + end.len();
            }
            (_, Some(a)) => {
                let name_start = pos + a + absent.len();
                let Some(name_len) = console[name_start..].find("=====") else {
                    break;
                };
                out.absent
                    .push(console[name_start..name_start + name_len].to_owned());
                pos = name_start + name_len;
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_cut_exactly() {
        let log = "SeaBIOS\nBooting from ROM..\x1b[2J=====PAGEFAIL-BEGIN uname=====\n6.1.0\n\
                   =====PAGEFAIL-END uname=====\n=====PAGEFAIL-ABSENT boost=====\n\
                   =====PAGEFAIL-BEGIN nonl=====\nabc=====PAGEFAIL-END nonl=====\n";
        let s = parse_sections(log);
        assert_eq!(s.present["uname"], "6.1.0\n");
        assert_eq!(s.present["nonl"], "abc");
        assert_eq!(s.absent, vec!["boost".to_owned()]);
    }
}
