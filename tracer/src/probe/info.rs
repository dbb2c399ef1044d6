//! What the kernel reports about a loaded program (`BPF_OBJ_GET_INFO_BY_FD`)
//! that aya does not expose.

use std::os::fd::{AsRawFd as _, BorrowedFd};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info.recursion_misses` (u64), added in Linux 5.12.
const RECURSION_MISSES_OFFSET: usize = 208;

/// How many times the kernel skipped the program because it was already
/// running on the CPU. `Some(0)` from kernels older than the counter: they
/// predate the skip as well (5.10 runs nested raw tracepoint programs, which
/// `cargo xtask vm-test` checks). `None` when the kernel refuses the query.
#[must_use]
pub fn recursion_misses(prog: BorrowedFd<'_>) -> Option<u64> {
    // u64 words: the buffer is aligned for the kernel's struct.
    let mut info = [0u64; 32];
    let mut attr = [0u64; 2];
    let fd = u32::try_from(prog.as_raw_fd()).ok()?;
    let len = u32::try_from(std::mem::size_of_val(&info)).ok()?;
    attr[0] = u64::from(fd) | (u64::from(len) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: bpf(2) with a valid attribute block (bpf_fd, info_len, info)
    // whose info pointer covers `len` writable, zeroed bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r != 0 {
        return None;
    }
    // The kernel writes back how much of the struct it filled.
    let filled = usize::try_from(attr[0] >> 32).ok()?;
    if filled < RECURSION_MISSES_OFFSET + 8 {
        return Some(0);
    }
    Some(info[RECURSION_MISSES_OFFSET / 8])
}
