//! `cargo xtask dist [--arch amd64|arm64]`: a static `x86_64` (or aarch64,
//! cross-built: [`crate::cross`]) binary, man pages and shell
//! completions generated from the binary's own command-line definition, the
//! deploy files and the README, as `target/dist/pagefail-<version>-<x86_64|aarch64>.tar.gz`
//! and a `.deb` (cargo-deb), checked by installing and removing it with dpkg
//! in a scratch root ([`deb`]). The aarch64 binary is run on the build machine
//! under `qemu-aarch64-static`: its `logs` output on every log fixture must
//! equal the `x86_64` binary's byte for byte ([`compare_logs`]).

pub mod deb;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{arch::Arch, cargo, cross, elf, run, setup, workspace_root};

/// Options of `cargo xtask dist`.
#[derive(Debug, clap::Args)]
pub struct DistArgs {
    /// Skip the `.deb` (no cargo-deb install).
    #[arg(long)]
    pub no_deb: bool,
    /// Architecture to build for: amd64 (this machine's) or arm64
    /// (cross-built with Debian's toolchain, checked under qemu user mode).
    #[arg(long, value_enum, default_value_t = Arch::Amd64)]
    pub arch: Arch,
}

/// `target/dist`.
fn dist_dir() -> PathBuf {
    workspace_root().join("target/dist")
}

/// Where the files the tarball and the `.deb` share are gathered
/// (`[package.metadata.deb]` in tracer/Cargo.toml names these paths);
/// one stage per architecture, moved into place for cargo-deb.
fn stage_dir() -> PathBuf {
    dist_dir().join("stage")
}

fn arch_stage_dir(arch: Arch) -> PathBuf {
    match arch {
        Arch::Amd64 => stage_dir(),
        other @ Arch::Arm64 => dist_dir().join(format!("stage-{}", other.deb())),
    }
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
    build_static_bin_for(Arch::Amd64, package, bin)
}

/// [`build_static_bin`] for `arch`: `<target dir>/<triple>/release/<bin>`,
/// checked to be a static executable of that architecture.
pub fn build_static_bin_for(arch: Arch, package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    setup::ensure_toolchain()?;
    let mut c = match arch {
        Arch::Amd64 => {
            let mut c = cargo();
            c.env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            );
            c
        }
        other @ Arch::Arm64 => cross::cargo_for(other)?,
    };
    c.args([
        "build",
        "--release",
        "--target",
        arch.triple(),
        "-p",
        package,
        "--bin",
        bin,
    ]);
    run(c)?;
    let path = arch
        .target_dir()
        .join(arch.triple())
        .join("release")
        .join(bin);
    check_static(&path, arch)?;
    Ok(path)
}

/// The static `pagefail` for `arch` (see [`build_static`]).
pub fn build_static_for(arch: Arch) -> anyhow::Result<PathBuf> {
    build_static_bin_for(arch, "tracer", "pagefail")
}

