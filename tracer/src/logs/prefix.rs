//! Line prefixes of the log shapes: what comes before the kernel's own text.
//!
//! - `dmesg`: `[   17.187715] text`, optionally `<4>` before (`dmesg -r`),
//!   a caller id after (`[  T177]`, `CONFIG_PRINTK_CALLER`), or a
//!   `kern  :warn  : ` facility/level prefix (`dmesg -x`);
//! - `dmesg -T`: `[Sun Nov 22 03:00:00 2026] text`;
//! - syslog files and `journalctl -k` (short, short-precise):
//!   `Nov 22 03:00:00[.123456] host kernel: [   17.187715] text`;
//! - `journalctl -o short-iso[-precise]` and rsyslog's RFC 3339 stamps:
//!   `2026-11-22T03:00:00[.123456]+0000 host kernel: text`.
//!
//! Times without a zone (syslog, short, `-T`) are taken as UTC and syslog's
//! missing year is supplied by the caller.

/// A log line split into its stamps and the kernel's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Split<'a> {
    /// Seconds since boot (`[   17.187715]`).
    pub mono: Option<f64>,
    /// Wall-clock time, microseconds since the Unix epoch.
    pub wall_us: Option<i64>,
    /// Host name from a syslog/journal prefix.
    pub host: Option<&'a str>,
    /// The wall-clock year was not in the line (syslog, journal `short`).
    pub year_supplied: bool,
    /// printk caller id (`T177` task, `C1` CPU) with `CONFIG_PRINTK_CALLER`.
    pub caller: Option<&'a str>,
    /// The kernel's text; leading spaces kept (they mark continuation lines).
    pub body: &'a str,
}

/// What a line is.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// A kernel message.
    Kernel(Split<'a>),
    /// A syslog/journal line of another program, or a journal banner
    /// (`-- Boot ... --`): not kernel text, ignore it.
    Other,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Split one line. `year` is used for syslog stamps, which have none.
#[must_use]
pub fn split(line: &str, year: i32) -> Line<'_> {
    let mut rest = trim_line_end(line);
    let mut wall_us = None;
    let mut host = None;
    let mut year_supplied = false;

    if rest.starts_with("-- ") {
        return Line::Other;
    }
    // Pasted text: mail quoting (`> `) and forum or code-block indentation
    // before the log's own prefix. Only removed when a prefix follows, so
    // that the leading spaces of the kernel's continuation lines survive.
    if let Some(r) = strip_paste_prefix(rest) {
        rest = r;
    }
    let stamp = iso_stamp(rest)
        .or_else(|| {
            let bsd = bsd_stamp(rest, year);
            year_supplied = bsd.is_some();
            bsd
        })
        .or_else(|| logread_stamp(rest));
    if let Some((t, after)) = stamp {
        wall_us = Some(t);
        match after_stamp(after) {
            Some((h, text)) => {
                host = h;
                rest = text;
            }
            None => return Line::Other,
        }
    } else if let Some((h, text)) = bare_kernel_tag(rest) {
        // `kernel: text` or `host kernel: text`: a syslog line whose stamp
        // was cut off (grep output, a knowledge-base article).
        host = h;
        rest = text;
    }
    // `dmesg -r` priority, `<4>`.
    if rest.as_bytes().first() == Some(&b'<')
        && let Some(end) = find_within(rest, b'>', 6)
        && end > 1
        && rest[1..end].bytes().all(|b| b.is_ascii_digit())
    {
        rest = &rest[end + 1..];
    }
    rest = strip_facility_level(rest);
    let mut mono = None;
    let mut caller = None;
    if rest.as_bytes().first() == Some(&b'[') {
        if let Some((secs, after)) = mono_stamp(rest) {
            mono = Some(secs);
            rest = after;
        } else if let Some((t, after)) = human_stamp(rest) {
            wall_us = wall_us.or(Some(t));
            rest = after;
        }
        (caller, rest) = strip_caller_id(rest);
        rest = rest.strip_prefix(' ').unwrap_or(rest);
        // `journalctl -o short-monotonic`: `[  21161.092614] host kernel: text`,
        // the host left out by `--no-hostname` or a paste.
        if let Some((h, text)) = bare_kernel_tag(rest) {
            host = host.or(h);
            rest = text;
        }
    }
    Line::Kernel(Split {
        mono,
        wall_us,
        host,
        year_supplied,
        caller,
        body: rest,
    })
}

