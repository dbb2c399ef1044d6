//! What the running kernel supports, and the attach plan that follows.
//!
//! Every kernel difference that changes how pagefail attaches is decided here,
//! in plain functions of [`KernelFeatures`], so the choice can be unit-tested
//! without root and forced with `PAGEFAIL_ATTACH`.
//!
//! | need | first kernel | fallback |
//! |---|---|---|
//! | BPF ring buffer | 5.8 | none: an error naming the version |
//! | raw tracepoint `mm_page_alloc` | 4.17 | BTF tracepoint, then classic |
//! | BTF tracepoint (`tp_btf`) | 5.5 + `/sys/kernel/btf/vmlinux` | classic tracepoint |
//! | classic tracepoint | 4.7 (BPF on tracepoints) + tracefs | none |
//! | kprobe on `warn_alloc` | `CONFIG_KPROBES` | none: failures are still counted, not marked warned |
//! | CAP_BPF + CAP_PERFMON | 5.8 | CAP_SYS_ADMIN |

use std::{fmt, fs, path::Path, str::FromStr};

use crate::kernel_version::KernelVersion;

/// How the program is attached to `mm_page_alloc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachStyle {
    /// `raw_tp/mm_page_alloc`: plain u64 arguments, no BTF needed, cheapest.
    Raw,
    /// `tp_btf/mm_page_alloc`: the same arguments typed by the kernel's BTF.
    Btf,
    /// `tracepoint/kmem/mm_page_alloc`: the record, at offsets from the format file.
    Classic,
}

impl AttachStyle {
    /// The name used by `PAGEFAIL_ATTACH` and in messages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw_tp",
            Self::Btf => "tp_btf",
            Self::Classic => "tracepoint",
        }
    }
}

impl fmt::Display for AttachStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachStyle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw" | "raw_tp" | "raw_tracepoint" => Ok(Self::Raw),
            "btf" | "tp_btf" => Ok(Self::Btf),
            "classic" | "tracepoint" | "tp" => Ok(Self::Classic),
            other => Err(format!(
                "unknown attach style `{other}`: use raw_tp, tp_btf or tracepoint"
            )),
        }
    }
}

/// Facts about the running kernel that decide how pagefail attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    pub version: Option<KernelVersion>,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// The kprobe PMU or `kprobe_events` exists (`CONFIG_KPROBES`).
    pub kprobes: bool,
    /// Where tracefs is mounted, if it is.
    pub tracefs: Option<String>,
}

impl KernelFeatures {
    /// Read the running kernel's facts.
    #[must_use]
    pub fn detect() -> Self {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let tracefs = find_tracefs();
        let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists()
            || tracefs
                .as_deref()
                .is_some_and(|t| Path::new(t).join("kprobe_events").exists());
        Self {
            version: KernelVersion::parse(&release),
            release,
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            kprobes,
            tracefs,
        }
    }

    /// Whether the kernel has the BPF ring buffer (5.8+). Unknown versions
    /// are given the benefit of the doubt; the map creation then decides.
    #[must_use]
    pub fn has_ringbuf(&self) -> bool {
        self.version.is_none_or(|v| v.at_least(5, 8))
    }

    /// Whether `CAP_BPF` and `CAP_PERFMON` exist (5.8+); before, `CAP_SYS_ADMIN` is needed.
    #[must_use]
    pub fn has_cap_bpf(&self) -> bool {
        self.version.is_none_or(|v| v.at_least(5, 8))
    }
}

/// The tracefs directory holding `events/`, if mounted.
#[must_use]
pub fn find_tracefs() -> Option<String> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|p| Path::new(p).join("events").is_dir())
        .map(str::to_owned)
}

/// The attach styles to try, in order. `forced` (from `PAGEFAIL_ATTACH`)
/// means that style alone.
#[must_use]
pub fn attach_plan(features: &KernelFeatures, forced: Option<AttachStyle>) -> Vec<AttachStyle> {
    if let Some(style) = forced {
        return vec![style];
    }
    let v = features.version;
    let mut plan = Vec::new();
    if v.is_none_or(|v| v.at_least(4, 17)) {
        plan.push(AttachStyle::Raw);
    }
    if features.btf && v.is_none_or(|v| v.at_least(5, 5)) {
        plan.push(AttachStyle::Btf);
    }
    if features.tracefs.is_some() {
        plan.push(AttachStyle::Classic);
    }
    plan
}

