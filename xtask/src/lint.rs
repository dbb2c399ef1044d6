//! The lint step: rustfmt and clippy (`-D warnings`, the workspace lints of
//! the root `Cargo.toml`) on every crate. `cargo xtask lint` runs it alone;
//! `cargo xtask test` runs it before the tiers, each check counted as a test.
//!
//! The userspace crates are linted by the rustup toolchain's clippy. The
//! kernel program (`tracer-ebpf`) only builds for `bpfel-unknown-none`, so it
//! is linted by the clippy of the toolchain that builds it (Debian's
//! `rust-web-clippy` next to `rustc-web`, or `PAGEFAIL_BPF_TOOLCHAIN`), with
//! the flags `tracer/build.rs` and aya-build give it.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{cargo, run, setup, workspace_root};

/// One check of the lint step.
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What to do when it failed.
    pub hint: &'static str,
}

/// Run every check, each to the end even when an earlier one failed.
///
/// # Errors
/// When the tools cannot be installed (the checks then did not run).
pub fn run_checks() -> anyhow::Result<Vec<Check>> {
    ensure_tools()?;
    let mut checks = Vec::new();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    let mut fmt_fuzz = cargo();
    fmt_fuzz.args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]);
    checks.push(Check {
        name: "lint::rustfmt",
        ok: passes(fmt) & passes(fmt_fuzz),
        hint: "run `cargo fmt --all` (and `cargo fmt --manifest-path fuzz/Cargo.toml`)",
    });

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    checks.push(Check {
        name: "lint::clippy",
        ok: passes(clippy),
        hint: "fix the findings above, or `#[expect(clippy::x, reason = \"...\")]` where a lint is wrong",
    });

    checks.push(Check {
        name: "lint::clippy_ebpf",
        ok: passes(clippy_ebpf()),
        hint: "fix the findings above in tracer-ebpf (linted with the BPF toolchain's clippy)",
    });
    Ok(checks)
}

/// `cargo xtask lint`.
///
/// # Errors
/// When a check fails or cannot run.
pub fn run_lint() -> anyhow::Result<()> {
    // clippy runs tracer's build script, which builds the kernel program.
    setup::ensure_toolchain()?;
    let checks = run_checks()?;
    let mut failed = Vec::new();
    for c in &checks {
        println!("{} ... {}", c.name, if c.ok { "ok" } else { "FAILED" });
        if !c.ok {
            eprintln!("xtask: {} failed: {}", c.name, c.hint);
            failed.push(c.name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Run `cmd`, echoing it; whether it exited 0 (a command that cannot start fails).
fn passes(cmd: Command) -> bool {
    match run(cmd) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            false
        }
    }
}

/// The toolchain that builds the kernel program (as in `tracer/build.rs`).
fn bpf_toolchain() -> String {
    std::env::var("PAGEFAIL_BPF_TOOLCHAIN").unwrap_or_else(|_| "/usr".to_owned())
}

/// clippy on the kernel program, as aya-build compiles it: the BPF target,
/// `bpf_target_arch` set, `aya_ebpf`'s one unstable feature unlocked, and
/// `-Z build-std=core` where the toolchain is a nightly (it has no prebuilt
/// `core` for BPF). Its own target directory, so it does not disturb the
/// build script's.
fn clippy_ebpf() -> Command {
    let toolchain = bpf_toolchain();
    let mut c = Command::new("rustup");
    c.current_dir(workspace_root())
        .args(["run", &toolchain, "cargo", "clippy"])
        .args(["--package", "tracer-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(workspace_root().join("target/lint-ebpf"));
    if is_nightly(&toolchain) {
        c.args(["-Z", "build-std=core"]);
    }
    c.args(["--", "-D", "warnings"])
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        );
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "CARGO", "RUSTFLAGS"] {
        c.env_remove(key);
    }
    c
}

fn is_nightly(toolchain: &str) -> bool {
    Command::new("rustup")
        .args(["run", toolchain, "rustc", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nightly"))
}

/// clippy and rustfmt for the rustup toolchain, and the BPF toolchain's clippy
/// (`rust-web-clippy` on Debian when the default BPF toolchain is used).
fn ensure_tools() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .current_dir(workspace_root())
        .output()
        .context("cannot run rustup: the lint step needs rustup (https://rustup.rs)")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let has = |c: &str| installed.lines().any(|l| l.starts_with(&format!("{c}-")));
    let missing: Vec<&str> = ["clippy", "rustfmt"]
        .into_iter()
        .filter(|c| !has(c))
        .collect();
    if !missing.is_empty() {
        let mut add = Command::new("rustup");
        add.current_dir(workspace_root())
            .args(["component", "add"])
            .args(&missing);
        run(add)?;
    }
    if bpf_toolchain() == "/usr" {
        setup::ensure_packages(&["rust-web-clippy"])?;
    }
    Ok(())
}
