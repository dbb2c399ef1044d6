//! Privilege check before loading: say exactly which capability is missing.

use std::fs;

use super::KernelFeatures;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities tracing needs, by name, and whether `eff` holds each:
/// `CAP_BPF` and `CAP_PERFMON` (5.8+) or `CAP_SYS_ADMIN` to load and attach,
/// `CAP_SYSLOG` to read kernel addresses from /proc/kallsyms (symbolized stacks).
#[must_use]
pub fn listed(eff: u64) -> [(&'static str, bool); 4] {
    let has = |c: u32| eff & (1 << c) != 0;
    [
        ("CAP_BPF", has(CAP_BPF)),
        ("CAP_PERFMON", has(CAP_PERFMON)),
        ("CAP_SYS_ADMIN", has(CAP_SYS_ADMIN)),
        ("CAP_SYSLOG", has(CAP_SYSLOG)),
    ]
}

/// The effective capability set of this process (`CapEff` in /proc/self/status).
#[must_use]
pub fn effective() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// What is missing to load and attach tracing programs, given the
/// effective set `eff`; `None` when nothing is.
#[must_use]
pub fn missing(eff: u64, has_cap_bpf: bool) -> Option<String> {
    let has = |c: u32| eff & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return None;
    }
    if !has_cap_bpf {
        return Some("CAP_SYS_ADMIN (this kernel predates CAP_BPF)".to_owned());
    }
    let lacking: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    (!lacking.is_empty()).then(|| lacking.join(" and "))
}

/// Check the privileges needed to trace.
///
/// # Errors
/// A one-line message naming what is missing and how to run.
pub fn check_bpf_capabilities(features: &KernelFeatures) -> Result<(), String> {
    let Some(eff) = effective() else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    match missing(eff, features.has_cap_bpf()) {
        None => Ok(()),
        Some(what) => Err(format!(
            "tracing needs CAP_BPF and CAP_PERFMON (or root); this process lacks {what}: \
             run it with sudo"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_bpf_perfmon_pass() {
        assert_eq!(missing(u64::MAX, true), None);
        assert_eq!(missing(1 << CAP_SYS_ADMIN, true), None);
        assert_eq!(missing(1 << CAP_BPF | 1 << CAP_PERFMON, true), None);
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing(0, true).as_deref(), Some("CAP_BPF and CAP_PERFMON"));
        assert_eq!(missing(1 << CAP_BPF, true).as_deref(), Some("CAP_PERFMON"));
        assert!(
            missing(1 << CAP_BPF | 1 << CAP_PERFMON, false)
                .unwrap()
                .contains("CAP_SYS_ADMIN")
        );
    }

    #[test]
    fn lists_capabilities_by_name() {
        let l = listed(1 << CAP_BPF | 1 << CAP_SYSLOG);
        assert_eq!(
            l,
            [
                ("CAP_BPF", true),
                ("CAP_PERFMON", false),
                ("CAP_SYS_ADMIN", false),
                ("CAP_SYSLOG", true)
            ]
        );
        assert!(listed(0x1ff_feff_ffff).iter().all(|(_, has)| *has));
    }

    #[test]
    fn parses_status() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }
}
