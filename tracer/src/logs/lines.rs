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
    pub comm: &'a str,
    pub order: u32,
    pub gfp: u64,
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

/// Recognize a report's first line.
#[must_use]
pub fn header(body: &str) -> Option<HeaderMatch<'_>> {
    let at = body.find(FAILURE)?;
    let comm = body[..at].trim().trim_end_matches(':').trim_end();
    let rest = &body[at + FAILURE.len()..];
    // 2.6 prints `failure. order:`, later kernels `failure: order:`.
    let rest = match rest.strip_prefix(['.', ':']) {
        Some(r) => r.trim_start(),
        None => return Some(HeaderMatch::Unknown),
    };
    let Some(order) = rest
        .strip_prefix("order:")
        .and_then(|r| leading_u64(r).0)
        .and_then(|o| u32::try_from(o).ok())
        .filter(|o| *o < 64)
    else {
        return Some(HeaderMatch::Unknown);
    };
    let Some(mode_at) = rest.find("mode:0x") else {
        return Some(HeaderMatch::Unknown);
    };
    let mode = &rest[mode_at + "mode:0x".len()..];
    let hex_len = mode.bytes().take_while(u8::is_ascii_hexdigit).count();
    let Ok(gfp) = u64::from_str_radix(&mode[..hex_len], 16) else {
        return Some(HeaderMatch::Unknown);
    };
    let names = mode[hex_len..]
        .strip_prefix('(')
        .and_then(|r| r.find(')').map(|end| &r[..end]))
        .filter(|n| !n.is_empty());
    if comm.is_empty() {
        return Some(HeaderMatch::Unknown);
    }
    Some(HeaderMatch::Header(Header {
        comm,
        order,
        gfp,
        names,
    }))
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

/// One frame of a call trace, borrowed from the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLine<'a> {
    pub function: &'a str,
    /// `+0x61/0xc0`, when printed.
    pub offset: Option<&'a str>,
    pub module: Option<&'a str>,
    /// `false` for `?` frames (found on the stack, not proven on the call chain).
    pub reliable: bool,
}

/// A line inside a call trace: markers, possibly followed by a frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceLine<'a> {
    /// Markers seen on the line, in order (the last one sets the section).
    pub markers: Vec<Section>,
    pub frame: Option<FrameLine<'a>>,
}

/// Recognize a call-trace line: ` func+0x1/0x2 [mod]`, ` ? func+0x1/0x2`,
/// ` [<ffffffff81112345>] ? func+0x1/0x2`, ` <IRQ>  [<...>] func+...`,
/// ARM's `[<c00a1234>] (func+0x1/0x2) from [<...>] (caller+...)`.
#[must_use]
pub fn trace_line(body: &str) -> Option<TraceLine<'_>> {
    let mut t = body.trim();
    let mut out = TraceLine::default();
    while t.starts_with('<') {
        let end = t.find('>')?;
        let marker = match &t[1..end] {
            "IRQ" => Section::Irq,
            "SOFTIRQ" => Section::Softirq,
            "NMI" | "#DF" | "#MC" | "DB" => Section::Nmi,
            "TASK" | "EOI" | "/IRQ" | "/SOFTIRQ" | "/NMI" | "/TASK" | "/#DF" | "/#MC" | "/DB" => {
                Section::Task
            }
            _ => return None,
        };
        out.markers.push(marker);
        t = t[end + 1..].trim_start();
    }
    if t.is_empty() {
        return (!out.markers.is_empty()).then_some(out);
    }
    // `[<ffffffff81112345>]` return address of older kernels.
    if let Some(r) = t.strip_prefix("[<") {
        let end = r.find(">]")?;
        if !r[..end].bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        t = r[end + 2..].trim_start();
        // ARM: `(func+0x1/0x2) from [<...>] (caller)`: the first is the frame.
        if let Some(r) = t.strip_prefix('(') {
            let end = r.find(')')?;
            let (function, offset) = split_offset(&r[..end]);
            if !is_symbol(function) {
                return None;
            }
            out.frame = Some(FrameLine {
                function,
                offset,
                module: None,
                reliable: true,
            });
            return Some(out);
        }
    }
    let mut reliable = true;
    if let Some(r) = t.strip_prefix("? ") {
        reliable = false;
        t = r.trim_start();
    }
    let (sym, module) = match t.split_once(' ') {
        Some((sym, rest)) => {
            let rest = rest.trim();
            let module = rest
                .strip_prefix('[')
                .and_then(|m| m.split_once(']'))
                .map(|(m, _)| m.trim());
            (sym, module.filter(|m| !m.is_empty()))
        }
        None => (t, None),
    };
    let (function, offset) = split_offset(sym);
    // A frame must carry an offset (`%pS`), or it is some other text.
    if offset.is_none() || !is_symbol(function) {
        return None;
    }
    out.frame = Some(FrameLine {
        function,
        offset,
        module,
        reliable,
    });
    Some(out)
}

