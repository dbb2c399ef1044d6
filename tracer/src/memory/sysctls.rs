//! The reclaim sysctls under `/proc/sys/vm`.

use serde::Serialize;

use super::{MemoryError, parse_u64};

/// `vm.min_free_kbytes`, `vm.watermark_scale_factor`, `vm.watermark_boost_factor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sysctls {
    /// Memory kept free across lowmem zones, in KiB: sets every zone's min watermark.
    pub min_free_kbytes: u64,
    /// Gap between watermarks, in units of 0.01% of a zone's memory (default 10).
    pub watermark_scale_factor: u64,
    /// Temporary watermark boost after fragmentation events, in units of 0.01%
    /// of the high watermark (default 15000; 0 disables; 5.0+).
    pub watermark_boost_factor: Option<u64>,
}

/// Parse one sysctl file holding a single non-negative integer.
///
/// # Errors
/// An empty file or one that is not a single number.
pub fn parse_value(file: &'static str, text: &str) -> Result<u64, MemoryError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(MemoryError::Empty { file });
    }
    if t.lines().count() != 1 {
        return Err(MemoryError::parse(
            file,
            2,
            "expected a single number".to_owned(),
        ));
    }
    parse_u64(file, 1, t)
}
