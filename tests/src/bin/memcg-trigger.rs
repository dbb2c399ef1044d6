//! Causes one real failed page allocation on the running kernel.
//!
//! Moves itself into the memory cgroup given as argument, sets the cgroup's
//! limit a little above its current usage, then asks for file descriptor
//! 19999: growing the fd table needs an order-6 memcg-accounted allocation
//! (`alloc_fdtable` -> kvmalloc), whose charge fails; the page allocator
//! fires `mm_page_alloc` with a NULL page and the kernel falls back to
//! vmalloc, so this process is unharmed.
//!
//! Usage: memcg-trigger [--tight] <memory cgroup dir> [cgroup v2 dir]
//! With a cgroup v2 directory it joins that cgroup first, so the failure is
//! attributed to it. Prints `pid=<pid> dup2=<result>`.
//!
//! `--tight` makes the vmalloc fallback fail too, on purpose: the cgroup's
//! per-CPU charge cache is drained and the limit leaves four pages of
//! headroom, with the OOM killer off for the cgroup (v1 `oom_control`), so
//! the accounted vmalloc pages are refused after the order-6 kmalloc try:
//! `dup2` fails with ENOMEM/EMFILE and the last failure is terminal. The
//! limit is lifted again right after `dup2`, through a file opened before
//! (opening a file charges the cgroup), before anything else runs.

use std::{
    fs,
    io::{Seek, Write},
    path::Path,
};

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let tight = args.next_if(|a| a == "--tight").is_some();
    let Some(cg) = args.next() else {
        eprintln!("usage: memcg-trigger [--tight] <memory cgroup dir> [cgroup v2 dir]");
        std::process::exit(2);
    };
    let cg = Path::new(&cg);
    let pid = std::process::id();
    if let Some(v2) = args.next()
        && let Err(e) = fs::write(Path::new(&v2).join("cgroup.procs"), pid.to_string())
    {
        eprintln!("memcg-trigger: cannot join {v2}: {e}");
        std::process::exit(1);
    }
    // Room for fd 19999: raise the soft limit to the hard one.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid struct.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) == 0
        }
    };
    if !ok || lim.rlim_max <= 19999 {
        eprintln!(
            "memcg-trigger: need RLIMIT_NOFILE above 19999 (hard limit {}): {}",
            lim.rlim_max,
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    if let Err(e) = fs::write(cg.join("cgroup.procs"), pid.to_string()) {
        eprintln!("memcg-trigger: cannot join {}: {e}", cg.display());
        std::process::exit(1);
    }
    let usage_of = || -> u64 {
        fs::read_to_string(cg.join("memory.usage_in_bytes"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let r = if tight {
        tight_dup2(cg, usage_of)
    } else {
        if let Err(e) = fs::write(
            cg.join("memory.limit_in_bytes"),
            (usage_of() + 64 * 1024).to_string(),
        ) {
            eprintln!("memcg-trigger: cannot set the limit: {e}");
            std::process::exit(1);
        }
        // SAFETY: dup2 on valid fds.
        unsafe { libc::dup2(0, 19999) }
    };
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let v2 = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("");
    println!("pid={pid} dup2={r} cgroup2={v2}");
}

/// `dup2(0, 19999)` with the vmalloc fallback refused too (see the module
/// documentation); returns dup2's result.
fn tight_dup2(cg: &Path, usage_of: impl Fn() -> u64) -> i32 {
    let fail = |what: &str, e: std::io::Error| -> ! {
        eprintln!("memcg-trigger: {what}: {e}");
        std::process::exit(1);
    };
    // One CPU: the charge cache drained below is this CPU's.
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET on it, then the syscall.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(usize::try_from(libc::sched_getcpu()).unwrap_or(0), &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
    }
    if let Err(e) = fs::write(cg.join("memory.oom_control"), "1") {
        fail("cannot turn the cgroup's OOM killer off", e);
    }
    let mut limit = fs::OpenOptions::new()
        .write(true)
        .open(cg.join("memory.limit_in_bytes"))
        .unwrap_or_else(|e| fail("cannot open memory.limit_in_bytes", e));
    let mut set_limit = |bytes: u64| -> std::io::Result<()> {
        limit.rewind()?;
        limit.write_all(bytes.to_string().as_bytes())
    };
    // A limit just under the usage makes the kernel drain the per-CPU charge
    // cache (precharged pages, counted in the usage) before reclaiming; the
    // cgroup is new, so that is most of its usage. EBUSY when nothing more
    // can go: fine.
    let _ = set_limit(usage_of().saturating_sub(4096));
    let headroom = 4 * 4096;
    // What the loose limit is set back to, formatted now: nothing may
    // allocate between the tight limit and dup2's end.
    let loose = u64::MAX / 2;
    if let Err(e) = set_limit(usage_of() + headroom) {
        fail("cannot set the tight limit", e);
    }
    // SAFETY: dup2 on valid fds.
    let r = unsafe { libc::dup2(0, 19999) };
    let errno = std::io::Error::last_os_error();
    if let Err(e) = set_limit(loose & !4095) {
        fail("cannot lift the limit", e);
    }
    if r < 0 {
        eprintln!("memcg-trigger: dup2 failed as intended: {errno}");
    }
    r
}
