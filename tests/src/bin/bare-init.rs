//! `/init` of the bare-initramfs VM check (`cargo xtask vm-test --scenario bare`).
//!
//! The guest holds nothing but this program, the static `/pagefail` of
//! `cargo xtask dist`, device nodes and empty directories: no shell, no
//! busybox, no dynamic loader, no shared library. So this is built static
//! too (`-C target-feature=+crt-static` for x86_64-unknown-linux-gnu) and
//! does what a shell script would:
//!
//! 1. mounts proc, sysfs, tracefs, debugfs, cgroup2 and a tmpfs on /tmp;
//! 2. runs `/pagefail check --json` (every attach style loaded and attached);
//! 3. runs `/pagefail watch --all --duration 4 --no-tui` and, once it printed
//!    that it attached, touches [`TOUCH_PAGES`] fresh pages of anonymous
//!    memory (huge pages off for them), so at least that many order-0
//!    allocations happen while it counts;
//! 4. prints each output between `=====PAGEFAIL-BEGIN/END name=====` markers
//!    and one `PAGEFAIL-BARE key=value ...` line, then powers off.
//!
//! The host (xtask/src/vm/bare.rs) judges the output. Every wait is bounded:
//! a child that outlives [`CHILD_LIMIT`] is killed.

use std::{
    ffi::CString,
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

const PAGEFAIL: &str = "/pagefail";
/// Fresh pages touched while `watch` counts (16 MiB).
const TOUCH_PAGES: usize = 4096;
/// The longest any child may run before it is killed.
const CHILD_LIMIT: Duration = Duration::from_mins(1);

type Res<T> = Result<T, String>;

fn main() {
    let line = match run() {
        Ok(line) => line,
        Err(e) => format!("error={}", e.replace(' ', "_")),
    };
    println!("PAGEFAIL-BARE {line}");
    let _ = std::io::stdout().flush();
    power_off();
}

fn section(name: &str, body: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "=====PAGEFAIL-BEGIN {name}=====");
    let _ = out.write_all(body.as_bytes());
    if !body.is_empty() && !body.ends_with('\n') {
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "=====PAGEFAIL-END {name}=====");
    let _ = out.flush();
}

fn mount(source: &str, target: &str, fstype: &str) -> Res<()> {
    let c = |s: &str| CString::new(s).map_err(|e| format!("{s}: {e}"));
    let (src, tgt, fs) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: valid NUL-terminated strings and no data argument.
    let r = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount -t {fstype} {source} {target}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// A child's exit as one word: `0`, `1`, ..., `signal-9`, `killed`.
fn exit_word(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        None => "killed".to_owned(),
        Some(s) => s.code().map_or_else(
            || format!("signal-{}", s.signal().unwrap_or(0)),
            |c| c.to_string(),
        ),
    }
}

/// Read a pipe to the end on a thread.
fn collect(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    })
}

/// Wait for `child` until `deadline`, killing it then. `None`: killed.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn run() -> Res<String> {
    // proc and sysfs are required; pagefail mounts tracefs itself when it
    // is missing, and works without debugfs and cgroup2, so their failures
    // are reported, not fatal.
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    let mut mounts = Vec::new();
    for (src, target, fs) in [
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
        ("tmpfs", "/tmp", "tmpfs"),
    ] {
        mounts.push(match mount(src, target, fs) {
            Ok(()) => format!("{fs} on {target}"),
            Err(e) => format!("FAILED {e}"),
        });
    }
    section("mounts", &mounts.join("\n"));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    section("uname", release.trim());

    let (check_exit, check_out, check_err) = check()?;
    section("check-stdout", &check_out);
    section("check-stderr", &check_err);

    let w = watch()?;
    section("watch-stdout", &w.stdout);
    section("watch-stderr", &w.stderr);
    Ok(format!(
        "check_exit={check_exit} watch_exit={} attached={} touched_pages={} touch_ms={} \
         touched_while_watching={}",
        w.exit,
        u8::from(w.attached),
        w.touched,
        w.touch_ms,
        u8::from(w.touched_while_watching)
    ))
}

fn check() -> Res<(String, String, String)> {
    let mut child = Command::new(PAGEFAIL)
        .args(["check", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {PAGEFAIL} check: {e}"))?;
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    let status = wait_until(&mut child, Instant::now() + CHILD_LIMIT);
    Ok((
        exit_word(status),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    ))
}

struct Watched {
    exit: String,
    stdout: String,
    stderr: String,
    attached: bool,
    touched: usize,
    touch_ms: u128,
    /// The touching ended before `watch` did, so it counted every page.
    touched_while_watching: bool,
}

fn watch() -> Res<Watched> {
    let mut child = Command::new(PAGEFAIL)
        .args(["watch", "--all", "--duration", "4", "--no-tui"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {PAGEFAIL} watch: {e}"))?;
    let deadline = Instant::now() + CHILD_LIMIT;
    let out = collect(child.stdout.take());
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take();
    let err = thread::spawn(move || {
        let mut all = String::new();
        if let Some(e) = stderr {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
        }
        all
    });
    // Wait for "attached to mm_page_alloc (...)", or for the end of stderr
    // (pagefail exited without attaching).
    let mut attached = false;
    while !attached && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => attached = line.contains("attached to mm_page_alloc"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let (mut touched, mut touch_ms, mut touched_while_watching) = (0, 0, false);
    if attached {
        let t = Instant::now();
        touched = touch_fresh_pages(TOUCH_PAGES)?;
        touch_ms = t.elapsed().as_millis();
        touched_while_watching = matches!(child.try_wait(), Ok(None));
    }
    let status = wait_until(&mut child, deadline);
    Ok(Watched {
        exit: exit_word(status),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        attached,
        touched,
        touch_ms,
        touched_while_watching,
    })
}

/// Fault in `pages` fresh pages (order-0 allocations); returns the pages written.
fn touch_fresh_pages(pages: usize) -> Res<usize> {
    pagefail_tests::touch_fresh_pages(pages).map_err(|e| format!("mmap of {pages} pages: {e}"))?;
    Ok(pages)
}

/// Power the guest off (qemu then exits). init must never return, so if
/// the kernel refuses, wait a bounded time and let the exit panic the
/// kernel, which also ends qemu (`panic=-1`, `-no-reboot`).
fn power_off() {
    // SAFETY: plain syscalls.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    eprintln!(
        "bare-init: power off failed: {}",
        std::io::Error::last_os_error()
    );
    thread::sleep(Duration::from_secs(30));
}
