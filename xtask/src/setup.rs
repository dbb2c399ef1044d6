//! Make sure the toolchain that builds the kernel program is installed.
//!
//! The kernel program is built by Debian's `rustc-web` (which ships a
//! prebuilt `core` for `bpfel-unknown-none` in `libstd-rust-web-dev-bpf`)
//! and linked by `bpf-linker` 0.13 built against LLVM 22. On Debian/Ubuntu,
//! as root, missing pieces are installed; elsewhere the exact commands are
//! printed. Every check is cheap, so this runs before every build.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn apt_install_command(packages: &[&str]) -> String {
    format!(
        "apt-get update && apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=900 {}",
        packages.join(" ")
    )
}

fn bpf_linker_install_command() -> String {
    format!(
        "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@{BPF_LINKER_VERSION} --locked \
         --no-default-features --features llvm-22"
    )
}

/// Whether a Debian package is installed.
fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn cargo_home_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// The installed bpf-linker's version, if any.
fn bpf_linker_version() -> Option<String> {
    let candidates = [
        PathBuf::from("bpf-linker"),
        cargo_home_bin().join("bpf-linker"),
    ];
    candidates.iter().find_map(|bin| {
        let out = Command::new(bin).arg("--version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Check, and where possible install, the BPF toolchain.
///
/// # Errors
/// When something is missing and cannot be installed here; the message holds
/// the commands to run.
pub fn ensure_toolchain() -> anyhow::Result<()> {
    let debian = Path::new("/etc/debian_version").exists();
    let missing: Vec<&str> = if debian {
        APT_PACKAGES
            .iter()
            .copied()
            .filter(|p| !dpkg_installed(p))
            .collect()
    } else {
        Vec::new()
    };
    let linker = bpf_linker_version();
    let linker_ok = linker
        .as_deref()
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    let bpf_core = Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib").is_dir();

    if missing.is_empty() && linker_ok && (bpf_core || !debian) {
        return Ok(());
    }
    if !debian {
        if linker_ok {
            return Ok(());
        }
        bail!(
            "the BPF toolchain is missing. This machine is not Debian/Ubuntu: install a Rust \
             toolchain that can build for bpfel-unknown-none (a nightly with rust-src, then set \
             PAGEFAIL_BPF_TOOLCHAIN=nightly), LLVM 22, and run:\n  {}",
            bpf_linker_install_command()
        );
    }
    if !is_root() {
        bail!(
            "the BPF toolchain is missing; as root run:\n  {}\n  {}",
            apt_install_command(APT_PACKAGES),
            bpf_linker_install_command()
        );
    }
    if !missing.is_empty() {
        run(Command::new("apt-get").args(["update", "-o", "DPkg::Lock::Timeout=900"]))?;
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "-o",
                "DPkg::Lock::Timeout=900",
            ])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !linker_ok {
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
    }
    Ok(())
}

/// Install Debian packages that a tier needs, if missing (Debian, root only).
///
/// # Errors
/// When packages are missing and cannot be installed.
pub fn ensure_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !Path::new("/etc/debian_version").exists() || !is_root() {
        bail!(
            "missing packages; as root run:\n  {}",
            apt_install_command(&missing)
        );
    }
    run(Command::new("apt-get").args(["update", "-o", "DPkg::Lock::Timeout=900"]))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=900",
        ])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_commands_name_every_package() {
        let c = apt_install_command(APT_PACKAGES);
        for p in APT_PACKAGES {
            assert!(c.contains(p));
        }
        assert!(bpf_linker_install_command().contains("LLVM_PREFIX=/usr/lib/llvm-22"));
    }
}
