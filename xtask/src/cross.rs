//! Cross-building for arm64 on the `x86_64` build machine, from Debian's packages.
//!
//! - The cross linker and C library: `gcc-aarch64-linux-gnu` and
//!   `libc6-dev-arm64-cross` (its `libc.a` makes the static glibc binary),
//!   installed with apt like the rest of the toolchain ([`CROSS_PACKAGES`],
//!   with `qemu-user-static`, which runs the result on the build machine).
//! - The aarch64 Rust standard library of the same Debian `rustc-web` that
//!   builds the kernel program: `libstd-rust-web-dev:arm64` of exactly the
//!   installed `rustc-web` version, fetched with `apt-get download` through a
//!   private arm64 package list and extracted into `target/cross/sysroot`
//!   (passed as `--sysroot` for the aarch64 target only). The host's dpkg
//!   architectures and package database are not touched.
//!
//! Debian packages of another architecture (arm64 kernels, busybox, iproute2
//! and its libraries for the VM tier) come through the same private lists:
//! [`apt_options`], [`download`], [`extract`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::arch::Arch;

/// Host packages the arm64 build and its checks need.
pub const CROSS_PACKAGES: &[&str] = &[
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-user-static",
];

/// The cross C compiler that links the aarch64 binaries.
pub const AARCH64_LINKER: &str = "aarch64-linux-gnu-gcc";

/// The Debian suite of the build machine (`VERSION_CODENAME`), `bookworm`
/// when it cannot be read.
pub fn host_suite() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "bookworm".to_owned())
}

/// apt options that point apt at a private sources list and lists directory
/// for Debian `suite` and `arch`, under `target/vm/apt/<suite>[-<arch>]/`.
/// For a foreign architecture apt is told it is that architecture and sees
/// an empty package database, so it resolves that architecture's packages
/// only and never looks at the host's.
pub fn apt_options(suite: &str, arch: Arch) -> Result<Vec<String>> {
    let name = match arch {
        Arch::Amd64 => suite.to_owned(),
        other @ Arch::Arm64 => format!("{suite}-{}", other.deb()),
    };
    let base = crate::vm::vm_dir().join("apt").join(name);
    let lists = base.join("lists");
    fs::create_dir_all(lists.join("partial"))
        .with_context(|| format!("creating {}", lists.display()))?;
    let sources = base.join("sources.list");
    let key = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
    let text = format!(
        "deb {key} http://deb.debian.org/debian {suite} main\n\
         deb {key} http://deb.debian.org/debian {suite}-updates main\n\
         deb {key} http://deb.debian.org/debian-security {suite}-security main\n"
    );
    fs::write(&sources, text)?;
    let mut opts = vec![
        format!("-o=Dir::Etc::sourcelist={}", sources.display()),
        "-o=Dir::Etc::sourceparts=-".to_owned(),
        format!("-o=Dir::State::Lists={}", lists.display()),
        "-o=DPkg::Lock::Timeout=900".to_owned(),
    ];
    if arch != Arch::Amd64 {
        let status = base.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        opts.extend([
            format!("-o=APT::Architecture={}", arch.deb()),
            format!("-o=APT::Architectures::={}", arch.deb()),
            format!("-o=Dir::State::status={}", status.display()),
        ]);
    }
    Ok(opts)
}

/// `apt-get update` of a private list (once per call; a few seconds).
pub fn apt_update(opts: &[String], what: &str) -> Result<()> {
    let status = Command::new("apt-get")
        .args(opts)
        .arg("update")
        .status()
        .context("running apt-get (apt)")?;
    ensure!(
        status.success(),
        "apt-get update for {what} failed: the Debian registry must be reachable"
    );
    Ok(())
}

/// `apt-get download` `packages` (names, `name=version` allowed) into
/// `dir`; returns the `.deb` files there afterwards.
pub fn download(opts: &[String], packages: &[String], dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = Command::new("apt-get")
        .args(opts)
        .arg("download")
        .args(packages)
        .current_dir(dir)
        .status()
        .context("running apt-get download")?;
    ensure!(
        status.success(),
        "apt-get download {} failed",
        packages.join(" ")
    );
    debs_in(dir)
}

/// The `.deb` files of a directory, sorted.
pub fn debs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// Extract `debs` into `root` with `dpkg-deb -x` (no maintainer scripts).
pub fn extract(debs: &[PathBuf], root: &Path) -> Result<()> {
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    for deb in debs {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(root)
            .status()
            .context("running dpkg-deb (dpkg)")?;
        ensure!(status.success(), "dpkg-deb -x {} failed", deb.display());
    }
    Ok(())
}

