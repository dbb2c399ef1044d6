//! Booting a kernel and initramfs under qemu (TCG), with a hard timeout.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::kernel::Kernel;
use super::{Sections, parse_sections};

/// The qemu binary used for every `x86_64` guest.
pub const QEMU: &str = "qemu-system-x86_64";

/// How qemu runs guests of one architecture.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// The qemu binary.
    pub qemu: &'static str,
    /// The Debian package that has it.
    pub package: &'static str,
    /// Machine and CPU arguments.
    pub args: &'static [&'static str],
    /// The console device the kernel writes to.
    pub console: &'static str,
}

/// The qemu machine of `arch`. arm64 guests run on the `virt` board
/// (PL011 console, PSCI power-off) with a Cortex-A57: TCG emulates it about
/// three times faster than `-cpu max` (pointer authentication, SVE), measured
/// 5 s against 16 s to boot Debian 6.1 to `/init`.
pub fn machine(arch: crate::arch::Arch) -> Machine {
    match arch {
        crate::arch::Arch::Amd64 => Machine {
            qemu: QEMU,
            package: "qemu-system-x86",
            args: &[],
            console: "ttyS0",
        },
        crate::arch::Arch::Arm64 => Machine {
            qemu: "qemu-system-aarch64",
            package: "qemu-system-arm",
            args: &["-M", "virt", "-cpu", "cortex-a57"],
            console: "ttyAMA0",
        },
    }
}

/// Console lines that make a run fail.
pub const FATAL_CONSOLE: &[&str] = &["Kernel panic", "soft lockup"];

/// How to run one guest.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// Name of the run: the console log is `target/vm/logs/<name>.log`.
    pub name: String,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Hard wall-clock limit; qemu is killed when it passes and the run fails.
    pub timeout: Duration,
    /// Kernel command line after the fixed part
    /// (`console=ttyS0 rdinit=/init panic=-1`), e.g. `quiet loglevel=1`.
    pub append: String,
    /// Extra qemu arguments (devices, `-cpu`).
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// 256 MB, 2 vCPUs, 120 s, quiet console; a 1 MiB kernel log, so that a
    /// run's OOM reports are still there at its end after the page allocation
    /// failure reports the kernel printed meanwhile.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            memory_mb: 256,
            cpus: 2,
            timeout: Duration::from_mins(2),
            append: "quiet loglevel=1 log_buf_len=1M".to_owned(),
            extra_args: Vec::new(),
        }
    }
}

/// What a finished run left.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The whole console, carriage returns removed.
    pub console: String,
    /// The result sections the guest printed between markers.
    pub sections: Sections,
    /// The console log file.
    pub log: PathBuf,
    /// Wall-clock time from starting qemu to its exit.
    pub elapsed: Duration,
}

impl RunOutput {
    /// The last `n` console lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Boot `kernel` with `initrd` and wait for the guest to power off.
///
/// # Errors
/// When qemu is missing or exits non-zero, the timeout passes (qemu is killed),
/// or the console shows one of [`FATAL_CONSOLE`]. The error names the log file.
pub fn run(kernel: &Kernel, initrd: &Path, cfg: &QemuConfig) -> Result<RunOutput> {
    match boot(kernel, initrd, cfg) {
        Err(BootError::BeforeInit(log)) => {
            // Emulated SMP guests now and then oops while the kernel patches
            // its own text during its initcalls (seen once: `int3` in
            // `sched_clock_cpu` on 6.12); nothing of the test has run yet, so
            // the run is booted once more, and the first console is kept.
            let kept = log.with_extension("boot-crash.log");
            let _ = fs::rename(&log, &kept);
            eprintln!(
                "vm: {}: the guest kernel crashed in its own initcalls, before /init ran \
                 (console kept: {}); booting it once more",
                cfg.name,
                kept.display()
            );
            boot(kernel, initrd, cfg).map_err(BootError::into_anyhow)
        }
        other => other.map_err(BootError::into_anyhow),
    }
}

/// Why a boot gave no result.
enum BootError {
    /// The kernel panicked during its initcalls, before /init started: the
    /// console log.
    BeforeInit(PathBuf),
    Other(anyhow::Error),
}

impl BootError {
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            Self::BeforeInit(log) => anyhow::anyhow!(
                "the guest kernel crashed while booting, before /init ran, twice (console: {})",
                log.display()
            ),
            Self::Other(e) => e,
        }
    }
}

impl From<anyhow::Error> for BootError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

impl From<std::io::Error> for BootError {
    fn from(e: std::io::Error) -> Self {
        Self::Other(e.into())
    }
}