/// The end of a line without its newline, carriage return (also pasted as a
/// literal `^M`), trailing blanks and a syslog `[kern.warning]` level suffix.
fn trim_line_end(line: &str) -> &str {
    let mut s = line.trim_end_matches(['\r', '\n']);
    loop {
        let t = s.trim_end_matches([' ', '\t', '\r']);
        let t = t.strip_suffix("^M").unwrap_or(t);
        let t = match t.rfind(" [kern.") {
            Some(at)
                if t.ends_with(']')
                    && t[at + 7..t.len() - 1]
                        .bytes()
                        .all(|b| b.is_ascii_lowercase()) =>
            {
                &t[..at]
            }
            _ => t,
        };
        if t.len() == s.len() {
            return s;
        }
        s = t;
    }
}

/// Mail quoting (`> `, `>> `, `> > `) and indentation before a log prefix;
/// `None` when no known prefix follows them.
fn strip_paste_prefix(s: &str) -> Option<&str> {
    let mut t = s;
    let mut quoted = false;
    loop {
        let u = t.trim_start_matches([' ', '\t']);
        // `>` starts a quote level (a `<4>` priority starts with `<`).
        if let Some(r) = u.strip_prefix('>') {
            quoted = true;
            t = r;
        } else {
            t = u;
            break;
        }
    }
    if t.len() == s.len() {
        return None;
    }
    if quoted {
        // A quoted line is pasted text, whatever follows.
        return Some(t.strip_prefix(' ').unwrap_or(t));
    }
    // Indentation alone: only before a prefix this module knows.
    let b = t.as_bytes();
    let known = matches!(b.first(), Some(b'[' | b'<'))
        || t.starts_with("kernel:")
        || b.first().is_some_and(u8::is_ascii_digit) && b.get(4) == Some(&b'-')
        || b.len() > 4 && b[3] == b' ' && month_index(&t[..3]).is_some()
        || b.len() > 4 && b[3] == b' ' && weekday(&t[..3])
        || bare_kernel_tag(t).is_some();
    known.then_some(t)
}

/// After a wall-clock stamp: `host kernel: text`, `kernel: text`, with a
/// facility.level tag between (`kern.warn kernel:` of `OpenWrt`'s `logread`
/// and busybox syslogd, `[kern.warning]`). `None`: another program's line.
fn after_stamp(after: &str) -> Option<(Option<&str>, &str)> {
    let mut rest = after.trim_start_matches(' ');
    let mut host = None;
    for _ in 0..3 {
        if let Some(text) = rest.strip_prefix("kernel:") {
            return Some((host, text.strip_prefix(' ').unwrap_or(text)));
        }
        let (tok, tail) = rest.split_once(' ')?;
        // Another program's tag (`sshd[12]:`) ends the search.
        if tok.ends_with(':') {
            return None;
        }
        if !is_level_tag(tok) && host.is_none() {
            host = Some(tok);
        }
        rest = tail.trim_start_matches(' ');
    }
    None
}

/// `kern.warn`, `kern.warning`, `[kern.warning]`, `<4>`: syslog facility
/// and level tags some daemons write before the program name.
fn is_level_tag(tok: &str) -> bool {
    let t = tok.trim_start_matches('[').trim_end_matches(']');
    if let Some(r) = t.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        return !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit());
    }
    t.split_once('.').is_some_and(|(f, l)| {
        !f.is_empty()
            && !l.is_empty()
            && f.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && l.bytes().all(|b| b.is_ascii_lowercase())
    })
}

/// `kernel: text` or `host kernel: text` at the start of a line without a
/// stamp. The host must look like one (no `:`, no brackets), so that kernel
/// text mentioning "kernel:" is left alone.
fn bare_kernel_tag(s: &str) -> Option<(Option<&str>, &str)> {
    if let Some(text) = s.strip_prefix("kernel: ") {
        return Some((None, text));
    }
    let (h, tail) = s.split_once(' ')?;
    let text = tail.strip_prefix("kernel: ")?;
    let host_like = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'<' | b'>'))
        && !h.bytes().all(|b| b.is_ascii_digit());
    host_like.then_some((Some(h), text))
}

/// `OpenWrt` `logread`: `Sat Oct  1 03:31:30 2016 ` (the year after the time).
fn logread_stamp(s: &str) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if b.len() < 25 || b[3] != b' ' || !weekday(&s[..3]) {
        return None;
    }
    let rest = &s[4..];
    let month = month_index(rest.get(..3)?)?;
    let rest = rest[3..].trim_start_matches(' ');
    let (day, rest) = rest.split_once(' ')?;
    let day: u32 = day.parse().ok()?;
    let (time, rest) = rest.split_once(' ')?;
    let (h, mi, sec, micros) = clock(time)?;
    let (year, rest) = rest.split_once(' ')?;
    let year: i32 = year.parse().ok()?;
    Some((epoch_us(year, month, day, h, mi, sec, micros)?, rest))
}

fn weekday(s: &str) -> bool {
    matches!(s, "Mon" | "Tue" | "Wed" | "Thu" | "Fri" | "Sat" | "Sun")
}

