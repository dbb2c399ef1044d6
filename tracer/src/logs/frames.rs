//! Call-trace lines of every architecture, in one place. Each form names
//! the frame it prints first (the innermost of the pair, for ARM's
//! `from` lines):
//!
//! | form | printed by |
//! |---|---|
//! | ` func+0x1/0x2 [mod]`, ` ? func+0x1/0x2` | x86 4.x+, arm64 5.x+, riscv |
//! | `[<ffffffff81112345>] ? func+0x1/0x2 [mod]` | x86 2.6 to 4.x, mips, csky, arm64 4.x |
//! | `[c000000ffffcb4f0] [c00000000099966c] func+0x1/0x2 (unreliable)` | powerpc |
//! | `[<c00137c4>] (func+0x0/0xe0) from [<c008d9e0>] (caller+0xf8/0x124)` | arm32 2.6 to 3.x |
//! | `[<c000f780>] (func) from [<c000d20c>] (caller+0x10/0x14)` | arm32 3.x to 5.x |
//! | ` func from caller+0x18/0x1c`, ` func [mod] from caller+0x1/0x2 [mod]` | arm32 5.x+ |
//! | ` <IRQ>`, ` </IRQ>`, ` <TASK>`, `<EOI>` markers, alone or before a frame | x86 |
//!
//! Lines with an address but no symbol (`[<8006ab2c>] 0x8006ab2c`, mips
//! without kallsyms) and register or stack dumps are not frames. The
//! functions that tell an interrupt or softirq apart on each architecture
//! are in [`crate::classify::context`].

use super::lines::Section;

/// One frame of a call trace, borrowed from the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLine<'a> {
    pub function: &'a str,
    /// `+0x61/0xc0`, when printed.
    pub offset: Option<&'a str>,
    pub module: Option<&'a str>,
    /// `false` for `?` frames and powerpc's `(unreliable)`: found on the
    /// stack, not proven on the call chain.
    pub reliable: bool,
}

/// A line inside a call trace: markers, possibly followed by a frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceLine<'a> {
    /// Markers seen on the line, in order (the last one sets the section).
    pub markers: Vec<Section>,
    pub frame: Option<FrameLine<'a>>,
    /// ARM's `from` forms name the caller too: the next line's frame, or,
    /// on the last line, the outermost frame printed.
    pub caller: Option<FrameLine<'a>>,
}