/// Whether a console that shows a panic shows it before /init ran: a trace
/// through `kernel_init_freeable` (the initcalls; /init is started after it
/// returns) and no output of the guest's own programs, which print their
/// results between `PAGEFAIL` markers.
fn crashed_before_init(console: &str) -> bool {
    console.contains("Kernel panic")
        && console.contains("kernel_init_freeable")
        && !console.contains("PAGEFAIL")
}

fn boot(kernel: &Kernel, initrd: &Path, cfg: &QemuConfig) -> Result<RunOutput, BootError> {
    let logs = super::vm_dir().join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log = logs.join(format!("{}.log", cfg.name));
    let console_file =
        fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let m = machine(kernel.arch);
    let qemu = m.qemu;
    let append = format!("console={} rdinit=/init panic=-1 {}", m.console, cfg.append);
    let mut cmd = Command::new(qemu);
    cmd.args(m.args)
        .args(["-accel", "tcg", "-nographic", "-no-reboot", "-nodefaults"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .args(["-m", &cfg.memory_mb.to_string()])
        .args(["-smp", &cfg.cpus.to_string()])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .args(&cfg.extra_args)
        .stdin(Stdio::null())
        .stdout(console_file.try_clone()?)
        .stderr(console_file);
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("{qemu} not found: apt-get install {}", m.package)
        } else {
            anyhow::Error::new(e).context(format!("starting {qemu}"))
        }
    })?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() >= cfg.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let raw = fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
    let console = String::from_utf8_lossy(&raw).replace('\r', "");
    let Some(status) = status else {
        return Err(anyhow::anyhow!(
            "{}: guest did not power off within {:?}; qemu was killed (console: {})",
            cfg.name,
            cfg.timeout,
            log.display()
        )
        .into());
    };
    if crashed_before_init(&console) {
        return Err(BootError::BeforeInit(log));
    }
    if let Some(bad) = FATAL_CONSOLE.iter().find(|p| console.contains(*p)) {
        return Err(anyhow::anyhow!(
            "{}: the console shows {bad:?} (console: {})",
            cfg.name,
            log.display()
        )
        .into());
    }
    if !status.success() {
        return Err(anyhow::anyhow!(
            "{}: {qemu} exited with {status} (console: {})",
            cfg.name,
            log.display()
        )
        .into());
    }
    let sections = parse_sections(&console);
    Ok(RunOutput {
        console,
        sections,
        log,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::initramfs::Initramfs;
    use crate::vm::kernel;

    #[test]
    fn only_a_panic_in_the_initcalls_is_a_crash_before_init() {
        let early = "[    1.3] Call Trace:\n[    1.3]  do_one_initcall+0x5b/0x310\n\
                     [    1.3]  kernel_init_freeable+0x23d/0x2a0\n\
                     [    1.4] Kernel panic - not syncing: Fatal exception in interrupt\n";
        assert!(crashed_before_init(early));
        let late = format!("=====PAGEFAIL-BEGIN traffic=====\n{early}");
        assert!(!crashed_before_init(&late), "the guest's programs had run");
        assert!(!crashed_before_init(
            "[ 9.1] Kernel panic - not syncing: Attempted to kill init!\n"
        ));
        assert!(!crashed_before_init(
            "[ 1.3]  kernel_init_freeable+0x23d/0x2a0\n"
        ));
    }

    /// Boots Debian 6.1 (downloads it once): `cargo test -p xtask -- --ignored`.
    #[test]
    #[ignore = "boots a VM; needs qemu and the Debian registry"]
    fn panic_and_timeout_fail_the_run() {
        let k = kernel::fetch(&kernel::spec("6.1").unwrap()).unwrap();
        let images = crate::vm::vm_dir().join("images");

        // /init exits: the kernel panics ("Attempted to kill init").
        let mut tree = Initramfs::new().unwrap();
        tree.set_init("#!/bin/sh\nexit 0\n");
        let img = images.join("test-panic.cpio");
        tree.write(&img).unwrap();
        let err = run(&k, &img, &QemuConfig::new("test-panic")).unwrap_err();
        assert!(err.to_string().contains("Kernel panic"), "{err:#}");

        // /init hangs: the timeout kills qemu.
        tree.set_init("#!/bin/sh\nwhile :; do /bin/busybox sleep 1; done\n");
        let img = images.join("test-timeout.cpio");
        tree.write(&img).unwrap();
        let mut cfg = QemuConfig::new("test-timeout");
        cfg.timeout = Duration::from_secs(15);
        let start = Instant::now();
        let err = run(&k, &img, &cfg).unwrap_err();
        assert!(err.to_string().contains("did not power off"), "{err:#}");
        assert!(start.elapsed() < Duration::from_secs(20));
    }
}
