//! Failure records from the kernel's ring buffer, read with tokio.

use std::{
    io,
    os::fd::AsRawFd,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::{EVENT_FOLLOW, FailureEvent, TASK_COMM_LEN};

/// Decode one ring-buffer record. `None` when it is shorter than a record
/// (which the kernel program never submits; counted by the caller).
#[must_use]
pub fn decode(bytes: &[u8]) -> Option<FailureEvent> {
    if bytes.len() < FailureEvent::SIZE {
        return None;
    }
    // SAFETY: FailureEvent is plain old data (only integers) and the slice
    // holds at least size_of::<FailureEvent>() bytes; the read is unaligned-safe.
    Some(unsafe { bytes.as_ptr().cast::<FailureEvent>().read_unaligned() })
}

/// A ring-buffer record in place, without copying its 584 bytes. The kernel
/// aligns ring-buffer records to 8 bytes, as `FailureEvent` needs; `None`
/// when the slice is too short or not aligned (then [`decode`] copies).
#[must_use]
pub fn view(bytes: &[u8]) -> Option<&FailureEvent> {
    if bytes.len() < FailureEvent::SIZE
        || bytes
            .as_ptr()
            .align_offset(std::mem::align_of::<FailureEvent>())
            != 0
    {
        return None;
    }
    // SAFETY: FailureEvent is plain old data (only integers, every bit
    // pattern valid), the slice holds enough bytes and is aligned for it, and
    // the reference lives no longer than the slice.
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "alignment is checked above (align_offset)"
    )]
    let ev = unsafe { &*bytes.as_ptr().cast::<FailureEvent>() };
    Some(ev)
}

/// The task name of a record, up to its NUL.
#[must_use]
pub fn comm(ev: &FailureEvent) -> String {
    let len = ev
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(TASK_COMM_LEN);
    String::from_utf8_lossy(&ev.comm[..len]).into_owned()
}

/// The valid frames of a record's stack, innermost first.
#[inline]
#[must_use]
pub fn stack(ev: &FailureEvent) -> &[u64] {
    let n = (ev.stack_len as usize).min(ev.stack.len());
    &ev.stack[..n]
}

/// Converts the kernel's boot-time nanoseconds (`bpf_ktime_get_boot_ns`,
/// which counts suspend too) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    /// Wall-clock time of boot, in ns since the epoch.
    boot_epoch_ns: i128,
}

impl BootClock {
    /// Take the offset between the boot clock and the wall clock now.
    #[must_use]
    pub fn now() -> Self {
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let boot_ns = i128::from(boot.tv_sec) * 1_000_000_000 + i128::from(boot.tv_nsec);
        Self {
            boot_epoch_ns: i128::try_from(wall.as_nanos()).unwrap_or(i128::MAX) - boot_ns,
        }
    }

