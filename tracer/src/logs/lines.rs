//! Recognizers for the lines of a `page allocation failure` report, across
//! kernel versions. Each takes the kernel's text (prefix already removed) and
//! returns `None` when the line is something else; none of them panics.
//!
//! The report is printed by `warn_alloc` (4.9+), `warn_alloc_failed` (3.x) or
//! inline in `__alloc_pages_slowpath` (2.6), followed by `dump_stack()` and
//! `show_mem()`:
//! <https://elixir.bootlin.com/linux/v6.1/source/mm/page_alloc.c#L4363>,
//! <https://elixir.bootlin.com/linux/v2.6.32/source/mm/page_alloc.c#L1925>.

use serde::Serialize;

/// The first line: `comm: page allocation failure: order:N, mode:0x..(NAMES)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// Empty when the line has none (some 4.4 distribution kernels, or a
    /// paste where another CPU's output split the line).
    pub comm: &'a str,
    pub order: u32,
    /// `None` when the line ends before `mode:` (wrapped by a mail client or
    /// a terminal, or split by another CPU's output): see [`mode_continuation`].
    pub gfp: Option<u64>,
    /// Names as printed (4.6+), without the parentheses.
    pub names: Option<&'a str>,
}

/// The outcome of looking at a line for a report header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch<'a> {
    Header(Header<'a>),
    /// Says `page allocation failure` but in no shape this parser knows.
    Unknown,
}

pub const FAILURE: &str = "page allocation failure";

/// Recognize a report's first line (the first header of the line; see
/// [`headers`] for lines where two CPUs' headers ran together).
#[must_use]
pub fn header(body: &str) -> Option<HeaderMatch<'_>> {
    headers(body).next()
}

/// Every header of a line: two CPUs printing at once can put two on one
/// line (`page allocation failure: order:0page allocation failure: order:0, mode:...`).
pub fn headers(body: &str) -> impl Iterator<Item = HeaderMatch<'_>> {
    let mut from = 0;
    let mut first = true;
    std::iter::from_fn(move || {
        let at = from + body.get(from..)?.find(FAILURE)?;
        let comm_text = if first { &body[..at] } else { "" };
        first = false;
        let start = at + FAILURE.len();
        let end = body[start..]
            .find(FAILURE)
            .map_or(body.len(), |n| start + n);
        from = end;
        Some(one_header(comm_text, &body[start..end]))
    })
}

