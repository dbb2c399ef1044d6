//! `cargo xtask fuzz`: run each cargo-fuzz target in `fuzz/` for a while,
//! seeded from the test fixtures. Stable Rust, no sanitizer (the address
//! sanitizer needs nightly: `cargo +nightly fuzz run <target>`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{run, workspace_root};

/// The targets in fuzz/Cargo.toml, each with the fixture files that seed it.
pub const TARGETS: [(&str, &[&str]); 5] = [
    ("kernel_log", &["tests/fixtures/logs"]),
    ("gfp_format", &["tests/fixtures/format"]),
    ("proc_memory", &["tests/fixtures/proc"]),
    ("rules", &["tracer/src/classify/builtin-rules.txt"]),
    ("report_csv", &[]),
];

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Only this target (default: all).
    #[arg(long)]
    pub target: Option<String>,
}

fn corpus_dir(target: &str) -> PathBuf {
    workspace_root().join("target/fuzz-corpus").join(target)
}

/// Files under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Seed a target's corpus: fixture files as they are (the proc parser
/// picks its file by the first byte, so each proc fixture goes in once per
/// parser), plus a few hand-written inputs.
fn seed(target: &str, sources: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = corpus_dir(target);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = workspace_root();
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for src in sources {
        let mut found = Vec::new();
        let src = root.join(src);
        if src.is_file() {
            found.push(src);
        } else {
            files(&src, &mut found);
        }
        for f in found {
            let data = fs::read(&f)?;
            if target == "proc_memory" {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let which = match name {
                    "buddyinfo" => 0u8,
                    "zoneinfo" => 1,
                    "pagetypeinfo" => 2,
                    "vmstat" => 3,
                    "min_free_kbytes" => 4,
                    _ => continue,
                };
                inputs.push([&[which][..], &data].concat());
            } else {
                inputs.push(data);
            }
        }
    }
    if target == "report_csv" {
        inputs.push(
            b"window_start,window_end,host,kernel,comm,pid,cgroup,context,path,order,gfp,gfp_flags,atomic,failures,warned,first_seen,last_seen,top_stack\n\
2026-11-22T03:00:00Z,2026-11-22T03:00:05Z,h,6.1.0,nginx,42,/,softirq,tcp,3,0x820,GFP_ATOMIC,true,7,0,2026-11-22T03:00:01Z,2026-11-22T03:00:02Z,net_rx_action;tcp_v4_rcv\n"
                .to_vec(),
        );
    }
    for (i, data) in inputs.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:03}")), data)?;
    }
    Ok(dir)
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let found = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let mut c = Command::new("cargo");
        c.args(["install", "cargo-fuzz", "--locked"]);
        run(c)?;
    }
    Ok(())
}

/// Run `cargo xtask fuzz`.
///
/// # Errors
/// A target that crashes (its input is left in fuzz/artifacts/<target>/), or
/// a build failure.
pub fn run_fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let mut ran = 0;
    for (target, sources) in TARGETS {
        if args.target.as_deref().is_some_and(|t| t != target) {
            continue;
        }
        let corpus = seed(target, sources)?;
        let mut c = Command::new("cargo");
        c.current_dir(workspace_root())
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-max_len=262144");
        run(c).with_context(|| format!("fuzz target {target} found a crash"))?;
        ran += 1;
    }
    anyhow::ensure!(ran > 0, "no fuzz target named {:?}", args.target);
    Ok(())
}