    /// Boot-time ns now.
    #[must_use]
    pub fn boot_ns_now() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
    }

    /// Wall-clock time of a boot-time timestamp.
    #[must_use]
    pub fn to_system(&self, boot_ns: u64) -> SystemTime {
        let ns = self.boot_epoch_ns + i128::from(boot_ns);
        let ns = u64::try_from(ns.max(0)).unwrap_or(u64::MAX);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

/// The ring buffer, readable from tokio.
pub struct EventStream {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records too short to decode (never expected; shown if non-zero).
    pub malformed: u64,
}

impl EventStream {
    /// Wrap the ring buffer for async reading.
    ///
    /// # Errors
    /// When tokio cannot register the map's fd.
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        debug_assert!(ring.as_raw_fd() >= 0);
        // SAFETY: the ring buffer owns its map fd, and the fd is neither
        // closed nor replaced while the AsyncFd holds it.
        let fd = unsafe { AsyncFd::register(ring)? };
        Ok(Self { fd, malformed: 0 })
    }

    /// Wait until records are available, then append every available one to
    /// `batch`. Returns how many were appended.
    ///
    /// # Errors
    /// When polling the ring buffer fails.
    pub async fn next_batch(&mut self, batch: &mut Vec<FailureEvent>) -> io::Result<usize> {
        self.next_with(&mut |ev| batch.push(*ev)).await
    }

    /// Wait until records are available, then hand every available one to
    /// `f` in place. Returns how many were handed over.
    ///
    /// # Errors
    /// When polling the ring buffer fails.
    pub async fn next_with(&mut self, f: &mut impl FnMut(&FailureEvent)) -> io::Result<usize> {
        let mut guard = self.fd.readable_mut().await?;
        let mut malformed = 0;
        let n = drain_ring(guard.get_inner_mut(), f, &mut malformed, usize::MAX);
        guard.clear_ready();
        self.malformed += malformed;
        Ok(n)
    }

    /// Hand every record available now to `f`, without waiting.
    pub fn drain(&mut self, f: &mut impl FnMut(&FailureEvent)) -> usize {
        self.drain_up_to(usize::MAX, f)
    }

    /// As [`Self::drain`], but stop after `limit` records (malformed ones
    /// included, follow records not: they are no failures, so a limit set
    /// by the failures an interval owes stays exact with
    /// `--observe-fallbacks`): the rest stay in the ring buffer for the next
    /// reader.
    pub fn drain_up_to(&mut self, limit: usize, f: &mut impl FnMut(&FailureEvent)) -> usize {
        let mut malformed = 0;
        let n = drain_ring(self.fd.get_mut(), f, &mut malformed, limit);
        self.malformed += malformed;
        n
    }
}

fn drain_ring(
    ring: &mut RingBuf<MapData>,
    f: &mut impl FnMut(&FailureEvent),
    malformed: &mut u64,
    limit: usize,
) -> usize {
    let mut n = 0;
    let mut taken = 0usize;
    while taken < limit
        && let Some(item) = ring.next()
    {
        // Follow records (`--observe-fallbacks`) are no failures: a limit
        // counts failures (and malformed records) only.
        if let Some(ev) = view(&item) {
            taken += usize::from(ev.flags & EVENT_FOLLOW == 0);
            f(ev);
            n += 1;
        } else if let Some(ev) = decode(&item) {
            taken += usize::from(ev.flags & EVENT_FOLLOW == 0);
            f(&ev);
            n += 1;
        } else {
            taken += 1;
            *malformed += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_record_and_its_comm_and_stack() {
        let mut ev = FailureEvent {
            ts_boot_ns: 5,
            cgroup_id: 1,
            gfp: 0x820,
            pid: 7,
            tgid: 6,
            order: 4,
            migratetype: 0,
            cpu: 1,
            flags: 0,
            stack_len: 2,
            _pad: 0,
            comm: [0; TASK_COMM_LEN],
            stack: [0; tracer_common::MAX_STACK_DEPTH],
        };
        ev.comm[..7].copy_from_slice(b"nettool");
        ev.stack[0] = 0xffff_ffff_8100_0000;
        ev.stack[1] = 0xffff_ffff_8100_0010;
        // SAFETY: viewing a POD struct as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), FailureEvent::SIZE) };
        let back = decode(bytes).unwrap();
        assert_eq!(
            view(bytes).map(|v| v.tgid),
            Some(6),
            "an aligned record is viewed in place"
        );
        assert!(view(&bytes[..10]).is_none());
        assert_eq!((back.order, back.gfp, back.tgid), (4, 0x820, 6));
        assert_eq!(comm(&back), "nettool");
        assert_eq!(
            stack(&back),
            &[0xffff_ffff_8100_0000, 0xffff_ffff_8100_0010]
        );
        assert!(decode(&bytes[..10]).is_none());
    }

    #[test]
    fn boot_clock_maps_now_to_now() {
        let c = BootClock::now();
        let t = c.to_system(BootClock::boot_ns_now());
        let d = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(d < Duration::from_secs(1), "{d:?}");
        assert!(crate::timestamp::rfc3339(t).ends_with('Z'));
    }
}
