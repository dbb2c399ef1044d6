//! pagefail runs when memory is short: it lowers its own OOM score (visibly,
//! never to the unkillable -1000 unless asked), and tells the errors of a
//! system short of memory or disk (ENOMEM, ENOSPC, EDQUOT, EAGAIN), which it
//! retries, from the others.

use std::{fs, io};

/// `oom_score_adj` that `pagefail record` sets unless told otherwise: the OOM
/// killer picks pagefail only when it is itself the memory problem, and
/// `-1000` (never) stays the operator's explicit choice.
pub const RECORD_OOM_SCORE_ADJ: i32 = -900;

/// Set this process's `oom_score_adj`; returns the previous value.
///
/// # Errors
/// Out of range, or the kernel refused (lowering it needs `CAP_SYS_RESOURCE`).
pub fn set_oom_score_adj(value: i32) -> Result<i32, String> {
    if !(-1000..=1000).contains(&value) {
        return Err(format!("oom_score_adj {value} is outside -1000..=1000"));
    }
    let path = "/proc/self/oom_score_adj";
    let before = fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    fs::write(path, value.to_string()).map_err(|e| {
        format!(
            "cannot set oom_score_adj to {value} ({e}){}",
            if e.kind() == io::ErrorKind::PermissionDenied {
                ": lowering it needs CAP_SYS_RESOURCE"
            } else {
                ""
            }
        )
    })?;
    Ok(before)
}

/// The clap parser of `--oom-score-adj`.
///
/// # Errors
/// Not an integer in -1000..=1000.
pub fn parse_oom_score_adj(s: &str) -> Result<i32, String> {
    let v: i32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not an integer (-1000..=1000)"))?;
    if (-1000..=1000).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside -1000..=1000"))
    }
}

/// A resource shortage that passes: retry rather than fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// ENOMEM (or EAGAIN from an allocation).
    Memory,
    /// ENOSPC or EDQUOT.
    Space,
}

/// The shortage behind an error, looking through its whole chain.
#[must_use]
pub fn shortage_of(e: &anyhow::Error) -> Option<Shortage> {
    e.chain().find_map(|err| {
        err.downcast_ref::<io::Error>()
            .and_then(|io| shortage_of_errno(io.raw_os_error()))
    })
}

fn shortage_of_errno(errno: Option<i32>) -> Option<Shortage> {
    match errno? {
        libc::ENOMEM | libc::EAGAIN => Some(Shortage::Memory),
        libc::ENOSPC | libc::EDQUOT => Some(Shortage::Space),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortages_are_found_through_the_chain() {
        let full = anyhow::Error::from(io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing x")
            .context("flushing");
        assert_eq!(shortage_of(&full), Some(Shortage::Space));
        let nomem = anyhow::Error::from(io::Error::from_raw_os_error(libc::ENOMEM));
        assert_eq!(shortage_of(&nomem), Some(Shortage::Memory));
        let denied = anyhow::Error::from(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(shortage_of(&denied), None);
        let quota = anyhow::Error::from(io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(shortage_of(&quota), Some(Shortage::Space));
    }

    #[test]
    fn oom_score_adj_is_range_checked_and_set() {
        assert!(parse_oom_score_adj("-1001").is_err());
        assert!(parse_oom_score_adj("x").is_err());
        assert_eq!(parse_oom_score_adj("-900"), Ok(-900));
        assert!(set_oom_score_adj(2000).is_err());
        // Raising it needs no privilege: this test process becomes a
        // likelier OOM victim, which harms nothing.
        let before = fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        let before: i32 = before.trim().parse().unwrap();
        let want = (before + 1).min(1000);
        assert_eq!(set_oom_score_adj(want), Ok(before));
        let now = fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        assert_eq!(now.trim(), want.to_string());
    }
}
