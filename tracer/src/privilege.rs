//! Least privilege: once the programs are loaded and attached, the ring buffer
//! mapped and kallsyms read, pagefail needs no capability. The maps, the ring
//! buffer and the links stay usable through their file descriptors (the
//! kernel checks capabilities when an fd is created, not when it is used), so
//! every capability is dropped and `no_new_privs` is set: a bug in the record
//! parsing, symbolization or export code then runs with no more power than
//! an ordinary process, and cannot regain any through `execve`.

use std::fs;

use rustix::thread::{self, CapabilitySet, CapabilitySets};

/// The highest capability number when `/proc/sys/kernel/cap_last_cap` is
/// unreadable (`CAP_CHECKPOINT_RESTORE`, 5.9+); bits past the kernel's last
/// one are rejected with EINVAL, which is ignored.
const FALLBACK_LAST_CAP: u32 = 40;

/// What [`drop_all`] did, for `-v` and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Effective set before the drop (a bit per capability).
    pub before: u64,
    /// Whether the bounding set could be emptied too (needs `CAP_SETPCAP`).
    pub bounding_cleared: bool,
}

/// The highest capability number the running kernel knows.
fn last_cap() -> u32 {
    parse_last_cap(&fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap_or_default())
}

fn parse_last_cap(text: &str) -> u32 {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|&c| c < 64)
        .unwrap_or(FALLBACK_LAST_CAP)
}

/// Drop every capability of this thread (bounding, ambient, inheritable,
/// permitted, effective) and set `no_new_privs`.
///
/// Capabilities are per thread: call this from the thread that does the
/// work, before any other thread is started (pagefail runs on one thread).
///
/// # Errors
/// When `capset` or `prctl(PR_SET_NO_NEW_PRIVS)` fails; the message says
/// how to run without the drop.
pub fn drop_all() -> anyhow::Result<Dropped> {
    drop_all_except(CapabilitySet::empty())
}

/// The capability that lets this process keep reading its BPF maps on
/// kernels whose `bpf()` entry refuses every command to unprivileged callers
/// when `kernel.unprivileged_bpf_disabled` is set (5.10, for one; 6.1 and
/// later check per command and let map fds be read without it).
#[must_use]
pub fn bpf_read_capability(kernel_has_cap_bpf: bool) -> CapabilitySet {
    if kernel_has_cap_bpf {
        CapabilitySet::BPF
    } else {
        CapabilitySet::SYS_ADMIN
    }
}

/// [`drop_all`], but keep `keep` (where this thread has it) in the
/// effective and permitted sets and in the bounding set.
///
/// # Errors
/// As [`drop_all`].
pub fn drop_all_except(keep: CapabilitySet) -> anyhow::Result<Dropped> {
    let before = thread::capabilities(None)
        .map_err(|e| anyhow::anyhow!("cannot read this process's capabilities: {e}"))?;
    // The bounding set first: emptying it needs CAP_SETPCAP, which goes with
    // the effective set below. An empty bounding set keeps a later execve
    // of a set-uid or root program from regaining capabilities.
    let mut bounding_cleared = true;
    for cap in 0..=last_cap() {
        let set = CapabilitySet::from_bits_retain(1 << cap);
        if keep.contains(set) {
            continue;
        }
        match thread::remove_capability_from_bounding_set(set) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(_) => bounding_cleared = false,
        }
    }
    // Ambient capabilities exist from 4.3; EINVAL before that is fine.
    match thread::clear_ambient_capability_set() {
        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => anyhow::bail!("cannot clear the ambient capabilities: {e} (use --keep-caps)"),
    }
    let kept = before.permitted & keep;
    let none = CapabilitySets {
        effective: kept,
        permitted: kept,
        inheritable: CapabilitySet::empty(),
    };
    thread::set_capabilities(None, none)
        .map_err(|e| anyhow::anyhow!("cannot drop capabilities: {e} (use --keep-caps)"))?;
    thread::set_no_new_privs(true)
        .map_err(|e| anyhow::anyhow!("cannot set no_new_privs: {e} (use --keep-caps)"))?;
    Ok(Dropped {
        before: before.effective.bits(),
        bounding_cleared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_all_except_keeps_only_that_one() {
        std::thread::spawn(|| {
            let before = thread::capabilities(None).expect("capget");
            drop_all_except(CapabilitySet::BPF).expect("drop");
            let now = thread::capabilities(None).expect("capget");
            assert_eq!(now.effective, before.permitted & CapabilitySet::BPF);
            assert_eq!(now.permitted, before.permitted & CapabilitySet::BPF);
            assert!(thread::no_new_privs().expect("prctl"));
        })
        .join()
        .expect("drop thread");
    }

    #[test]
    fn last_cap_is_read_or_falls_back() {
        assert_eq!(parse_last_cap("40\n"), 40);
        assert_eq!(parse_last_cap("37"), 37);
        assert_eq!(parse_last_cap(""), FALLBACK_LAST_CAP);
        assert_eq!(parse_last_cap("x"), FALLBACK_LAST_CAP);
        assert_eq!(parse_last_cap("99"), FALLBACK_LAST_CAP);
    }

    /// Runs the drop in a thread of its own (capabilities are per thread),
    /// so the rest of the test binary keeps its privileges.
    #[test]
    fn drop_all_leaves_this_thread_with_nothing() {
        std::thread::spawn(|| {
            let dropped = drop_all().expect("dropping needs no privilege");
            let now = thread::capabilities(None).expect("capget");
            assert!(now.effective.is_empty(), "{now:?}");
            assert!(now.permitted.is_empty(), "{now:?}");
            assert!(now.inheritable.is_empty(), "{now:?}");
            assert!(thread::no_new_privs().expect("prctl"));
            let status = fs::read_to_string("/proc/thread-self/status").expect("status");
            assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
            assert!(status.contains("NoNewPrivs:\t1"), "{status}");
            if dropped.before != 0 {
                // Root: the bounding set could be emptied as well.
                assert!(dropped.bounding_cleared);
                assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
            }
        })
        .join()
        .expect("drop thread");
    }
}