fn one_header<'a>(comm_text: &'a str, rest: &'a str) -> HeaderMatch<'a> {
    let comm = comm_text.trim().trim_end_matches(':').trim_end();
    // What a prefix the line parser did not take left before the name: a
    // stamp that lost its `[` (`4.795291] swapper/0`), a shell prompt before
    // a stamp (`root@host:~# [  533.797044] mmcqd/1`).
    let comm = comm
        .rsplit_once("] ")
        .map_or(comm, |(_, name)| name.trim_start());
    // 2.6 prints `failure. order:`, later kernels `failure: order:`.
    let Some(rest) = rest.strip_prefix(['.', ':']).map(str::trim_start) else {
        return HeaderMatch::Unknown;
    };
    let Some(order) = rest
        .strip_prefix("order:")
        .and_then(|r| leading_u64(r).0)
        .and_then(|o| u32::try_from(o).ok())
        .filter(|o| *o < 64)
    else {
        return HeaderMatch::Unknown;
    };
    let (gfp, names) = if let Some(at) = rest.find("mode:0x") {
        match mode(&rest[at..]) {
            Some(m) => m,
            None => return HeaderMatch::Unknown,
        }
    } else {
        {
            // Cut after the order: only a line break (or nothing) may follow.
            let after = rest["order:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
            if !after.trim().trim_end_matches(',').is_empty() {
                return HeaderMatch::Unknown;
            }
            (None, None)
        }
    };
    HeaderMatch::Header(Header {
        comm,
        order,
        gfp,
        names,
    })
}

/// `mode:0x820(GFP_ATOMIC)...` -> the mask and the names.
fn mode(s: &str) -> Option<(Option<u64>, Option<&str>)> {
    let m = s.strip_prefix("mode:0x")?;
    let hex_len = m.bytes().take_while(u8::is_ascii_hexdigit).count();
    let gfp = u64::from_str_radix(&m[..hex_len], 16).ok()?;
    let names = m[hex_len..]
        .strip_prefix('(')
        .and_then(|r| r.find(')').map(|end| &r[..end]))
        .filter(|n| !n.is_empty());
    Some((Some(gfp), names))
}

/// The rest of a header cut after `order:N,`: a line starting with `mode:0x`
/// (or `, mode:0x`).
#[must_use]
pub fn mode_continuation(body: &str) -> Option<(u64, Option<&str>)> {
    let t = body.trim_start().trim_start_matches(',').trim_start();
    match mode(t)? {
        (Some(g), names) => Some((g, names)),
        (None, _) => None,
    }
}

/// A line that is only a task name and a colon (`swapper/3: `): the start
/// of a header whose rest another CPU's output pushed to a later line.
#[must_use]
pub fn lone_comm(body: &str) -> Option<&str> {
    let t = body.trim();
    let comm = t.strip_suffix(':')?;
    let plausible = !comm.is_empty()
        && comm.len() <= 16
        && !comm.contains(char::is_whitespace)
        && !comm.contains(':')
        && !matches!(
            comm,
            "Mem-Info" | "Mem-info" | "Backtrace" | "Stack" | "Code"
        );
    plausible.then_some(comm)
}

/// `CPU: 1 PID: 177 Comm: nettool Not tainted 6.1.0-56-cloud-amd64 #1` (3.10+,
/// `UID: 0` inside from 6.11) or `Pid: 0, comm: swapper Not tainted
/// 2.6.32-754.el6.x86_64 #1` (2.6 to 3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident<'a> {
    pub cpu: Option<u32>,
    pub pid: Option<u32>,
    pub comm: Option<&'a str>,
    pub kernel: Option<&'a str>,
}

/// Recognize the task/kernel identification line of `dump_stack()`.
#[must_use]
pub fn ident(body: &str) -> Option<Ident<'_>> {
    let t = body.trim_start();
    let (cpu, rest) = if let Some(r) = t.strip_prefix("CPU: ") {
        let (cpu, r) = leading_u64(r);
        (cpu.and_then(|c| u32::try_from(c).ok()), r)
    } else if t.starts_with("Pid: ") {
        (None, t)
    } else {
        return None;
    };
    let pid_at = rest.find("PID: ").or_else(|| rest.find("Pid: "))?;
    let (pid, after_pid) = leading_u64(&rest[pid_at + 5..]);
    let pid = pid.and_then(|p| u32::try_from(p).ok());
    let comm_at = after_pid
        .find("Comm: ")
        .or_else(|| after_pid.find("comm: "));
    let (comm, kernel) = match comm_at {
        Some(at) => {
            let after = &after_pid[at + 6..];
            let taint_at = after
                .find(" Not tainted")
                .or_else(|| after.find(" Tainted:"));
            match taint_at {
                Some(tat) => (Some(after[..tat].trim()), version_token(&after[tat..])),
                None => (after.split_whitespace().next(), None),
            }
        }
        None => (None, None),
    };
    Some(Ident {
        cpu,
        pid,
        comm,
        kernel,
    })
}

/// The first token that looks like a kernel release (`6.1.0-56-cloud-amd64`),
/// after the taint flags (`G        W  O`, RHEL's `---------------`).
fn version_token(s: &str) -> Option<&str> {
    s.split_whitespace().take(24).find(|tok| {
        let b = tok.as_bytes();
        b.first().is_some_and(u8::is_ascii_digit) && tok.contains('.') && b.len() >= 3
    })
}

/// The rest of an identification line wrapped before the kernel release
/// (`WC O    4.12.0-rc3-android-x86+ #1`): taint flags, then the release.
#[must_use]
pub fn kernel_continuation(body: &str) -> Option<&str> {
    let mut toks = body.split_whitespace();
    for tok in toks.by_ref().take(12) {
        if tok.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let b = tok.as_bytes();
            return (tok.contains('.') && b.len() >= 3).then_some(tok);
        }
        if !tok.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
            return None;
        }
    }
    None
}

