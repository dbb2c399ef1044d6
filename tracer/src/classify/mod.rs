//! Attribution of a failure from its symbolized kernel stack: the CPU context
//! it ran in and the network paths it went through.
//!
//! One classifier serves live tracing and kernel logs.

use serde::{Deserialize, Serialize};

/// One symbolized kernel frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Function name without offset (`bond_start_xmit`).
    pub function: &'a str,
    /// Module name for module code (`bonding`), `None` for the core kernel.
    pub module: Option<&'a str>,
}

/// The CPU context a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Context {
    Task,
    Softirq,
    Hardirq,
    Unknown,
}

impl Context {
    /// The CSV spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Softirq => "softirq",
            Self::Hardirq => "hardirq",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