/// The environment variable that forces an attach style.
pub const ATTACH_ENV: &str = "PAGEFAIL_ATTACH";

/// The style forced by `PAGEFAIL_ATTACH`, if set.
///
/// # Errors
/// When the variable holds an unknown style.
pub fn forced_style() -> Result<Option<AttachStyle>, String> {
    match std::env::var(ATTACH_ENV) {
        Ok(s) if !s.is_empty() => s.parse().map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(release: &str, btf: bool, tracefs: bool) -> KernelFeatures {
        KernelFeatures {
            release: release.to_owned(),
            version: KernelVersion::parse(release),
            btf,
            kprobes: false,
            tracefs: tracefs.then(|| "/sys/kernel/tracing".to_owned()),
        }
    }

    #[test]
    fn modern_kernel_prefers_raw_then_btf_then_classic() {
        let f = features("6.18.44", true, true);
        assert_eq!(
            attach_plan(&f, None),
            [AttachStyle::Raw, AttachStyle::Btf, AttachStyle::Classic]
        );
    }

    #[test]
    fn no_btf_skips_tp_btf_and_no_tracefs_skips_classic() {
        let f = features("6.1.0", false, false);
        assert_eq!(attach_plan(&f, None), [AttachStyle::Raw]);
    }

    #[test]
    fn old_kernels_fall_back_to_classic() {
        let f = features("4.14.0", true, true);
        assert_eq!(attach_plan(&f, None), [AttachStyle::Classic]);
        let f = features("5.4.0", true, true);
        assert_eq!(
            attach_plan(&f, None),
            [AttachStyle::Raw, AttachStyle::Classic]
        );
    }

    #[test]
    fn forced_style_is_the_only_one_tried() {
        let f = features("6.18.0", true, true);
        assert_eq!(
            attach_plan(&f, Some(AttachStyle::Classic)),
            [AttachStyle::Classic]
        );
        assert_eq!("tp_btf".parse(), Ok(AttachStyle::Btf));
        assert!("fentry".parse::<AttachStyle>().is_err());
    }

    #[test]
    fn ring_buffer_needs_5_8() {
        assert!(!features("5.4.0", true, true).has_ringbuf());
        assert!(features("5.8.0", true, true).has_ringbuf());
        assert!(!features("4.19.0", true, true).has_cap_bpf());
    }

    #[test]
    fn no_ring_buffer_no_btf_no_tracefs_leaves_nothing_to_try() {
        // 4.9: no ring buffer, no raw tracepoint; without tracefs nothing attaches.
        let f = features("4.9.0", false, false);
        assert!(!f.has_ringbuf());
        assert!(attach_plan(&f, None).is_empty());
        // 5.5 is the first kernel with tp_btf; without the BTF file it is skipped.
        assert_eq!(
            attach_plan(&features("5.5.0", true, false), None),
            [AttachStyle::Raw, AttachStyle::Btf]
        );
        assert_eq!(
            attach_plan(&features("5.5.0", false, false), None),
            [AttachStyle::Raw]
        );
        assert_eq!(
            attach_plan(&features("5.4.0", true, false), None),
            [AttachStyle::Raw],
            "BTF file but a kernel before 5.5: no tp_btf"
        );
    }

    #[test]
    fn unreadable_release_gets_the_benefit_of_the_doubt() {
        // No version: the ring buffer map creation and the attach decide.
        let f = features("", false, true);
        assert!(f.has_ringbuf());
        assert!(f.has_cap_bpf());
        assert_eq!(
            attach_plan(&f, None),
            [AttachStyle::Raw, AttachStyle::Classic]
        );
    }

    #[test]
    fn no_ring_buffer_error_names_the_kernel_and_the_way_out() {
        let msg = super::super::ProbeError::NoRingBuf {
            release: "4.19.0-27-amd64".to_owned(),
        }
        .to_string();
        assert!(msg.contains("4.19.0-27-amd64"), "{msg}");
        assert!(msg.contains("pagefail logs"), "{msg}");
    }
}