/// Recognize a call-trace line of any architecture (see the module table).
#[must_use]
pub fn trace_line(body: &str) -> Option<TraceLine<'_>> {
    let mut t = body.trim();
    // Some vendor kernels print `[stamp]: func+0x1/0x2`.
    if let Some(r) = t.strip_prefix(": ") {
        t = r.trim_start();
    }
    let mut out = TraceLine::default();
    while t.starts_with('<') {
        let end = t.find('>')?;
        out.markers.push(marker(&t[1..end])?);
        t = t[end + 1..].trim_start();
    }
    if t.is_empty() {
        return (!out.markers.is_empty()).then_some(out);
    }
    if let Some(r) = t.strip_prefix("[<") {
        // `[<ffffffff81112345>]` return address (x86 before 4.x, mips, arm).
        let end = r.find(">]")?;
        if !is_hex(&r[..end]) {
            return None;
        }
        t = r[end + 2..].trim_start();
        if let Some(r) = t.strip_prefix('(') {
            let (frame, caller) = arm_paren(r)?;
            out.frame = Some(frame);
            out.caller = caller;
            return Some(out);
        }
    } else if t.starts_with('[') {
        // powerpc: `[stack pointer] [return address] func+off`.
        t = ppc_addresses(t)?;
    }
    let mut reliable = true;
    if let Some(r) = t.strip_prefix("? ") {
        reliable = false;
        t = r.trim_start();
    }
    if let Some(r) = t.strip_suffix("(unreliable)") {
        reliable = false;
        t = r.trim_end();
    }
    // arm32 5.x+: `func [mod] from caller+off [mod]`: the frame is `func`.
    if let Some(at) = t.find(" from ") {
        let before = &t[..at];
        let caller = t[at + 6..].split(' ').next().unwrap_or_default();
        let (sym, module) = symbol_and_module(before);
        // Exactly `func` or `func [mod]` before, `caller+0x1/0x2` after.
        let tokens = before.split_whitespace().count();
        let (caller_fn, caller_off) = split_offset(caller);
        if tokens != 1 + usize::from(module.is_some())
            || caller_off.is_none()
            || !is_symbol(caller_fn)
        {
            return None;
        }
        let (function, offset) = split_offset(sym);
        if !is_symbol(function) {
            return None;
        }
        out.frame = Some(FrameLine {
            function,
            offset,
            module,
            reliable,
        });
        let (_, caller_module) = symbol_and_module(&t[at + 6..]);
        out.caller = Some(FrameLine {
            function: caller_fn,
            offset: caller_off,
            module: caller_module,
            reliable,
        });
        return Some(out);
    }
    let (mut sym, mut module) = symbol_and_module(t);
    let after_sym = t.split_once(' ').map_or("", |(_, rest)| rest.trim_start());
    // x86_64 2.6.1x: `:ip_conntrack:alloc_hashtable+0x33/0x7a`, the module first.
    if let Some((m, rest)) = sym.strip_prefix(':').and_then(|r| r.split_once(':'))
        && is_symbol(m)
        && module.is_none()
    {
        module = Some(m);
        sym = rest;
    }
    let (function, offset) = split_offset(sym);
    // Without `from`, a frame must carry an offset (`%pS`) or a source
    // position (a trace decoded by `decode_stacktrace.sh` or a syzbot report:
    // `func (mm/x.c:12)`, `func mm/x.c:12 [inline]`), or it is some other text.
    if (offset.is_none() && !source_position(after_sym)) || !is_symbol(function) {
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

fn marker(name: &str) -> Option<Section> {
    Some(match name {
        "IRQ" => Section::Irq,
        "SOFTIRQ" => Section::Softirq,
        "NMI" | "#DF" | "#MC" | "DB" => Section::Nmi,
        "TASK" | "EOI" | "/IRQ" | "/SOFTIRQ" | "/NMI" | "/TASK" | "/#DF" | "/#MC" | "/DB" => {
            Section::Task
        }
        _ => return None,
    })
}

/// arm32 `(func+off [mod]) from [<...>] (caller+off)`: the frame and its caller.
fn arm_paren(r: &str) -> Option<(FrameLine<'_>, Option<FrameLine<'_>>)> {
    let end = r.find(')')?;
    let (sym, module) = symbol_and_module(&r[..end]);
    let (function, offset) = split_offset(sym);
    // Without ` from`, an offset is required (`(null)` and the like are not frames).
    let from = r[end + 1..].trim_start().strip_prefix("from ");
    if !is_symbol(function) || (offset.is_none() && from.is_none()) {
        return None;
    }
    let caller = from.and_then(|f| {
        let f = f.trim_start();
        let f = f
            .strip_prefix("[<")
            .map_or(f, |x| x.split_once(">]").map_or(x, |(_, y)| y));
        let inner = f.trim_start().strip_prefix('(')?;
        let (sym, module) = symbol_and_module(&inner[..inner.find(')')?]);
        let (function, offset) = split_offset(sym);
        is_symbol(function).then_some(FrameLine {
            function,
            offset,
            module,
            reliable: true,
        })
    });
    let frame = FrameLine {
        function,
        offset,
        module,
        reliable: true,
    };
    Some((frame, caller))
}

/// powerpc: skip `[c000000ffffcb4f0] [c00000000099966c] ` (both hex).
fn ppc_addresses(t: &str) -> Option<&str> {
    let mut rest = t;
    for _ in 0..2 {
        let r = rest.strip_prefix('[')?;
        let end = r.find(']')?;
        if !is_hex(&r[..end]) {
            return None;
        }
        rest = r[end + 1..].trim_start();
    }
    Some(rest)
}

/// `func+0x1/0x2 [mod]` -> (`func+0x1/0x2`, `mod`).
fn symbol_and_module(t: &str) -> (&str, Option<&str>) {
    match t.trim().split_once(' ') {
        Some((sym, rest)) => {
            let module = rest
                .trim()
                .strip_prefix('[')
                .and_then(|m| m.split_once(']'))
                .map(|(m, _)| m.trim())
                .filter(|m| !m.is_empty());
            (sym, module)
        }
        None => (t.trim(), None),
    }
}

/// Whether `s` starts with a source position: `mm/page_alloc.c:3391`, in
/// parentheses or not.
fn source_position(s: &str) -> bool {
    let s = s.strip_prefix('(').unwrap_or(s);
    let word = s.split([' ', ')']).next().unwrap_or_default();
    let Some((file, line)) = word.rsplit_once(':') else {
        return false;
    };
    !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && [".c", ".h", ".S", ".rs"].iter().any(|e| file.ends_with(e))
}

/// `func+0x1/0x2` -> (`func`, `+0x1/0x2`). ppc64's big-endian ABI prints
/// the text symbol of a function with a dot (`.net_rx_action`): the dot goes.
fn split_offset(sym: &str) -> (&str, Option<&str>) {
    let (name, offset) = match sym.find("+0x") {
        Some(at) => (&sym[..at], Some(&sym[at..])),
        None => (sym, None),
    };
    let name = name
        .strip_prefix('.')
        .filter(|n| n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .unwrap_or(name);
    (name, offset)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with("0x")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(line: &str) -> FrameLine<'_> {
        trace_line(line)
            .and_then(|l| l.frame)
            .unwrap_or_else(|| panic!("no frame in {line:?}"))
    }

    #[test]
    fn x86_forms() {
        let f = frame(" dump_stack_lvl+0x44/0x5c");
        assert_eq!(
            (f.function, f.offset, f.reliable),
            ("dump_stack_lvl", Some("+0x44/0x5c"), true)
        );
        let f = frame(" ? __inet_dev_addr_type+0xe8/0x180");
        assert_eq!((f.function, f.reliable), ("__inet_dev_addr_type", false));
        let f = frame(" bond_start_xmit+0x1b5/0x4a0 [bonding]");
        assert_eq!((f.function, f.module), ("bond_start_xmit", Some("bonding")));
        let l = trace_line(" <IRQ>  [<ffffffff81112345>] ? __alloc_pages_nodemask+0x6e5/0x8f0")
            .unwrap();
        assert_eq!(l.markers, vec![Section::Irq]);
        let f = l.frame.unwrap();
        assert_eq!((f.function, f.reliable), ("__alloc_pages_nodemask", false));
        let f = frame(" [<ffffffffa01a2b3c>] xennet_poll+0x6f6/0xcf0 [xen_netfront]");
        assert_eq!(
            (f.function, f.module, f.reliable),
            ("xennet_poll", Some("xen_netfront"), true)
        );
        let l = trace_line(" </TASK>").unwrap();
        assert_eq!((l.markers, l.frame), (vec![Section::Task], None));
        assert_eq!(trace_line("RIP: 0033:0x43d110"), None);
        assert_eq!(trace_line("Mem-Info:"), None);
        assert_eq!(trace_line("<html>"), None);
        assert_eq!(
            trace_line(" ffff8f7a177c3bb0 ffffffffab31c193 ffffffffab7c19e0 0000000000000000"),
            None
        );
    }

    /// Lines of real traces (tests/fixtures/logs/corpus) of each architecture.
    #[test]
    fn decoded_traces_and_colon_stamps() {
        let f = frame("dump_stack_lvl (lib/dump_stack.c:107) ");
        assert_eq!((f.function, f.offset), ("dump_stack_lvl", None));
        let f =
            frame("? get_page_from_freelist (include/linux/mmzone.h:1651 mm/page_alloc.c:3187) ");
        assert_eq!((f.function, f.reliable), ("get_page_from_freelist", false));
        let f = frame(" __dump_stack lib/dump_stack.c:88 [inline]");
        assert_eq!(f.function, "__dump_stack");
        let f = frame(" dump_stack_lvl+0x1b1/0x28f lib/dump_stack.c:106");
        assert_eq!(f.function, "dump_stack_lvl");
        let f = frame(": hid_add_field+0x13c/0x308");
        assert_eq!(f.function, "hid_add_field");
        // Prose with parentheses is no frame.
        assert_eq!(trace_line("memory (see above)"), None);
        assert_eq!(trace_line("hello (world:12)"), None);
    }

    #[test]
    fn ppc64_dot_symbols_and_old_module_prefixes() {
        let f = frame("[c0000000fffe3b70] [c0000000004a8ad4] .net_rx_action+0x1a4/0x300");
        assert_eq!(
            (f.function, f.offset),
            ("net_rx_action", Some("+0x1a4/0x300"))
        );
        let f = frame(" [<ffffffff8804b10e>] :ip_conntrack:alloc_hashtable+0x33/0x7a");
        assert_eq!(
            (f.function, f.module, f.offset),
            ("alloc_hashtable", Some("ip_conntrack"), Some("+0x33/0x7a"))
        );
    }

    #[test]
    fn powerpc() {
        let f = frame("[c000000ffffcb4f0] [c00000000099966c] dump_stack+0xb0/0xf4 (unreliable)");
        assert_eq!((f.function, f.reliable), ("dump_stack", false));
        let f =
            frame("[c000000ffffcb870] [d00000000e4923d4] send_srp_login+0x854/0x910 [ibmvscsi]");
        assert_eq!(
            (f.function, f.module, f.reliable),
            ("send_srp_login", Some("ibmvscsi"), true)
        );
    }

    #[test]
    fn mips_csky_and_arm64_with_addresses() {
        let f = frame("[<80001524>] ret_from_irq+0x0/0x4");
        assert_eq!(f.function, "ret_from_irq");
        let f = frame("[<c01387d8>] cleanup_module+0x1e60/0x3200 [et]");
        assert_eq!((f.function, f.module), ("cleanup_module", Some("et")));
        let f = frame("[<8004a246>] csky_systemcall+0x96/0xe0");
        assert_eq!(f.function, "csky_systemcall");
        let f = frame("[<ffffff9bc0a8a108>] dump_backtrace+0x0/0x258");
        assert_eq!(f.function, "dump_backtrace");
        // mips without kallsyms: an address, no symbol.
        assert_eq!(
            trace_line("[<8006ab2c>] 0x8006ab2c").and_then(|l| l.frame),
            None
        );
        // A mips stack dump line.
        assert_eq!(trace_line("Stack : 00000000 00000000 01080020"), None);
    }

    #[test]
    fn arm32_every_era() {
        let f = frame(
            "[<c00137c4>] (unwind_backtrace+0x0/0xe0) from [<c008d9e0>] (warn_alloc_failed+0xf8/0x124)",
        );
        assert_eq!(
            (f.function, f.offset),
            ("unwind_backtrace", Some("+0x0/0xe0"))
        );
        let f = frame("[<c000f780>] (unwind_backtrace) from [<c000d20c>] (show_stack+0x10/0x14)");
        assert_eq!((f.function, f.offset), ("unwind_backtrace", None));
        let f = frame(
            "[<bf17c574>] (_rtl_rx_completed [rtl_usb]) from [<c03f08c8>] (__usb_hcd_giveback_urb+0x70/0x108)",
        );
        assert_eq!(
            (f.function, f.module),
            ("_rtl_rx_completed", Some("rtl_usb"))
        );
        let f = frame(" unwind_backtrace from show_stack+0x18/0x1c");
        assert_eq!(
            (f.function, f.offset, f.reliable),
            ("unwind_backtrace", None, true)
        );
        let l = trace_line(" bcmgenet_rx_poll from __napi_poll.constprop.0+0x34/0x1").unwrap();
        assert_eq!(l.frame.unwrap().function, "bcmgenet_rx_poll");
        assert_eq!(l.caller.unwrap().function, "__napi_poll.constprop.0");
        let l = trace_line("[<c002196c>] (__do_softirq) from [<c0021d6c>] (irq_exit+0xc4/0x10c)")
            .unwrap();
        assert_eq!(l.caller.unwrap().function, "irq_exit");
        let f = frame(" mt76_dma_rx_poll [mt76] from mt76_poll+0x1/0x2 [mt76]");
        assert_eq!((f.function, f.module), ("mt76_dma_rx_poll", Some("mt76")));
        // Register and exception-stack lines.
        assert_eq!(trace_line(" r6:c0da0000 r5:00000000 r4:00000020"), None);
        assert_eq!(
            trace_line("Exception stack(0xc7acbcc0 to 0xc7acbd08)"),
            None
        );
        assert_eq!(
            trace_line("bcc0: c7acbd1c c7829960 c7acbd28 00000000 00000001 c7b53980"),
            None
        );
        // Words that merely contain " from ".
        assert_eq!(trace_line("usb 1-1: reset from hub"), None);
    }
}
