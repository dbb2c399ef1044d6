//! Helpers shared by pagefail's kernel-tier tests: capability checks that
//! skip loudly (or fail in CI), a private tracefs instance as ground truth,
//! and a memory cgroup that makes the kernel fail a real allocation.

pub mod hist;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long a pagefail child may take to attach.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

/// Start a pagefail command (`watch` or `record`), read its stderr on a
/// thread (each line echoed as `NAME: line` and kept), and return once it
/// says it attached to `mm_page_alloc`. The thread's result is the whole
/// stderr, available after the child ends.
///
/// # Panics
/// When the command cannot start or does not attach within 20 s.
#[must_use]
pub fn spawn_attached(cmd: &mut Command, name: &'static str) -> (Child, JoinHandle<String>) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start pagefail {name}: {e}"));
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("attached to mm_page_alloc") {
                let _ = tx.send(());
            }
            eprintln!("{name}: {line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(ATTACH_TIMEOUT).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        let said = reader.join().unwrap_or_default();
        panic!("pagefail {name} did not attach within {ATTACH_TIMEOUT:?}; it said:\n{said}");
    }
    (child, reader)
}

/// Run the `memcg-trigger` helper (`exe`, the test's
/// `CARGO_BIN_EXE_memcg-trigger`) in memory cgroup `cg`, with `extra`
/// arguments after it; its pid.
///
/// # Panics
/// When it cannot run, fails, or prints no `pid=`.
#[must_use]
pub fn run_trigger<S: AsRef<std::ffi::OsStr>>(exe: &str, cg: &Path, extra: &[S]) -> u32 {
    let out = Command::new(exe)
        .arg(cg)
        .args(extra)
        .output()
        .expect("run memcg-trigger");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "memcg-trigger failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("memcg-trigger printed no pid=")
}

/// A loopback TCP port free at the time of the call.
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether this process may load BPF programs. When it may not, the test is
/// skipped with the reason on stderr, unless `PAGEFAIL_REQUIRE_BPF` is set
/// (CI), where that is a failure.
#[must_use]
pub fn bpf_available(test: &str) -> bool {
    let eff = tracer::probe::caps::effective().unwrap_or(0);
    let ok = eff & (1 << 21) != 0 || (eff & (1 << 39) != 0 && eff & (1 << 38) != 0);
    if !ok {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let msg = format!(
            "SKIPPED {test}: needs CAP_BPF and CAP_PERFMON (or root) on kernel {}",
            release.trim()
        );
        assert!(
            std::env::var_os("PAGEFAIL_REQUIRE_BPF").is_none(),
            "{msg} (required here)"
        );
        eprintln!("{msg}");
    }
    ok
}

/// The release `pagefail` binary (set by `cargo xtask test`), else the
/// workspace's release or debug build.
#[must_use]
pub fn pagefail_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PAGEFAIL_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("pagefail");
        if p.exists() {
            return p;
        }
    }
    panic!("pagefail binary not built: run `cargo xtask test` (or cargo build -p tracer)");
}

/// tracefs root, mounted if needed.
#[must_use]
pub fn tracefs() -> PathBuf {
    let p = PathBuf::from("/sys/kernel/tracing");
    if !p.join("events").is_dir() {
        let ok = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount tracefs at /sys/kernel/tracing");
    }
    p
}

/// A private tracefs instance with `kmem/mm_page_alloc` enabled under a
/// filter: the kernel's own count of events, independent of pagefail.
pub struct TraceInstance {
    dir: PathBuf,
}

impl TraceInstance {
    /// Create the instance with the event filter set, disabled.
    #[must_use]
    pub fn new(name: &str, filter: &str) -> Self {
        let dir = tracefs().join("instances").join(name);
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).expect("create tracefs instance");
        let ev = dir.join("events/kmem/mm_page_alloc");
        fs::write(ev.join("filter"), filter).expect("set event filter");
        fs::write(dir.join("buffer_size_kb"), "4096").expect("set buffer size");
        Self { dir }
    }

    /// Start or stop recording.
    pub fn enable(&self, on: bool) {
        fs::write(
            self.dir.join("events/kmem/mm_page_alloc/enable"),
            if on { "1" } else { "0" },
        )
        .expect("toggle event");
    }

    /// The recorded event lines.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("trace"))
            .expect("read trace")
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("mm_page_alloc:"))
            .map(str::to_owned)
            .collect()
    }

    /// Entries the instance's buffer dropped (must be 0 for a count to be exact).
    #[must_use]
    pub fn overruns(&self) -> u64 {
        fs::read_dir(self.dir.join("per_cpu")).map_or(0, |d| {
            d.flatten()
                .filter_map(|e| fs::read_to_string(e.path().join("stats")).ok())
                .flat_map(|s| {
                    s.lines()
                        .filter_map(|l| l.strip_prefix("overrun:"))
                        .filter_map(|v| v.trim().parse::<u64>().ok())
                        .collect::<Vec<_>>()
                })
                .sum()
        })
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        self.enable(false);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The cgroup v1 memory controller root, if this machine has one.
#[must_use]
pub fn memcg_v1_root() -> Option<PathBuf> {
    let p = PathBuf::from("/sys/fs/cgroup/memory");
    p.join("memory.limit_in_bytes").exists().then_some(p)
}

/// Remove a cgroup directory, retrying while its last task exits.
pub fn remove_cgroup(dir: &Path) {
    let start = Instant::now();
    while dir.exists() && start.elapsed() < Duration::from_secs(5) {
        if fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fault in `pages` fresh anonymous pages, then unmap them: a new private
/// mapping with huge pages off, so the page allocator runs once per page
/// (order 0). The tests' and benchmarks' allocation load.
///
/// # Errors
/// When the mapping cannot be made.
pub fn touch_fresh_pages(pages: usize) -> std::io::Result<()> {
    const PAGE: usize = 4096;
    let len = pages * PAGE;
    // SAFETY: a private anonymous mapping of `len` bytes, touched only within
    // its bounds, then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // Without this a 2 MiB-aligned range may be one order-9 page.
        let _ = libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        let base = p.cast::<u8>();
        for i in 0..pages {
            std::ptr::write_volatile(base.add(i * PAGE), 1);
        }
        libc::munmap(p, len);
    }
    Ok(())
}

/// IDs of the BPF programs that process `pid` holds a file descriptor of
/// (a program or link fd whose fdinfo names a `prog_id`); every process when
/// `pid` is `None`.
#[must_use]
pub fn held_program_ids(pid: Option<u32>) -> std::collections::HashSet<u32> {
    let procs: Vec<PathBuf> = match pid {
        Some(p) => vec![PathBuf::from(format!("/proc/{p}"))],
        None => std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect(),
    };
    let mut held = std::collections::HashSet::new();
    for dir in procs {
        let Ok(fds) = std::fs::read_dir(dir.join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            if let Some(id) = info
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                held.insert(id);
            }
        }
    }
    held
}
