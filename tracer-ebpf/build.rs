//! Rebuild the kernel program when the BPF linker changes: cargo does not
//! track linkers on its own.
use std::env;

fn main() {
    let linker = env::var_os("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER")
        .map(std::path::PathBuf::from)
        .or_else(|| which::which("bpf-linker").ok());
    if let Some(path) = linker {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER");
}
