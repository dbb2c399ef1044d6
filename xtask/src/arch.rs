//! The machine architectures pagefail is built, shipped and proven on.
//!
//! amd64 is the build machine's own: rustup's toolchain builds it into
//! `target/`. arm64 (aarch64) is cross-built on the same `x86_64` machine by
//! Debian's `rustc-web` with the aarch64 standard library of the same
//! version and Debian's cross linker ([`crate::cross`]), into `target/cross/`.

use std::path::PathBuf;

/// An architecture, named as Debian names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Arch {
    /// `x86_64`: the build machine's own.
    #[default]
    Amd64,
    /// aarch64, cross-built.
    Arm64,
}

/// `e_machine` of x86-64 ELF files.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of `AArch64` ELF files.
pub const EM_AARCH64: u16 = 183;

impl Arch {
    /// Debian's name: `amd64`, `arm64` (package architecture, kernel flavour).
    pub fn deb(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// `uname -m`: `x86_64`, `aarch64` (the tarball's name carries it).
    pub fn uname(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64",
            Self::Arm64 => "aarch64",
        }
    }

    /// The Rust glibc target the static binaries are built for.
    pub fn triple(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-unknown-linux-gnu",
            Self::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The ELF header's `e_machine` of this architecture's executables.
    pub fn elf_machine(self) -> u16 {
        match self {
            Self::Amd64 => EM_X86_64,
            Self::Arm64 => EM_AARCH64,
        }
    }

    /// The cargo target directory its builds go to: `target/` for the
    /// host's own, `target/cross/` for builds by Debian's toolchain (a
    /// different rustc: its artifacts must not evict rustup's).
    pub fn target_dir(self) -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| crate::workspace_root().join("target"), PathBuf::from);
        match self {
            Self::Amd64 => target,
            Self::Arm64 => target.join("cross"),
        }
    }

    /// `strip` for this architecture's binaries.
    pub fn strip(self) -> &'static str {
        match self {
            Self::Amd64 => "strip",
            Self::Arm64 => "aarch64-linux-gnu-strip",
        }
    }

    /// How the build machine runs this architecture's binaries: directly,
    /// or under qemu's user-mode emulator.
    pub fn runner(self) -> Option<&'static str> {
        match self {
            Self::Amd64 => None,
            Self::Arm64 => Some("qemu-aarch64-static"),
        }
    }

    /// A command that runs `bin` of this architecture on the build machine.
    pub fn command(self, bin: &std::path::Path) -> std::process::Command {
        match self.runner() {
            None => std::process::Command::new(bin),
            Some(r) => {
                let mut c = std::process::Command::new(r);
                c.arg(bin);
                c
            }
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.deb())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_debian_and_rust() {
        assert_eq!(Arch::default(), Arch::Amd64);
        assert_eq!(Arch::Arm64.deb(), "arm64");
        assert_eq!(Arch::Arm64.uname(), "aarch64");
        assert!(Arch::Arm64.triple().starts_with(Arch::Arm64.uname()));
        assert!(Arch::Amd64.triple().starts_with(Arch::Amd64.uname()));
        assert!(Arch::Arm64.target_dir().ends_with("cross"));
        assert_eq!(Arch::Amd64.to_string(), "amd64");
    }
}