/// `kern  :warn  : ` of `dmesg -x`.
fn strip_facility_level(s: &str) -> &str {
    const FACILITIES: [&str; 4] = ["kern", "user", "daemon", "syslog"];
    for f in FACILITIES {
        if let Some(r) = s.strip_prefix(f) {
            let r = r.trim_start_matches(' ');
            if let Some(r) = r.strip_prefix(':') {
                let level_end = r.find(':').unwrap_or(0);
                if level_end > 0
                    && level_end <= 8
                    && r[..level_end]
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b' ')
                {
                    let r = &r[level_end + 1..];
                    return r.strip_prefix(' ').unwrap_or(r);
                }
            }
        }
    }
    s
}

/// `[   17.187715]` -> seconds and the rest after `]`.
fn mono_stamp(s: &str) -> Option<(f64, &str)> {
    let end = find_within(s, b']', 24)?;
    let inner = s[1..end].trim_start_matches(' ');
    let (whole, frac) = inner.split_once('.')?;
    if whole.is_empty()
        || frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: f64 = inner.parse().ok()?;
    Some((secs, &s[end + 1..]))
}

/// `[  T177]` / `[    C1]` printk caller ids.
fn strip_caller_id(s: &str) -> (Option<&str>, &str) {
    if s.as_bytes().first() == Some(&b'[')
        && let Some(end) = find_within(s, b']', 16)
    {
        let inner = s[1..end].trim_start_matches(' ');
        let mut b = inner.bytes();
        if matches!(b.next(), Some(b'T' | b'C')) && inner.len() > 1 && b.all(|c| c.is_ascii_digit())
        {
            return (Some(inner), &s[end + 1..]);
        }
    }
    (None, s)
}

/// `[Sun Nov 22 03:00:00 2026]` of `dmesg -T`.
fn human_stamp(s: &str) -> Option<(i64, &str)> {
    let end = find_within(s, b']', 40)?;
    let mut it = s[1..end].split_ascii_whitespace();
    let _weekday = it.next()?;
    let month = month_index(it.next()?)?;
    let day: u32 = it.next()?.parse().ok()?;
    let (h, mi, sec, micros) = clock(it.next()?)?;
    let year: i32 = it.next()?.parse().ok()?;
    let t = epoch_us(year, month, day, h, mi, sec, micros)?;
    Some((t, &s[end + 1..]))
}

/// `Nov 22 03:00:00[.123456] ` (syslog, journalctl short and short-precise).
fn bsd_stamp(s: &str, year: i32) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if b.len() < 16 || b[3] != b' ' {
        return None;
    }
    let month = month_index(&s[..3])?;
    let rest = s[4..].trim_start_matches(' ');
    let (day, rest) = rest.split_once(' ')?;
    let day: u32 = day.parse().ok()?;
    let (time, rest) = rest.split_once(' ')?;
    let (h, mi, sec, micros) = clock(time)?;
    Some((epoch_us(year, month, day, h, mi, sec, micros)?, rest))
}

/// `2026-11-22T03:00:00[.123456][Z|+0000|+00:00] `.
fn iso_stamp(s: &str) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let year: i32 = s[..4].parse().ok()?;
    let month: u32 = s[5..7].parse().ok()?;
    let day: u32 = s[8..10].parse().ok()?;
    let (stamp, rest) = s[11..].split_once(' ')?;
    let zone_at = stamp.find(['Z', '+', '-']).unwrap_or(stamp.len());
    let (time, zone) = stamp.split_at(zone_at);
    let (h, mi, sec, micros) = clock(time)?;
    let offset_secs: i64 = match zone.as_bytes().first() {
        None | Some(b'Z') => 0,
        Some(sign) => {
            let digits: String = zone[1..].chars().filter(char::is_ascii_digit).collect();
            if digits.len() != 4 {
                return None;
            }
            let hh: i64 = digits[..2].parse().ok()?;
            let mm: i64 = digits[2..].parse().ok()?;
            let v = hh * 3600 + mm * 60;
            if *sign == b'-' { -v } else { v }
        }
    };
    let t = epoch_us(year, month.checked_sub(1)?, day, h, mi, sec, micros)?;
    Some((t - offset_secs * 1_000_000, rest))
}

/// The month (0-based) of a line starting with a syslog stamp (`Nov 22 ...`).
#[must_use]
pub fn bsd_month(raw: &[u8]) -> Option<u32> {
    if raw.len() < 16 || raw[3] != b' ' || !raw[4].is_ascii_digit() && raw[4] != b' ' {
        return None;
    }
    let m = std::str::from_utf8(&raw[..3]).ok()?;
    month_index(m)
}

/// Position of an ASCII byte among the first `limit` bytes (a char boundary,
/// since ASCII bytes never occur inside a multi-byte character).
fn find_within(s: &str, byte: u8, limit: usize) -> Option<usize> {
    s.as_bytes().iter().take(limit).position(|&b| b == byte)
}

