//! Debian kernel packages: download, extract, depmod, cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::arch::Arch;

/// Which Debian kernel to fetch for a short version name.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// Short name used on the command line and in fixture paths: `6.1`.
    pub ver: &'static str,
    /// Debian suite that carries it.
    pub suite: &'static str,
    /// Regular expression for `apt-cache search --names-only`.
    pub pattern: &'static str,
    /// The kernel's architecture (and qemu's).
    pub arch: Arch,
}

/// The kernels of the VM tier.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        ver: "5.10",
        suite: "bullseye",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$",
        arch: Arch::Amd64,
    },
    KernelSpec {
        ver: "6.1",
        suite: "bookworm",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
        arch: Arch::Amd64,
    },
    KernelSpec {
        ver: "6.12",
        suite: "trixie",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb13(\.[0-9]+)?-cloud-amd64-unsigned$",
        arch: Arch::Amd64,
    },
];

/// The arm64 kernels (Debian's `cloud-arm64` flavour, booted on qemu's
/// `virt` machine).
pub const ARM64_KERNELS: &[KernelSpec] = &[
    KernelSpec {
        ver: "6.1",
        suite: "bookworm",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-arm64-unsigned$",
        arch: Arch::Arm64,
    },
    KernelSpec {
        ver: "6.12",
        suite: "trixie",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb13(\.[0-9]+)?-cloud-arm64-unsigned$",
        arch: Arch::Arm64,
    },
];

/// The kernels of `arch`.
pub fn kernels(arch: Arch) -> &'static [KernelSpec] {
    match arch {
        Arch::Amd64 => KERNELS,
        Arch::Arm64 => ARM64_KERNELS,
    }
}

/// Look up a kernel by its short version name.
pub fn spec(ver: &str) -> Result<KernelSpec> {
    spec_for(ver, Arch::Amd64)
}

/// Look up a kernel of `arch` by its short version name.
pub fn spec_for(ver: &str, arch: Arch) -> Result<KernelSpec> {
    kernels(arch)
        .iter()
        .copied()
        .find(|k| k.ver == ver)
        .with_context(|| {
            let known: Vec<_> = kernels(arch).iter().map(|k| k.ver).collect();
            format!(
                "unknown {arch} kernel {ver:?}: use one of {}",
                known.join(", ")
            )
        })
}

/// An extracted kernel package, ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Short version name: `6.1`.
    pub ver: String,
    /// `uname -r` of the kernel: `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` (or `usr/lib/...`) inside the extracted package,
    /// holding a `modules.dep` written by depmod.
    pub modules_dir: PathBuf,
    /// Debian package name and version.
    pub package: String,
    pub package_version: String,
    /// The kernel's architecture.
    pub arch: Arch,
}

/// Download (once) and extract the kernel for `spec` under `target/vm/kernels/<ver>/`.
///
/// The newest matching package is tried first; when the registry does not serve
/// its file (security updates sometimes lag behind the index), older ones follow.
pub fn fetch(spec: &KernelSpec) -> Result<Kernel> {
    let dir = super::vm_dir().join("kernels").join(match spec.arch {
        Arch::Amd64 => spec.ver.to_owned(),
        other @ Arch::Arm64 => format!("{}-{}", spec.ver, other.deb()),
    });
    let root = dir.join("root");
    if find_deb(&dir)?.is_none() {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        download(spec, &dir)?;
    }
    let deb = find_deb(&dir)?.context("download left no .deb")?;
    if !root.join("boot").is_dir() {
        let tmp = dir.join("root.tmp");
        let _ = fs::remove_dir_all(&tmp);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))
            .context("extracting the kernel package (dpkg-deb is part of dpkg)")?;
        fs::rename(&tmp, &root)?;
    }
    let vmlinuz = fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no boot/vmlinuz-* in {}", root.display()))?;
    let release = vmlinuz.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_owned();
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|p| p.is_dir())
        .with_context(|| format!("no modules directory for {release} in {}", root.display()))?;
    if !modules_dir.join("modules.dep").is_file() {
        depmod(&root, &modules_dir, &release)?;
    }
    let field = |f: &str| -> Result<String> {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg(f)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    Ok(Kernel {
        ver: spec.ver.to_owned(),
        release,
        vmlinuz,
        modules_dir,
        package: field("Package")?,
        package_version: field("Version")?,
        arch: spec.arch,
    })
}

fn find_deb(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    Ok(fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb")))
}

fn download(spec: &KernelSpec, dir: &Path) -> Result<()> {
    let opts = crate::cross::apt_options(spec.suite, spec.arch)?;
    run(Command::new("apt-get").args(&opts).arg("update")).with_context(|| {
        format!(
            "apt-get update for Debian {} failed: the Debian registry must be reachable",
            spec.suite
        )
    })?;
    let out = Command::new("apt-cache")
        .args(&opts)
        .args(["search", "--names-only", spec.pattern])
        .output()
        .context("running apt-cache")?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort_by(|a, b| natural_cmp(b, a));
    ensure!(
        !names.is_empty(),
        "no package matches {} in Debian {}",
        spec.pattern,
        spec.suite
    );
    for name in &names {
        eprintln!("vm: downloading {name} ({})", spec.suite);
        let ok = Command::new("apt-get")
            .args(&opts)
            .args(["download", name])
            .current_dir(dir)
            .status()
            .context("running apt-get download")?
            .success();
        if ok && find_deb(dir)?.is_some() {
            return Ok(());
        }
        eprintln!("vm: {name} could not be downloaded, trying an older one");
    }
    bail!(
        "none of {} could be downloaded from Debian {}",
        names.join(", "),
        spec.suite
    )
}

/// Run depmod on the extracted tree (Debian ships no modules.dep; its postinst
/// makes one). depmod looks under `<base>/lib/modules`, so a merged-/usr package
/// gets a `lib -> usr/lib` link first.
fn depmod(root: &Path, modules_dir: &Path, release: &str) -> Result<()> {
    if !root.join("lib").exists() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
    }
    run(Command::new("depmod").arg("-b").arg(root).arg(release))
        .context("depmod failed or is missing: apt-get install kmod")?;
    ensure!(
        modules_dir.join("modules.dep").is_file(),
        "depmod wrote no modules.dep in {}",
        modules_dir.display()
    );
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", cmd.get_program().display()))?;
    ensure!(
        status.success(),
        "{} failed: {status}",
        cmd.get_program().display()
    );
    Ok(())
}

/// Compare strings with digit runs as numbers: `5.10.0-9` < `5.10.0-43`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut v = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                v.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        v
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, x), (true, y)) => x
                .trim_start_matches('0')
                .len()
                .cmp(&y.trim_start_matches('0').len())
                .then_with(|| x.trim_start_matches('0').cmp(y.trim_start_matches('0'))),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_package_sorts_last() {
        let mut v = [
            "linux-image-5.10.0-43-cloud-amd64-unsigned",
            "linux-image-5.10.0-9-cloud-amd64-unsigned",
            "linux-image-5.10.0-46-cloud-amd64-unsigned",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v[0], "linux-image-5.10.0-9-cloud-amd64-unsigned");
        assert_eq!(v[2], "linux-image-5.10.0-46-cloud-amd64-unsigned");
    }
}
