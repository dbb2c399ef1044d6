//! Bad input to the real `pagefail` binary: wrong option values, no
//! privileges, garbage and huge logs, foreign CSV files, a reader that goes
//! away, Ctrl-C during start-up. Whatever comes in, pagefail answers with a
//! message and an exit code, never a panic.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use pagefail_tests::{bpf_available, pagefail_bin};
use tracer::export::CSV_HEADER;

const REPORT: &str = include_str!("../fixtures/logs/dmesg-02-reuseport-listen.txt");
const V510: &str = include_str!("../fixtures/logs/v5.10-journal-short-iso.txt");

fn pagefail(args: &[&str]) -> Output {
    Command::new(pagefail_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pagefail")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// No panic message, whatever happened.
fn assert_no_panic(what: &str, stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what} panicked:\n{stderr}"
    );
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagefail-bad-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[3]
        })
        .collect()
}

#[test]
fn every_bad_option_value_is_a_usage_error() {
    // (arguments, a fragment clap's message must contain)
    let table: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unrecognized subcommand"),
        (&["watch", "--no-such-option"], "unexpected argument"),
        (&["watch", "--duration"], "a value is required"),
        (&["watch", "--duration", "soon"], "is not a duration"),
        (&["watch", "--duration", "0s"], "more than zero"),
        (&["watch", "--duration", "-5s"], "unexpected argument"),
        (&["watch", "--interval", "10ms"], "at least 100ms"),
        (&["watch", "--interval", "fast"], "is not a duration"),
        (&["watch", "--min-order", "16"], "16 is not in 0..=15"),
        (&["watch", "--min-order", "x"], "invalid digit"),
        (&["watch", "--pid", "0"], "0 is not in 1.."),
        (&["watch", "--pid", "99999999999"], "invalid value"),
        (&["watch", "--tid", "-1"], "unexpected argument"),
        (&["watch", "--ring-kib", "3"], "power of two"),
        (&["watch", "--ring-kib", "100"], "power of two"),
        (&["watch", "--ring-kib", "4096k"], "is not a number of KiB"),
        (&["watch", "--by", "zone"], "zone"),
        (&["watch", "--by", ""], "invalid value"),
        (&["watch", "--max-rows", "0"], "0 is not in 1..=1000000"),
        (&["watch", "--max-rows", "2000000"], "not in 1..=1000000"),
        (&["watch", "--stacks=yes"], "unexpected value"),
        (&["report"], "required"),
        (&["report", "--by", "zone", "a.csv"], "unknown key `zone`"),
        (&["report", "--by", ",", "a.csv"], "at least one key"),
        (&["report", "--json=1", "a.csv"], "unexpected value"),
        (&["check", "--sample", "0"], "more than zero"),
        (&["check", "--sample", "later"], "is not a duration"),
        (&["check", "--all"], "--sample"),
        (
            &["check", "--from", "a.csv", "--sample", "1s"],
            "cannot be used with",
        ),
        (&["check", "--from"], "a value is required"),
        (&["logs", "--min-order", "x"], "invalid digit"),
        (&["logs", "--min-order", "-1"], "unexpected argument"),
        (&["logs", "--year", "0"], "0 is not in 1..=9999"),
        (&["logs", "--year", "10000"], "not in 1..=9999"),
        (&["logs", "--json", "--json-reports"], "cannot be used with"),
        (&["logs", "--kernel"], "a value is required"),
        (&["completions", "tcsh"], "invalid value 'tcsh'"),
        (&["man", "--dir"], "a value is required"),
    ];
    for (args, want) in table {
        let out = pagefail(args);
        let stderr = text(&out.stderr);
        assert_no_panic(&format!("{args:?}"), &stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{args:?}: want `{want}` in\n{stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?}: usage errors print nothing on stdout"
        );
    }
    // And no arguments at all: help on stderr, exit 2.
    let out = pagefail(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage: pagefail"));
}