fn split_offset(sym: &str) -> (&str, Option<&str>) {
    match sym.find("+0x") {
        Some(at) => (&sym[..at], Some(&sym[at..])),
        None => (sym, None),
    }
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'))
}

/// `warn_alloc: 11955 callbacks suppressed` (4.9+), `warn_alloc_failed: N
/// callbacks suppressed` (3.1 to 4.8). 2.6 kernels rate-limited the report
/// with the printk-wide limit, whose `__ratelimit: N callbacks suppressed`
/// counts every `printk_ratelimit()` user, so it is not taken as failures.
#[must_use]
pub fn suppressed(body: &str) -> Option<u64> {
    let t = body.trim();
    let (func, rest) = t.split_once(": ")?;
    if !matches!(func, "warn_alloc" | "warn_alloc_failed") {
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
    fn headers_of_every_era() {
        let h = header(
            "nettool: page allocation failure: order:1, mode:0xb20(GFP_ATOMIC|__GFP_ZERO), nodemask=(null),cpuset=/,mems_allowed=0",
        );
        assert_eq!(
            h,
            Some(HeaderMatch::Header(Header {
                comm: "nettool",
                order: 1,
                gfp: 0xb20,
                names: Some("GFP_ATOMIC|__GFP_ZERO"),
            }))
        );
        let h = header("swapper: page allocation failure. order:1, mode:0x20");
        assert_eq!(
            h,
            Some(HeaderMatch::Header(Header {
                comm: "swapper",
                order: 1,
                gfp: 0x20,
                names: None,
            }))
        );
        let h =
            header("kworker/0:1H: page allocation failure: order:4, mode:0x2080020(GFP_ATOMIC)");
        let Some(HeaderMatch::Header(h)) = h else {
            panic!("{h:?}")
        };
        assert_eq!((h.comm, h.order, h.gfp), ("kworker/0:1H", 4, 0x208_0020));
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
    fn trace_lines() {
        let l = trace_line(" dump_stack_lvl+0x44/0x5c").unwrap();
        let f = l.frame.unwrap();
        assert_eq!(
            (f.function, f.offset, f.reliable),
            ("dump_stack_lvl", Some("+0x44/0x5c"), true)
        );
        let f = trace_line(" ? __inet_dev_addr_type+0xe8/0x180")
            .unwrap()
            .frame
            .unwrap();
        assert_eq!((f.function, f.reliable), ("__inet_dev_addr_type", false));
        let f = trace_line(" bond_start_xmit+0x1b5/0x4a0 [bonding]")
            .unwrap()
            .frame
            .unwrap();
        assert_eq!((f.function, f.module), ("bond_start_xmit", Some("bonding")));
        let l = trace_line(" <IRQ>  [<ffffffff81112345>] ? __alloc_pages_nodemask+0x6e5/0x8f0")
            .unwrap();
        assert_eq!(l.markers, vec![Section::Irq]);
        let f = l.frame.unwrap();
        assert_eq!((f.function, f.reliable), ("__alloc_pages_nodemask", false));
        let f = trace_line(" [<ffffffffa01a2b3c>] xennet_poll+0x6f6/0xcf0 [xen_netfront]")
            .unwrap()
            .frame
            .unwrap();
        assert_eq!(
            (f.function, f.module, f.reliable),
            ("xennet_poll", Some("xen_netfront"), true)
        );
        let l = trace_line(" </TASK>").unwrap();
        assert_eq!((l.markers, l.frame), (vec![Section::Task], None));
        let f = trace_line("[<c00a1234>] (warn_alloc+0x10/0x20) from [<c00a5678>] (x+0x1/0x2)")
            .unwrap()
            .frame
            .unwrap();
        assert_eq!(f.function, "warn_alloc");
        assert_eq!(trace_line("RIP: 0033:0x43d110"), None);
        assert_eq!(trace_line("Mem-Info:"), None);
        assert_eq!(trace_line("<html>"), None);
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
        assert_eq!(suppressed("net_ratelimit: 7 callbacks suppressed"), None);
        assert_eq!(suppressed("__ratelimit: 7 callbacks suppressed"), None);
        assert_eq!(suppressed("warn_alloc: x callbacks suppressed"), None);
    }
}