/// A stack marker: `<IRQ>`, `</IRQ>`, `<EOI>`, `<TASK>`, `<SOFTIRQ>`, `<NMI>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// No marker seen yet (kernels before 4.x print markers only for IRQ stacks).
    None,
    Irq,
    Softirq,
    Nmi,
    Task,
}

pub use super::frames::{FrameLine, TraceLine, trace_line};

/// `warn_alloc: 11955 callbacks suppressed` (4.9+), `warn_alloc_failed: N
/// callbacks suppressed` (3.1 to 4.8), `__alloc_pages_slowpath: N callbacks
/// suppressed` (2.6.3x, whose `printk_ratelimit()` call in the allocator's
/// slow path names that function). Older 2.6 kernels' `__ratelimit: N
/// callbacks suppressed` counts every `printk_ratelimit()` user, so it is not
/// taken as failures.
#[must_use]
pub fn suppressed(body: &str) -> Option<u64> {
    let t = body.trim();
    let (func, rest) = t.split_once(": ")?;
    if !matches!(
        func,
        "warn_alloc" | "warn_alloc_failed" | "__alloc_pages_slowpath"
    ) {
        return None;
    }
    let (n, rest) = leading_u64(rest);
    rest.trim_start()
        .starts_with("callbacks suppressed")
        .then_some(n)?
}

