//! `cargo xtask vm-capture`: regenerate the kernel fixtures from real kernels.
//!
//! For each Debian kernel: boot it, print the `mm_page_alloc` format file, the
//! memory-state files of `/proc` and the kernel facts, and write them under
//! `tests/fixtures/format/mm_page_alloc-<ver>.txt` and `tests/fixtures/proc/<ver>/`.
//! `host` does the same from the running kernel's own /proc and /sys (needs root).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::initramfs::Initramfs;
use super::kernel::{self, KERNELS};
use super::qemu::{self, QemuConfig};

/// Arguments of `cargo xtask vm-capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Which kernel: 5.10, 6.1, 6.12, host (the running kernel), or all of them.
    #[arg(long, default_value = "all")]
    pub kernel: String,
}

const FORMAT_FILE: &str = "/sys/kernel/tracing/events/kmem/mm_page_alloc/format";
/// Fixture name -> source path.
const PROC_FILES: &[(&str, &str)] = &[
    ("buddyinfo", "/proc/buddyinfo"),
    ("zoneinfo", "/proc/zoneinfo"),
    ("pagetypeinfo", "/proc/pagetypeinfo"),
    ("vmstat", "/proc/vmstat"),
    ("min_free_kbytes", "/proc/sys/vm/min_free_kbytes"),
    (
        "watermark_scale_factor",
        "/proc/sys/vm/watermark_scale_factor",
    ),
    (
        "watermark_boost_factor",
        "/proc/sys/vm/watermark_boost_factor",
    ),
];
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";
const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// What one capture found.
struct Captured {
    release: String,
    format: String,
    files: Vec<(&'static str, Option<String>)>,
    kprobe: bool,
    btf: bool,
    source: String,
}

/// Run the capture for the kernels selected.
pub fn run(args: &CaptureArgs) -> Result<()> {
    let selected: Vec<&str> = match args.kernel.as_str() {
        "all" => KERNELS.iter().map(|k| k.ver).chain(["host"]).collect(),
        one => vec![one],
    };
    for ver in selected {
        if ver == "host" {
            let c = capture_host()?;
            let ver = short_version(&c.release)?;
            write_fixtures(&ver, &c)?;
            eprintln!("vm-capture: host {} -> fixtures for {ver}", c.release);
        } else {
            let spec = kernel::spec(ver)?;
            let k = kernel::fetch(&spec)?;
            let (c, secs) = capture_guest(&k)?;
            write_fixtures(ver, &c)?;
            eprintln!(
                "vm-capture: {ver} {} booted and captured in {secs:.1} s",
                c.release
            );
        }
    }
    Ok(())
}

fn init_script() -> String {
    let mut s = String::from("#!/bin/sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n");
    s.push_str(
        "mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n\
         mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null\n\
         echo 1 > /proc/sys/kernel/printk\n",
    );
    s.push_str(super::SHELL_HELPERS);
    s.push_str("pf_begin uname; uname -r; pf_end uname\n");
    s.push_str(&format!("pf_file format {FORMAT_FILE}\n"));
    for (name, path) in PROC_FILES {
        s.push_str(&format!("pf_file {name} {path}\n"));
    }
    s.push_str(&format!(
        "pf_begin features\n\
         [ -e {KPROBE_PMU} ] && echo kprobe_pmu=yes || echo kprobe_pmu=no\n\
         [ -e {BTF_VMLINUX} ] && echo btf_vmlinux=yes || echo btf_vmlinux=no\n\
         pf_end features\n"
    ));
    s.push_str("poweroff -f\n");
    s
}

fn capture_guest(k: &kernel::Kernel) -> Result<(Captured, f64)> {
    let mut fs_tree = Initramfs::new()?;
    fs_tree.set_init(&init_script());
    let image = super::vm_dir()
        .join("images")
        .join(format!("capture-{}.cpio", k.ver));
    fs_tree.write(&image)?;
    let cfg = QemuConfig::new(&format!("capture-{}", k.ver));
    let out = qemu::run(k, &image, &cfg)?;
    let sec = &out.sections;
    let need = |name: &str| -> Result<&String> {
        sec.present.get(name).with_context(|| {
            format!(
                "the guest printed no {name} section; see {}; console ends:\n{}",
                out.log.display(),
                out.tail(20)
            )
        })
    };
    let release = need("uname")?.trim().to_owned();
    let format = need("format")?.clone();
    let features = need("features")?;
    let files = PROC_FILES
        .iter()
        .map(|(name, _)| (*name, sec.present.get(*name).cloned()))
        .collect();
    let c = Captured {
        release,
        format,
        files,
        kprobe: features.contains("kprobe_pmu=yes"),
        btf: features.contains("btf_vmlinux=yes"),
        source: format!(
            "qemu TCG guest ({} MB, {} vCPUs), Debian package {} {}",
            cfg.memory_mb, cfg.cpus, k.package, k.package_version
        ),
    };
    Ok((c, out.elapsed.as_secs_f64()))
}

fn capture_host() -> Result<Captured> {
    let tracing = Path::new("/sys/kernel/tracing");
    if !Path::new(FORMAT_FILE).exists() {
        let ok = Command::new("mount")
            .args(["-t", "tracefs", "nodev"])
            .arg(tracing)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("cannot mount tracefs on {}: run as root", tracing.display());
        }
    }
    let read =
        |p: &str| fs::read_to_string(p).with_context(|| format!("reading {p} (run as root)"));
    let release = read("/proc/sys/kernel/osrelease")?.trim().to_owned();
    let format = read(FORMAT_FILE)?;
    let mut files = Vec::new();
    for (name, path) in PROC_FILES {
        let text = if Path::new(path).exists() {
            Some(read(path)?)
        } else {
            None
        };
        files.push((*name, text));
    }
    Ok(Captured {
        release,
        format,
        files,
        kprobe: Path::new(KPROBE_PMU).exists(),
        btf: Path::new(BTF_VMLINUX).exists(),
        source: "host of the development machines (Debian 12 userland)".to_owned(),
    })
}

/// `6.18.44-fc-v669` -> `6.18`.
fn short_version(release: &str) -> Result<String> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => Ok(format!("{a}.{b}")),
        _ => bail!("cannot read a version out of {release:?}"),
    }
}

fn write_fixtures(ver: &str, c: &Captured) -> Result<()> {
    let fixtures = super::workspace_root().join("tests").join("fixtures");
    let format_dir = fixtures.join("format");
    let proc_dir = fixtures.join("proc").join(ver);
    fs::create_dir_all(&format_dir)?;
    fs::create_dir_all(&proc_dir)?;
    let write = |path: &Path, text: &str| {
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(
        &format_dir.join(format!("mm_page_alloc-{ver}.txt")),
        &c.format,
    )?;
    let mut absent = Vec::new();
    for (name, text) in &c.files {
        let path = proc_dir.join(name);
        if let Some(t) = text {
            write(&path, t)?;
        } else {
            absent.push(*name);
            let _ = fs::remove_file(&path);
        }
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let kernel = format!(
        "uname_r={}\nkprobe_pmu={}\nbtf_vmlinux={}\nabsent_files={}\nsource={}\n",
        c.release,
        yes(c.kprobe),
        yes(c.btf),
        if absent.is_empty() {
            "none".to_owned()
        } else {
            absent.join(",")
        },
        c.source
    );
    write(&proc_dir.join("KERNEL"), &kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_versions() {
        assert_eq!(short_version("6.18.44-fc-v669").unwrap(), "6.18");
        assert_eq!(short_version("5.10.0-43-cloud-amd64").unwrap(), "5.10");
        assert!(short_version("x").is_err());
    }
}