/// An ELF file is statically linked when it has no `PT_INTERP` program
/// header (no dynamic loader) and no `DT_NEEDED` library; `ldd` agrees
/// ("not a dynamic executable"), which is checked too where it exists.
fn check_static(bin: &Path, arch: Arch) -> anyhow::Result<()> {
    let data = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let linking = elf::linking(&data)
        .with_context(|| format!("{} is not an ELF64 little-endian file", bin.display()))?;
    let machine = elf::machine(&data);
    if machine != Some(arch.elf_machine()) {
        bail!(
            "{} is for ELF machine {machine:?}, expected {} ({arch})",
            bin.display(),
            arch.elf_machine()
        );
    }
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
    if arch != Arch::Amd64 {
        // ldd runs the host's loader: it cannot read another architecture.
        return Ok(());
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

/// Run the built binary's hidden generators into the stage (another
/// architecture's binary under its user-mode emulator).
fn generate_docs(bin: &Path, stage: &Path, arch: Arch) -> anyhow::Result<()> {
    let man = stage.join("man");
    let mut c = arch.command(bin);
    c.arg("man").arg("--dir").arg(&man);
    run(c)?;
    let comp = stage.join("completions");
    fs::create_dir_all(&comp)?;
    for (shell, file) in [
        ("bash", "pagefail.bash"),
        ("zsh", "_pagefail"),
        ("fish", "pagefail.fish"),
    ] {
        let out = arch
            .command(bin)
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
    build_tarball_for(Arch::Amd64)
}

/// [`build_tarball`] for `arch`.
///
/// # Errors
/// As [`build_tarball`].
pub fn build_tarball_for(arch: Arch) -> anyhow::Result<(PathBuf, PathBuf)> {
    let bin = build_static_for(arch)?;
    let stage = arch_stage_dir(arch);
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    let staged = stage.join("pagefail");
    fs::copy(&bin, &staged)?;
    // Symbols off the shipped copy, as cargo-deb does for the .deb.
    let mut c = Command::new(arch.strip());
    c.arg(&staged);
    run(c)?;
    generate_docs(&bin, &stage, arch)?;
    let root = workspace_root();
    fs::copy(root.join("README.md"), stage.join("README.md"))?;
    if root.join("deploy").is_dir() {
        copy_dir(&root.join("deploy"), &stage.join("deploy"))?;
    }

    let name = format!("pagefail-{}-{}", version(), arch.uname());
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
    build_deb_for(Arch::Amd64)
}

/// [`build_deb`] for `arch`: cargo-deb packages the stage of
/// [`build_tarball_for`] (moved to where `[package.metadata.deb]` looks
/// for it) and the binary of that architecture's target directory.
///
/// # Errors
/// As [`build_deb`].
pub fn build_deb_for(arch: Arch) -> anyhow::Result<deb::Checked> {
    ensure_cargo_deb()?;
    let out_dir = dist_dir().join("deb");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir)?;
    // cargo-deb reads the stage at the path tracer/Cargo.toml names.
    let parked = dist_dir().join("stage-parked");
    if arch != Arch::Amd64 {
        let _ = fs::remove_dir_all(&parked);
        if stage_dir().exists() {
            fs::rename(stage_dir(), &parked)?;
        }
        fs::rename(arch_stage_dir(arch), stage_dir())?;
    }
    let mut c = cargo();
    c.args([
        "deb",
        "-p",
        "tracer",
        "--no-build",
        "--target",
        arch.triple(),
        "--output",
    ])
    .arg(&out_dir)
    .env("CARGO_TARGET_DIR", arch.target_dir());
    let made = run(c);
    if arch != Arch::Amd64 {
        fs::rename(stage_dir(), arch_stage_dir(arch))?;
        if parked.exists() {
            fs::rename(&parked, stage_dir())?;
        }
    }
    made?;
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
    let checked = deb::verify(&deb_path, &dist_dir().join("dpkg-root"), version(), arch)?;
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
    let (bin, _) = build_tarball_for(args.arch)?;
    if !args.no_deb {
        build_deb_for(args.arch)?;
    }
    if args.arch != Arch::Amd64 {
        let host = build_static()?;
        let n = compare_logs(&host, &bin, args.arch)?;
        eprintln!(
            "xtask: the {} binary's logs output equals the x86_64 one's in {n} runs",
            args.arch.uname()
        );
    }
    Ok(())
}

/// The `pagefail logs` invocations compared across architectures, for each
/// fixture: the human summary, summary JSON, every report as JSON, the
/// atomic-only view, and the CSV file.
const LOGS_MODES: &[&[&str]] = &[&[], &["--json"], &["--json-reports"], &["--atomic-only"]];

/// Run `pagefail logs` of `host` (`x86_64`) and of `other` (`arch`, under its
/// user-mode emulator) on every file of `tests/fixtures/logs` in each of
/// [`LOGS_MODES`] and with `--csv`, and require identical exit status,
/// standard output, standard error and CSV bytes. Returns the runs compared.
///
/// # Errors
/// A difference (named with the fixture and mode), or a run that could not
/// start.
pub fn compare_logs(host: &Path, other: &Path, arch: Arch) -> anyhow::Result<usize> {
    let dir = workspace_root().join("tests/fixtures/logs");
    let mut fixtures: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    fixtures.sort();
    if fixtures.is_empty() {
        bail!("no log fixtures in {}", dir.display());
    }
    let scratch = dist_dir().join(format!("logs-compare-{}", arch.deb()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let mut runs = 0;
    for fixture in &fixtures {
        let name = fixture
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut modes: Vec<Vec<String>> = LOGS_MODES
            .iter()
            .map(|m| m.iter().map(|s| (*s).to_owned()).collect())
            .collect();
        modes.push(vec!["--csv".to_owned(), "CSV".to_owned()]);
        for mode in modes {
            let mut outputs = Vec::new();
            for (label, bin, cmd_arch) in
                [("x86_64", host, Arch::Amd64), (arch.uname(), other, arch)]
            {
                let csv = scratch.join(format!("{label}.csv"));
                let _ = fs::remove_file(&csv);
                let args: Vec<std::ffi::OsString> = mode
                    .iter()
                    .map(|a| {
                        if a == "CSV" {
                            csv.clone().into_os_string()
                        } else {
                            a.into()
                        }
                    })
                    .collect();
                let out = cmd_arch
                    .command(bin)
                    .arg("logs")
                    .args(&args)
                    .arg(fixture)
                    .env("TZ", "UTC")
                    .output()
                    .with_context(|| format!("running {} logs", bin.display()))?;
                let csv_bytes = fs::read(&csv).unwrap_or_default();
                // The CSV names its own file nowhere; stderr may name it.
                let stderr =
                    String::from_utf8_lossy(&out.stderr).replace(&csv.display().to_string(), "CSV");
                outputs.push((out.status.code(), out.stdout, stderr, csv_bytes));
            }
            let (a, b) = (&outputs[0], &outputs[1]);
            let what = format!("pagefail logs {} {name}", mode.join(" "));
            if a.0 != b.0 {
                bail!(
                    "{what}: exit {:?} on x86_64, {:?} on {}",
                    a.0,
                    b.0,
                    arch.uname()
                );
            }
            if a.1 != b.1 {
                bail!(
                    "{what}: standard output differs between x86_64 and {}",
                    arch.uname()
                );
            }
            if a.2 != b.2 {
                bail!("{what}: standard error differs:\n{}\n---\n{}", a.2, b.2);
            }
            if a.3 != b.3 {
                bail!(
                    "{what}: the CSV differs between x86_64 and {}",
                    arch.uname()
                );
            }
            if a.1.is_empty() && a.3.is_empty() {
                bail!("{what}: no output to compare");
            }
            runs += 1;
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(runs)
}