/// A decimal number at the start of `s`, and what follows it.
#[must_use]
pub fn leading_u64(s: &str) -> (Option<u64>, &str) {
    let len = s.bytes().take_while(u8::is_ascii_digit).count();
    (s[..len].parse().ok(), &s[len..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_a_prefix_are_not_the_comm() {
        for line in [
            "    4.795291] swapper/0: page allocation failure: order:1, mode:0x20",
            "root@beaglebone:~# [  533.797044] swapper/0: page allocation failure: order:1, mode:0x20",
        ] {
            let Some(HeaderMatch::Header(h)) = header(line) else {
                panic!("{line}");
            };
            assert_eq!(h.comm, "swapper/0", "{line}");
        }
    }

    #[test]
    fn headers_of_every_era() {
        let h = header(
            "nettool: page allocation failure: order:1, mode:0xb20(GFP_ATOMIC|__GFP_ZERO), nodemask=(null),cpuset=/,mems_allowed=0",
        );
        assert_eq!(
            h,
            Some(HeaderMatch::Header(Header {
                comm: "nettool",
                order: 1,
                gfp: Some(0xb20),
                names: Some("GFP_ATOMIC|__GFP_ZERO"),
            }))
        );
        let h = header("swapper: page allocation failure. order:1, mode:0x20");
        assert_eq!(
            h,
            Some(HeaderMatch::Header(Header {
                comm: "swapper",
                order: 1,
                gfp: Some(0x20),
                names: None,
            }))
        );
        let h =
            header("kworker/0:1H: page allocation failure: order:4, mode:0x2080020(GFP_ATOMIC)");
        let Some(HeaderMatch::Header(h)) = h else {
            panic!("{h:?}")
        };
        assert_eq!(
            (h.comm, h.order, h.gfp),
            ("kworker/0:1H", 4, Some(0x208_0020))
        );
        assert_eq!(
            header("page allocation failure, somehow"),
            Some(HeaderMatch::Unknown)
        );
        assert_eq!(
            header("x: page allocation failure: order:z"),
            Some(HeaderMatch::Unknown)
        );
        assert_eq!(header("ordinary line"), None);
    }

    #[test]
    fn ident_lines() {
        let i = ident(
            "CPU: 1 PID: 177 Comm: nettool Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2",
        )
        .unwrap();
        assert_eq!(i.cpu, Some(1));
        assert_eq!(i.pid, Some(177));
        assert_eq!(i.comm, Some("nettool"));
        assert_eq!(i.kernel, Some("6.1.0-56-cloud-amd64"));
        let i = ident("Pid: 0, comm: swapper Not tainted 2.6.32-754.el6.x86_64 #1").unwrap();
        assert_eq!((i.cpu, i.pid, i.comm), (None, Some(0), Some("swapper")));
        assert_eq!(i.kernel, Some("2.6.32-754.el6.x86_64"));
        let i = ident("CPU: 3 PID: 0 Comm: swapper/3 Tainted: G        W  O      4.9.0-8-amd64 #1 Debian 4.9.130-2").unwrap();
        assert_eq!(
            (i.cpu, i.comm, i.kernel),
            (Some(3), Some("swapper/3"), Some("4.9.0-8-amd64"))
        );
        let i = ident("CPU: 2 UID: 0 PID: 42 Comm: Web Content Not tainted 6.12.0 #1").unwrap();
        assert_eq!(
            (i.pid, i.comm, i.kernel),
            (Some(42), Some("Web Content"), Some("6.12.0"))
        );
        let i = ident("Pid: 1234, comm: java Tainted: G        W  ---------------    2.6.32-431.el6.x86_64 #1").unwrap();
        assert_eq!(i.kernel, Some("2.6.32-431.el6.x86_64"));
        assert_eq!(ident("CPU0: something else"), None);
    }

    #[test]
    fn cut_and_joined_headers() {
        let Some(HeaderMatch::Header(h)) =
            header("RenderThread: page allocation failure: order:0,")
        else {
            panic!()
        };
        assert_eq!((h.comm, h.order, h.gfp), ("RenderThread", 0, None));
        assert_eq!(
            mode_continuation("mode:0x14210d2(GFP_HIGHUSER|__GFP_NORETRY),"),
            Some((0x14_210d2, Some("GFP_HIGHUSER|__GFP_NORETRY")))
        );
        assert_eq!(
            mode_continuation(", mode:0x1080020(GFP_ATOMIC), nodemask="),
            Some((0x108_0020, Some("GFP_ATOMIC")))
        );
        assert_eq!(mode_continuation("model: x"), None);
        let hs: Vec<_> = headers(
            "page allocation failure: order:0page allocation failure: order:0, mode:0x2080020(GFP_ATOMIC)",
        )
        .collect();
        assert_eq!(hs.len(), 2);
        let HeaderMatch::Header(a) = &hs[0] else {
            panic!()
        };
        let HeaderMatch::Header(b) = &hs[1] else {
            panic!()
        };
        assert_eq!(
            (a.comm, a.gfp, b.comm, b.gfp),
            ("", None, "", Some(0x208_0020))
        );
        let Some(HeaderMatch::Header(h)) =
            header("swapper/0: page allocation failure: order:0, mode:0x0(), nodemask=(null)")
        else {
            panic!()
        };
        assert_eq!((h.gfp, h.names), (Some(0), None));
        assert_eq!(lone_comm("swapper/3: "), Some("swapper/3"));
        assert_eq!(lone_comm("Mem-Info:"), None);
        assert_eq!(lone_comm("Call Trace:"), None);
        assert_eq!(
            kernel_continuation("WC O    4.12.0-rc3-android-x86+ #1"),
            Some("4.12.0-rc3-android-x86+")
        );
        assert_eq!(kernel_continuation("ONDA.D890HBBNR0A 03/11/2015"), None);
    }

    #[test]
    fn suppressed_lines() {
        assert_eq!(
            suppressed("warn_alloc: 11955 callbacks suppressed"),
            Some(11955)
        );
        assert_eq!(
            suppressed("warn_alloc_failed: 7 callbacks suppressed"),
            Some(7)
        );
        assert_eq!(
            suppressed("__alloc_pages_slowpath: 5571 callbacks suppressed"),
            Some(5571)
        );
        assert_eq!(suppressed("net_ratelimit: 7 callbacks suppressed"), None);
        assert_eq!(suppressed("__ratelimit: 7 callbacks suppressed"), None);
        assert_eq!(suppressed("warn_alloc: x callbacks suppressed"), None);
    }
}
