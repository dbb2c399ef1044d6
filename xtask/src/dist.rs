//! `cargo xtask dist`: a static x86_64 binary, man pages and shell
//! completions generated from the binary's own command-line definition, the
//! deploy files and the README, as `target/dist/pagefail-<version>-x86_64.tar.gz`
//! and a `.deb` (cargo-deb).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cargo, run, setup, workspace_root};

/// The glibc target the static binary is built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Options of `cargo xtask dist`.
#[derive(Debug, clap::Args)]
pub struct DistArgs {
    /// Skip the `.deb` (no cargo-deb install).
    #[arg(long)]
    pub no_deb: bool,
}

/// `target/dist`.
fn dist_dir() -> PathBuf {
    workspace_root().join("target/dist")
}

/// Where the files the tarball and the `.deb` share are gathered
/// (`[package.metadata.deb]` in tracer/Cargo.toml names these paths).
fn stage_dir() -> PathBuf {
    dist_dir().join("stage")
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Build `pagefail` statically linked against glibc. The flag is set for
/// the x86_64 target only, so build scripts and the BPF object (built by
/// tracer's build script for bpfel) are unaffected.
fn build_static() -> anyhow::Result<PathBuf> {
    setup::ensure_toolchain()?;
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "-p",
        "tracer",
        "--bin",
        "pagefail",
    ])
    .env(
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "-C target-feature=+crt-static",
    );
    run(c)?;
    let bin = workspace_root().join(format!("target/{TARGET}/release/pagefail"));
    check_static(&bin)?;
    Ok(bin)
}

/// An ELF file is statically linked when it has no `PT_INTERP` program
/// header (no dynamic loader) and no `DT_NEEDED` library; `ldd` agrees
/// ("not a dynamic executable"), which is checked too where it exists.
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let elf = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    if has_interp(&elf).context("not an ELF64 little-endian file")? {
        bail!(
            "{} has a program interpreter: it is dynamically linked",
            bin.display()
        );
    }
    if let Ok(out) = Command::new("ldd").arg(bin).output() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !(text.contains("not a dynamic executable") || text.contains("statically linked")) {
            bail!("ldd lists libraries for {}:\n{text}", bin.display());
        }
    }
    Ok(())
}

/// Whether an ELF64 LE image has a `PT_INTERP` program header; `None` when
/// it is not such an image.
fn has_interp(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

/// Run the built binary's hidden generators into the stage.
fn generate_docs(bin: &Path, stage: &Path) -> anyhow::Result<()> {
    let man = stage.join("man");
    let mut c = Command::new(bin);
    c.arg("man").arg("--dir").arg(&man);
    run(c)?;
    let comp = stage.join("completions");
    fs::create_dir_all(&comp)?;
    for (shell, file) in [
        ("bash", "pagefail.bash"),
        ("zsh", "_pagefail"),
        ("fish", "pagefail.fish"),
    ] {
        let out = Command::new(bin)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {} completions {shell}", bin.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "pagefail completions {shell} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::write(comp.join(file), &out.stdout)?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

fn ensure_cargo_deb() -> anyhow::Result<()> {
    let found = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let mut c = Command::new("cargo");
        c.args(["install", "cargo-deb", "--locked"]);
        run(c)?;
    }
    Ok(())
}

/// Run `cargo xtask dist`.
///
/// # Errors
/// A failed build, a dynamically linked result, or a failed packaging step.
pub fn run_dist(args: &DistArgs) -> anyhow::Result<()> {
    let bin = build_static()?;
    let stage = stage_dir();
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    let staged = stage.join("pagefail");
    fs::copy(&bin, &staged)?;
    // Symbols off the shipped copy, as cargo-deb does for the .deb.
    let mut c = Command::new("strip");
    c.arg(&staged);
    run(c)?;
    generate_docs(&bin, &stage)?;
    let root = workspace_root();
    fs::copy(root.join("README.md"), stage.join("README.md"))?;
    if root.join("deploy").is_dir() {
        copy_dir(&root.join("deploy"), &stage.join("deploy"))?;
    }

    let name = format!("pagefail-{}-x86_64", version());
    let tarball = dist_dir().join(format!("{name}.tar.gz"));
    let mut c = Command::new("tar");
    c.arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&stage)
        .arg(format!("--transform=s,^\\.,{name},"))
        .args(["--owner=0", "--group=0", "--sort=name", "."]);
    run(c)?;
    let size = fs::metadata(&staged)?.len();
    eprintln!(
        "xtask: {} ({} bytes; pagefail {size} bytes, static)",
        tarball.display(),
        fs::metadata(&tarball)?.len()
    );

    if !args.no_deb {
        ensure_cargo_deb()?;
        let mut c = cargo();
        c.args([
            "deb",
            "-p",
            "tracer",
            "--no-build",
            "--target",
            TARGET,
            "--output",
        ])
        .arg(dist_dir());
        run(c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_header_tells_dynamic_from_static() {
        // This test binary is dynamically linked (the default for the gnu target).
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let dynamic = !cfg!(target_feature = "crt-static");
        assert_eq!(has_interp(&me), Some(dynamic));
        assert_eq!(has_interp(b"#!/bin/sh\n"), None);
        // A header whose program headers lie past the end is not an image.
        let mut bogus = me[..64].to_vec();
        bogus[0x38] = 0xff;
        assert_eq!(has_interp(&bogus), None);
    }
}