/// The binary, where an unprivileged user can run it.
fn world_executable_copy(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("pagefail");
    fs::copy(pagefail_bin(), &bin).expect("copy pagefail");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    bin
}

#[test]
fn without_privileges_tracing_says_what_is_missing_and_how_to_run() {
    if !bpf_available("without_privileges_tracing_says_what_is_missing_and_how_to_run") {
        return; // setpriv --reuid needs root
    }
    let dir = scratch("noroot");
    let bin = world_executable_copy(&dir);
    for args in [
        &["watch", "--duration", "1"][..],
        &["check", "--sample", "1s"],
        &["watch", "--keep-caps", "--csv", "/tmp/x.csv"],
    ] {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(&bin)
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv");
        let stderr = text(&out.stderr);
        assert_no_panic(&format!("{args:?}"), &stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        // `check --sample` first says what it is about to do.
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("pagefail: sampling"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, not\n{stderr}");
        assert!(
            lines[0].contains("lacks CAP_BPF and CAP_PERFMON") && lines[0].contains("sudo"),
            "{args:?}: {stderr}"
        );
    }
    // What needs no privilege still works unprivileged.
    let log = dir.join("kern.log");
    fs::write(&log, REPORT).expect("write log");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("logs")
        .arg(&log)
        .output()
        .expect("run setpriv");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 page allocation failure report"));
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// `pagefail logs` on one input file: (exit status, stdout, stderr).
fn logs(file: &Path, extra: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(pagefail_bin())
        .arg("logs")
        .args(extra)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run pagefail logs");
    let stderr = text(&out.stderr);
    assert_no_panic(&format!("logs {}", file.display()), &stderr);
    (out.status, text(&out.stdout), stderr)
}

#[test]
fn garbage_binary_and_truncated_logs_give_counts_not_panics() {
    let dir = scratch("logs");

    // Binary noise: no reports, exit 0.
    let f = dir.join("noise.bin");
    fs::write(&f, noise(4 << 20, 0x9e37_79b9_7f4a_7c15)).expect("write");
    let (st, out, _) = logs(&f, &[]);
    assert!(st.success());
    assert!(out.contains("0 page allocation failure reports"), "{out}");

    // Report lines with invalid UTF-8 and NULs spliced in, and every line
    // of a real report cut at every length: partial reports, never a panic.
    let mut spliced = Vec::new();
    for (i, line) in REPORT.lines().enumerate() {
        let b = line.as_bytes();
        let cut = (i * 7) % (b.len() + 1);
        spliced.extend_from_slice(&b[..cut]);
        spliced.extend_from_slice(&[0xff, 0x00, 0xc3]);
        spliced.extend_from_slice(&b[cut..]);
        spliced.push(b'\n');
    }
    let f = dir.join("spliced.log");
    fs::write(&f, &spliced).expect("write");
    let (st, _, _) = logs(&f, &["--json-reports"]);
    assert!(st.success());

    // Truncated in the middle of the call trace: one report, marked partial.
    let cut = REPORT.find("Call Trace").expect("fixture has a trace") + 40;
    let f = dir.join("truncated.log");
    fs::write(&f, &REPORT[..cut]).expect("write");
    let (st, out, _) = logs(&f, &[]);
    assert!(st.success());
    assert!(out.contains("1 page allocation failure report"), "{out}");
    assert!(out.contains("1 partial"), "{out}");

    // A gzip file cut in half: a clear error naming the file, exit 1.
    let mut enc = flate2_gzip(V510.repeat(20).as_bytes());
    enc.truncate(enc.len() / 2);
    let f = dir.join("cut.log.gz");
    fs::write(&f, &enc).expect("write");
    let (st, _, err) = logs(&f, &[]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot read {}", f.display())),
        "{err}"
    );

    // A directory and a missing file: clear errors.
    let (st, _, err) = logs(&dir, &[]);
    assert_eq!(st.code(), Some(1));
    assert!(
        err.contains("cannot read") || err.contains("cannot open"),
        "{err}"
    );
    let (st, _, err) = logs(&dir.join("missing"), &[]);
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("cannot open"), "{err}");
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// Gzip without a dependency: the system's `gzip`.
fn flate2_gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip output");
    writer.join().expect("writer").expect("write to gzip");
    out.stdout
}

/// A 50 MB log generated on the fly: real reports between megabytes of
/// noise and one 20 MB line. Memory stays bounded, every report is found.
#[test]
fn a_huge_log_is_read_in_bounded_memory_and_every_report_counted() {
    let dir = scratch("huge");
    let f = dir.join("huge.log");
    let mut w = std::io::BufWriter::new(fs::File::create(&f).expect("create"));
    let mut size = 0usize;
    let mut reports = 0;
    let mut seed = 1u64;
    while size < 50 << 20 {
        let chunk = if reports % 10 == 3 {
            // One very long line with no newline for 20 MB.
            vec![b'x'; 20 << 20]
        } else {
            let mut n = noise(2 << 20, seed);
            n.retain(|&b| b != b'\n');
            n.push(b'\n');
            n
        };
        seed += 1;
        w.write_all(&chunk).expect("write");
        w.write_all(b"\n").expect("write");
        w.write_all(REPORT.as_bytes()).expect("write");
        size += chunk.len() + REPORT.len() + 1;
        reports += 1;
    }
    w.flush().expect("flush");
    drop(w);
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M"])
        .arg(pagefail_bin())
        .arg("logs")
        .arg(&f)
        .output()
        .expect("run pagefail logs");
    let stderr = text(&out.stderr);
    assert_no_panic("huge log", &stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{reports} page allocation failure reports")),
        "{reports} reports expected:\n{stdout}"
    );
    assert!(
        stdout.contains("cut: "),
        "long line reported as cut:\n{stdout}"
    );
    let rss: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("maxrss from /usr/bin/time");
    assert!(rss < 64 * 1024, "{rss} KiB resident for a 50 MB log");
    eprintln!(
        "huge log: {size} bytes, {reports} reports, {rss} KiB max RSS, {:?}",
        start.elapsed()
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn foreign_csv_files_are_refused_with_the_expected_header() {
    let dir = scratch("csv");
    let cases: &[(&str, Vec<u8>)] = &[
        ("other.csv", b"a,b,c\n1,2,3\n".to_vec()),
        ("empty.csv", Vec::new()),
        ("binary.csv", noise(4096, 7)),
        (
            "reordered.csv",
            format!("{}\n", {
                let mut h = CSV_HEADER.to_vec();
                h.swap(0, 1);
                h.join(",")
            })
            .into_bytes(),
        ),
    ];
    for (name, body) in cases {
        let f = dir.join(name);
        fs::write(&f, body).expect("write");
        let path = f.to_str().expect("utf-8 path");
        for args in [
            &["report", path][..],
            &["check", "--no-probe", "--from", path],
        ] {
            let out = pagefail(args);
            let stderr = text(&out.stderr);
            assert_no_panic(&format!("{args:?}"), &stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(
                stderr.contains("not a pagefail CSV summary")
                    // check --from also takes kernel logs, and says so.
                    || stderr.contains("neither a pagefail CSV summary")
                    || stderr.contains("cannot read the CSV header")
                    || stderr.contains("cannot read the header"),
                "{args:?}: {stderr}"
            );
            if *name == "other.csv" {
                assert!(
                    stderr.contains("window_start,window_end"),
                    "{args:?}: {stderr}"
                );
            }
        }
    }
    // The right header, then a row that does not parse: the line is named.
    let f = dir.join("badrow.csv");
    fs::write(
        &f,
        format!(
            "{}\nS,E,h,k,c,1,/,task,none,NaN,0x1,X,true,1,0,a,b,s\n",
            CSV_HEADER.join(",")
        ),
    )
    .expect("write");
    let path = f.to_str().expect("utf-8 path");
    for args in [
        &["report", path][..],
        &["check", "--no-probe", "--from", path],
    ] {
        let out = pagefail(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("row 2"), "{args:?}: {stderr}");
    }
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// A CSV summary with `rows` distinct rows, as written before the `cause`
/// and `outcome` columns (readers still take it).
fn big_csv(path: &Path, rows: usize) {
    let mut s = tracer::export::CSV_HEADER_BEFORE_VERDICT.join(",");
    s.push('\n');
    for i in 0..rows {
        s.push_str(&format!(
            "2026-11-22T03:00:00Z,2026-11-22T03:00:05Z,host{},6.1.0,comm{i},{i},/,softirq,tcp,3,0x820,GFP_ATOMIC,true,{},0,,,net_rx_action;tcp_v4_rcv\n",
            i % 7,
            1 + i % 13
        ));
    }
    fs::write(path, s).expect("write csv");
}

/// Run `pagefail <args>`, read at most one line of its stdout and close the
/// pipe: it must exit 0 (or by SIGPIPE) with no panic.
fn head_1(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(pagefail_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pagefail");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    let _ = stdout.read_line(&mut first);
    drop(stdout);
    let status = wait_timeout(&mut child, timeout)
        .unwrap_or_else(|| panic!("{args:?} did not exit after its reader left"));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_no_panic(&format!("{args:?} | head -1"), &stderr);
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{args:?} | head -1: {status}\n{stderr}"
    );
    assert!(
        !stderr.contains("Broken pipe"),
        "{args:?}: a closed pipe is not an error:\n{stderr}"
    );
    (status, first)
}

fn wait_timeout(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(st) = child.try_wait().expect("wait") {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn output_to_a_pipe_closed_early_exits_quietly() {
    let dir = scratch("pipe");
    let log = dir.join("big.log");
    fs::write(&log, REPORT.repeat(2000)).expect("write log");
    let csv = dir.join("big.csv");
    big_csv(&csv, 5000);
    let (log, csv) = (log.to_str().expect("path"), csv.to_str().expect("path"));
    let long = Duration::from_mins(1);
    let (_, first) = head_1(&["logs", "--json-reports", log], long);
    assert!(first.starts_with('{'), "{first}");
    let (_, first) = head_1(&["logs", log], long);
    assert!(first.contains("page allocation failure report"), "{first}");
    let (_, first) = head_1(&["report", "--json", csv], long);
    assert!(first.contains("\"comm\""), "{first}");
    let (_, first) = head_1(&["report", csv], long);
    assert!(first.contains("rows from 1 files"), "{first}");
    head_1(&["completions", "bash"], long);
    head_1(&["man"], long);
    head_1(&["check", "--no-probe"], long);

    // stdout and stderr both closed before pagefail writes anything
    // (`pagefail ... 2>&1 | true`): the exports are still written, and
    // the exit is quiet (no panic, whose exit code would be 101).
    let out_csv = dir.join("merged.csv");
    let mut child = Command::new(pagefail_bin())
        .args(["report", csv, "--csv"])
        .arg(&out_csv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn report");
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = wait_timeout(&mut child, long).expect("report exits");
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "report with closed stdout and stderr: {status}"
    );
    let merged = fs::read_to_string(&out_csv).expect("merged CSV written");
    assert_eq!(merged.lines().count(), 5001, "header + 5000 rows");
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn watch_into_a_pipe_closed_early_exits_quietly() {
    if !bpf_available("watch_into_a_pipe_closed_early_exits_quietly") {
        return;
    }
    let (status, first) = head_1(
        &[
            "watch",
            "--all",
            "--no-tui",
            "--interval",
            "100ms",
            "--duration",
            "20s",
        ],
        Duration::from_secs(15),
    );
    assert!(first.starts_with("pagefail "), "{first}");
    // The live view noticed the closed pipe and stopped well before --duration.
    assert!(status.success(), "{status}");
}

/// IDs of the pagefail programs loaded now, each with whether some process
/// holds it (a program or link fd whose fdinfo names it).
fn pagefail_programs() -> Vec<(u32, bool)> {
    let ids: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("pagefail")))
        .map(|p| p.id())
        .collect();
    let held = pagefail_tests::held_program_ids(None);
    ids.into_iter().map(|id| (id, held.contains(&id))).collect()
}

#[test]
fn sigint_during_start_up_exits_cleanly_and_leaks_nothing() {
    if !bpf_available("sigint_during_start_up_exits_cleanly_and_leaks_nothing") {
        return;
    }
    for delay_ms in [0u64, 1, 3, 5, 10, 20, 40, 80, 150, 300, 600] {
        let mut cmd = Command::new(pagefail_bin());
        // As from a terminal: a runner started in the background of a
        // non-interactive shell has SIGINT ignored, and a child inherits that
        // until it installs its own handler.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = cmd
            .args(["watch", "--all", "--no-tui", "--duration", "30s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn watch");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let start = Instant::now();
        let out = child.wait_with_output().expect("wait watch");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{delay_ms} ms: exit took {:?}",
            start.elapsed()
        );
        let stderr = text(&out.stderr);
        assert_no_panic(&format!("SIGINT after {delay_ms} ms"), &stderr);
        // Before the handler is installed, SIGINT's default action ends the
        // process (the kernel then drops every BPF object it held); after,
        // watch stops, detaches and prints its summary.
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGINT),
            "{delay_ms} ms: {}\n{stderr}",
            out.status
        );
        if out.status.success() {
            assert!(
                text(&out.stdout).contains("=== pagefail summary ==="),
                "{delay_ms} ms: no summary:\n{}",
                text(&out.stdout)
            );
        }
    }
    // Programs are freed asynchronously (RCU) once their last fd closes.
    let start = Instant::now();
    loop {
        let orphans: Vec<u32> = pagefail_programs()
            .into_iter()
            .filter(|(_, held)| !held)
            .map(|(id, _)| id)
            .collect();
        if orphans.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "pagefail programs loaded but held by no process: {orphans:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/proc/<pid>/status` field.
fn status_field(pid: u32, field: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
}

#[test]
fn watch_runs_with_no_capabilities_once_attached() {
    if !bpf_available("watch_runs_with_no_capabilities_once_attached") {
        return;
    }
    let dir = scratch("caps");
    let csv = dir.join("out.csv");
    for (keep, want_eff_zero) in [(false, true), (true, false)] {
        let mut cmd = Command::new(pagefail_bin());
        cmd.args(["watch", "--all", "--no-tui", "--duration", "3s", "--csv"])
            .arg(&csv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if keep {
            cmd.arg("--keep-caps");
        }
        let mut child = cmd.spawn().expect("spawn watch");
        // The first live line means the session is attached and running.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("first line");
        assert!(first.starts_with("pagefail "), "{first}");
        let eff = status_field(child.id(), "CapEff:").expect("CapEff");
        let nnp = status_field(child.id(), "NoNewPrivs:").expect("NoNewPrivs");
        let bnd = status_field(child.id(), "CapBnd:").expect("CapBnd");
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).expect("rest of stdout");
        let out = child.wait_with_output().expect("wait");
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "keep={keep}: {stderr}");
        if want_eff_zero {
            assert_eq!(eff, "0000000000000000", "CapEff while tracing");
            assert_eq!(bnd, "0000000000000000", "CapBnd while tracing");
            assert_eq!(nnp, "1", "NoNewPrivs while tracing");
        } else {
            assert_ne!(eff, "0000000000000000", "--keep-caps keeps them");
            assert_eq!(nnp, "0");
        }
        // Counters (per-CPU maps) read and the export written after the drop.
        assert!(rest.contains("=== pagefail summary ==="), "{rest}");
        assert!(rest.contains("succeeded by order: o0:"), "{rest}");
        let written = fs::read_to_string(&csv).expect("CSV written after the drop");
        assert!(written.starts_with("window_start,"), "{written}");
        fs::remove_file(&csv).expect("remove csv");
    }
    fs::remove_dir_all(&dir).expect("cleanup");
}
