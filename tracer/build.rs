//! Builds the kernel program (`tracer-ebpf`) for the BPF target and leaves the
//! object in `OUT_DIR`, where `probe/mod.rs` embeds it.
//!
//! The BPF side is built by Debian's `rustc-web` toolchain (sysroot `/usr`),
//! which ships a prebuilt `core` for `bpfel-unknown-none`; `PAGEFAIL_BPF_TOOLCHAIN`
//! overrides the toolchain (any name or path `rustup run` accepts).
//!
//! Builds for cargo-fuzz (`--cfg fuzzing`) get an empty object instead: the
//! fuzz targets exercise parsers and never load the kernel program, and the
//! BPF build would add more than a minute to every cold fuzz build.
use std::{env, fs, path::Path};

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PAGEFAIL_BPF_TOOLCHAIN");
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = env::var("OUT_DIR").context("OUT_DIR not set")?;
        let object = Path::new(&out).join("pagefail-ebpf");
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
        return Ok(());
    }
    let toolchain = env::var("PAGEFAIL_BPF_TOOLCHAIN").unwrap_or_else(|_| "/usr".to_owned());
    if env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // aya-ebpf uses `#![feature(asm_experimental_arch)]`. Unlock that one
        // crate only: RUSTC_BOOTSTRAP=1 would make aya-build ask for
        // `-Z build-std`, which needs a rust-src these machines lack.
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf") };
    }
    let root = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root_dir = format!("{root}/../tracer-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "tracer-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .context(
        "building the kernel program failed: run `cargo xtask setup` (installs rustc-web, \
         libstd-rust-web-dev-bpf, llvm-22-dev and bpf-linker)",
    )
}