/// A package and every package it depends on (recursively, Depends only),
/// as apt resolves them in a private list; virtual names are left out.
pub fn depends_closure(opts: &[String], package: &str) -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args(opts)
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .arg(package)
        .output()
        .context("running apt-cache")?;
    ensure!(
        out.status.success(),
        "apt-cache depends {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
        .map(|l| l.trim().split(':').next().unwrap_or(l).to_owned())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn dpkg_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// `target/cross/sysroot/usr`: a rustc sysroot holding Debian's aarch64
/// standard library of the installed `rustc-web` version (fetched once; a
/// `rustc-web` upgrade fetches the matching one).
///
/// # Errors
/// `rustc-web` missing, or the registry lacking `libstd-rust-web-dev:arm64`
/// of the installed version.
pub fn rust_std_sysroot(arch: Arch) -> Result<PathBuf> {
    let version =
        dpkg_version("rustc-web").context("rustc-web is not installed: run `cargo xtask setup`")?;
    let base = arch.target_dir().join("sysroot");
    let usr = base.join("usr");
    let marker = base.join("version");
    let lib = usr.join("lib/rustlib").join(arch.triple()).join("lib");
    if fs::read_to_string(&marker).is_ok_and(|v| v == version) && lib.is_dir() {
        return Ok(usr);
    }
    let suite = host_suite();
    let opts = apt_options(&suite, arch)?;
    apt_update(&opts, &format!("Debian {suite} {arch}"))?;
    let debs = arch.target_dir().join("debs-std");
    let _ = fs::remove_dir_all(&debs);
    let pkg = format!("libstd-rust-web-dev={version}");
    let got = download(&opts, std::slice::from_ref(&pkg), &debs).with_context(|| {
        format!(
            "the aarch64 standard library of rustc-web {version} (libstd-rust-web-dev:{arch}) \
             could not be downloaded; if the registry has a newer rustc-web, upgrade it: \
             apt-get install rustc-web cargo-web libstd-rust-web-dev-bpf"
        )
    })?;
    let _ = fs::remove_dir_all(&base);
    extract(&got, &base)?;
    ensure!(
        lib.is_dir(),
        "libstd-rust-web-dev:{arch} holds no {}",
        lib.display()
    );
    fs::write(&marker, &version)?;
    let _ = fs::remove_dir_all(&debs);
    Ok(usr)
}

/// Install the cross packages and fetch the standard library for `arch`;
/// returns the sysroot. Nothing to do for the host's own architecture.
///
/// # Errors
/// When a piece is missing and cannot be installed.
pub fn ensure(arch: Arch) -> Result<Option<PathBuf>> {
    if arch == Arch::Amd64 {
        return Ok(None);
    }
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "cross-building for {arch} uses Debian's packages ({} and \
             libstd-rust-web-dev:{arch}); this machine is not Debian/Ubuntu",
            CROSS_PACKAGES.join(", ")
        );
    }
    crate::setup::ensure_packages(CROSS_PACKAGES)?;
    rust_std_sysroot(arch).map(Some)
}

/// A cargo command that builds for `arch`: rustup's cargo for the host's own
/// architecture; for arm64 Debian's `/usr/bin/cargo` and `rustc` (1.96, the
/// version of the aarch64 standard library), into `target/cross/`, linked by
/// the cross gcc, static.
///
/// # Errors
/// When the cross toolchain cannot be installed.
pub fn cargo_for(arch: Arch) -> Result<Command> {
    let Some(sysroot) = ensure(arch)? else {
        return Ok(crate::cargo());
    };
    let mut c = Command::new("/usr/bin/cargo");
    c.current_dir(crate::workspace_root());
    let env_triple = arch.triple().to_uppercase().replace('-', "_");
    c.env("RUSTC", "/usr/bin/rustc")
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env_remove("RUSTC_WRAPPER")
        .env("CARGO_TARGET_DIR", arch.target_dir())
        .env(format!("CARGO_TARGET_{env_triple}_LINKER"), AARCH64_LINKER)
        .env(
            format!("CARGO_TARGET_{env_triple}_RUSTFLAGS"),
            format!(
                "-C target-feature=+crt-static --sysroot={}",
                sysroot.display()
            ),
        );
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_lists_are_private_and_see_no_host_packages() {
        let o = apt_options("bookworm", Arch::Arm64).unwrap();
        assert!(o.iter().any(|s| s == "-o=APT::Architecture=arm64"));
        assert!(o.iter().any(|s| s.starts_with("-o=Dir::State::status=")));
        assert!(
            o.iter()
                .any(|s| s.starts_with("-o=Dir::State::Lists=")
                    && s.ends_with("bookworm-arm64/lists"))
        );
        let host = apt_options("bookworm", Arch::Amd64).unwrap();
        assert!(!host.iter().any(|s| s.contains("APT::Architecture")));
    }
}