fn month_index(s: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| *m == s)
        .and_then(|i| u32::try_from(i).ok())
}

/// `HH:MM:SS[.frac]` -> (h, m, s, microseconds).
fn clock(s: &str) -> Option<(u32, u32, u32, u32)> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut it = hms.split(':');
    let h: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let sec: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut micros = 0u32;
    let mut digits = 0;
    for c in frac.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        if digits < 6 {
            micros = micros * 10 + u32::from(c - b'0');
            digits += 1;
        }
    }
    while digits < 6 {
        micros *= 10;
        digits += 1;
    }
    Some((h, m, sec, micros))
}

/// Civil date (month 0-based) to microseconds since the epoch (UTC).
fn epoch_us(year: i32, month0: u32, day: u32, h: u32, mi: u32, s: u32, micros: u32) -> Option<i64> {
    crate::timestamp::civil_us(year, month0 + 1, day, (h, mi, s), micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::rfc3339_us as rfc3339;

    fn kernel(line: &str) -> Split<'_> {
        match split(line, 2026) {
            Line::Kernel(s) => s,
            Line::Other => panic!("not a kernel line: {line}"),
        }
    }

    #[test]
    fn dmesg_shapes() {
        let s = kernel("[   17.187715] nettool: page allocation failure");
        assert_eq!(s.mono, Some(17.187715));
        assert_eq!(s.body, "nettool: page allocation failure");
        assert_eq!(s.wall_us, None);
        let s = kernel("[   17.189385]  warn_alloc+0x151/0x170");
        assert_eq!(s.body, " warn_alloc+0x151/0x170");
        let s = kernel("<4>[    1.000000] x");
        assert_eq!((s.mono, s.body), (Some(1.0), "x"));
        let s = kernel("[   17.187715][  T177] nettool: y");
        assert_eq!((s.body, s.caller), ("nettool: y", Some("T177")));
        let s = kernel("kern  :warn  : [   17.187715] z");
        assert_eq!((s.mono, s.body), (Some(17.187715), "z"));
        let s = kernel("no stamp at all");
        assert_eq!((s.mono, s.body), (None, "no stamp at all"));
        let s = kernel("[Sun Nov 22 03:00:05 2026] swapper/0: w");
        assert_eq!(s.body, "swapper/0: w");
        assert_eq!(
            s.wall_us.map(rfc3339).as_deref(),
            Some("2026-11-22T03:00:05Z")
        );
    }

    #[test]
    fn syslog_and_journal_shapes() {
        let s = kernel("Nov 22 03:00:05 web1 kernel: [   17.187715] nettool: x");
        assert_eq!(s.host, Some("web1"));
        assert_eq!(s.mono, Some(17.187715));
        assert_eq!(s.body, "nettool: x");
        assert_eq!(
            s.wall_us.map(rfc3339).as_deref(),
            Some("2026-11-22T03:00:05Z")
        );
        let s = kernel("Nov  2 03:00:05.123456 web1 kernel:  dump_stack+0x1/0x2");
        assert_eq!(s.body, " dump_stack+0x1/0x2");
        assert_eq!(
            s.wall_us.map(rfc3339).as_deref(),
            Some("2026-11-02T03:00:05.123456Z")
        );
        let s = kernel("2026-11-22T04:00:05+0100 web1 kernel: a");
        assert_eq!(
            s.wall_us.map(rfc3339).as_deref(),
            Some("2026-11-22T03:00:05Z")
        );
        let s = kernel("2026-11-22T03:00:05.250000+00:00 web1 kernel: b");
        assert_eq!(
            s.wall_us.map(rfc3339).as_deref(),
            Some("2026-11-22T03:00:05.250000Z")
        );
        assert_eq!(
            split("Nov 22 03:00:05 web1 sshd[12]: hello", 2026),
            Line::Other
        );
        assert_eq!(split("-- Boot 1234abcd --", 2026), Line::Other);
        // Absurd years are not stamps (and must not overflow).
        let s = kernel("[Sun Nov 22 03:00:05 2147483647] x");
        assert_eq!(s.wall_us, None);
        assert!(matches!(
            split("Nov 22 03:00:05 h kernel: y", i32::MAX),
            Line::Kernel(Split { wall_us: None, .. }) | Line::Other
        ));
    }

    #[test]
    fn rfc3339_round_trips_epoch() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(epoch_us(2026, 1, 30, 0, 0, 0, 0), None, "February 30");
        assert_eq!(
            epoch_us(2000, 1, 29, 12, 0, 0, 0).map(rfc3339).as_deref(),
            Some("2000-02-29T12:00:00Z")
        );
    }
}
