//! Causes one real failed page allocation on the running kernel.
//!
//! Moves itself into the memory cgroup given as argument, sets the cgroup's
//! limit a little above its current usage, then asks for file descriptor
//! 19999: growing the fd table needs an order-6 memcg-accounted allocation
//! (`alloc_fdtable` -> kvmalloc), whose charge fails; the page allocator
//! fires `mm_page_alloc` with a NULL page and the kernel falls back to
//! vmalloc, so this process is unharmed.
//!
//! Usage: memcg-trigger <memory cgroup dir> [cgroup v2 dir]
//! With a cgroup v2 directory it joins that cgroup first, so the failure is
//! attributed to it. Prints `pid=<pid> dup2=<result>`.

use std::{fs, path::Path};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(cg) = args.next() else {
        eprintln!("usage: memcg-trigger <memory cgroup dir> [cgroup v2 dir]");
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
    let usage: u64 = fs::read_to_string(cg.join("memory.usage_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if let Err(e) = fs::write(
        cg.join("memory.limit_in_bytes"),
        (usage + 64 * 1024).to_string(),
    ) {
        eprintln!("memcg-trigger: cannot set the limit: {e}");
        std::process::exit(1);
    }
    // SAFETY: dup2 on valid fds.
    let r = unsafe { libc::dup2(0, 19999) };
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let v2 = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("");
    println!("pid={pid} dup2={r} cgroup2={v2}");
}
