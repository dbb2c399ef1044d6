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

use anyhow::bail;

use crate::{is_root, run};

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
        apt_install(&missing)?;
    }
    if !linker_ok {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
        cargo
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22");
        run(cargo)?;
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
    apt_install(&missing)
}

/// `apt-get update`, then install `packages` (root, Debian).
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let mut update = Command::new("apt-get");
    update.args(["update", "-o", "DPkg::Lock::Timeout=900"]);
    run(update)?;
    let mut install = Command::new("apt-get");
    install
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=900",
        ])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
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
