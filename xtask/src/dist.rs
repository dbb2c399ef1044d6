//! `cargo xtask dist`: a static `x86_64` binary, man pages and shell
//! completions generated from the binary's own command-line definition, the
//! deploy files and the README, as `target/dist/pagefail-<version>-x86_64.tar.gz`
//! and a `.deb` (cargo-deb), checked by installing and removing it with dpkg
//! in a scratch root ([`deb`]).

pub mod deb;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cargo, elf, run, setup, workspace_root};

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
/// the `x86_64` target only, so build scripts and the BPF object (built by
/// tracer's build script for bpfel) are unaffected.
pub fn build_static() -> anyhow::Result<PathBuf> {
    build_static_bin("tracer", "pagefail")
}

/// Build one binary of a workspace package statically (as [`build_static`])
/// and check that it is: `target/x86_64-unknown-linux-gnu/release/<bin>`.
/// Packages built this way share the static dependency builds.
pub fn build_static_bin(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    setup::ensure_toolchain()?;
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "-p",
        package,
        "--bin",
        bin,
    ])
    .env(
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "-C target-feature=+crt-static",
    );
    run(c)?;
    let path = workspace_root().join(format!("target/{TARGET}/release/{bin}"));
    check_static(&path)?;
    Ok(path)
}

/// An ELF file is statically linked when it has no `PT_INTERP` program
/// header (no dynamic loader) and no `DT_NEEDED` library; `ldd` agrees
/// ("not a dynamic executable"), which is checked too where it exists.
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let data = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let linking = elf::linking(&data)
        .with_context(|| format!("{} is not an ELF64 little-endian file", bin.display()))?;
    if linking.interp {
        bail!(
            "{} has a program interpreter: it is dynamically linked",
            bin.display()
        );
    }
    if linking.needed > 0 {
        bail!(
            "{} needs {} shared libraries (DT_NEEDED): it is dynamically linked",
            bin.display(),
            linking.needed
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

/// The static binary, the stage and the tarball; returns the binary (with
/// symbols) and the tarball.
///
/// # Errors
/// A failed build, a dynamically linked result, or a failed packaging step.
pub fn build_tarball() -> anyhow::Result<(PathBuf, PathBuf)> {
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
    Ok((bin, tarball))
}

/// The `.deb` from the stage [`build_tarball`] left (cargo-deb), its control
/// file corrected, then installed and removed with dpkg in a scratch root.
///
/// # Errors
/// cargo-deb or dpkg missing or failing, or a check of the installed package.
pub fn build_deb() -> anyhow::Result<deb::Checked> {
    ensure_cargo_deb()?;
    let out_dir = dist_dir().join("deb");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir)?;
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
    .arg(&out_dir);
    run(c)?;
    let made: Vec<PathBuf> = fs::read_dir(&out_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let [made] = &made[..] else {
        bail!(
            "cargo deb left {} .deb files in {}, expected one",
            made.len(),
            out_dir.display()
        );
    };
    let file = made.file_name().context("a .deb without a file name")?;
    let deb_path = dist_dir().join(file);
    fs::rename(made, &deb_path)
        .with_context(|| format!("moving {} to {}", made.display(), deb_path.display()))?;
    let _ = fs::remove_dir(&out_dir);
    deb::fix_control(&deb_path, &dist_dir().join("deb-fix"))?;
    let checked = deb::verify(&deb_path, &dist_dir().join("dpkg-root"), version())?;
    eprintln!(
        "xtask: {} ({} bytes) installs and removes with dpkg; control fields:\n{}",
        deb_path.display(),
        fs::metadata(&deb_path)?.len(),
        checked.control.trim_end()
    );
    Ok(checked)
}

/// Run `cargo xtask dist`.
///
/// # Errors
/// A failed build, a dynamically linked result, or a failed packaging step.
pub fn run_dist(args: &DistArgs) -> anyhow::Result<()> {
    build_tarball()?;
    if !args.no_deb {
        build_deb()?;
    }
    Ok(())
}
