//! `pagefail logs`: the `page allocation failure` reports the kernel already
//! printed, read back from dmesg, syslog files or `journalctl -k` output.
//!
//! The parser streams: lines go in one at a time ([`Parser::push_line`]),
//! reports come out as soon as they end, and memory is bounded (a report
//! keeps at most [`MAX_REPORT_LINES`] lines' worth of frames and zones). Lines
//! outside a report are rejected with one substring search, which is what
//! makes the parser fast on ordinary logs.
//!
//! - [`prefix`]: the line shapes (dmesg, `-T`, syslog, journal);
//! - [`lines`]: the lines of a report across kernel versions;
//! - [`frames`]: call-trace lines of every architecture;
//! - [`slab`]: `SLUB: Unable to allocate memory` failures;
//! - [`meminfo`]: the `Mem-Info:` block;
//! - [`analyze`]: gfp names, atomic, context and path of a parsed report;
//! - [`summary`]: aggregation into the CSV rows and the human summary.

pub mod analyze;
pub mod frames;
pub mod lines;
pub mod meminfo;
pub mod prefix;
pub mod slab;
pub mod summary;

use std::io::{self, BufRead};

use aho_corasick::packed;
use serde::Serialize;

use self::{
    lines::{HeaderMatch, Section},
    meminfo::MemInfo,
    prefix::Line,
    slab::SlabFailure,
};

/// Lines after which an unfinished report is closed as partial.
pub const MAX_REPORT_LINES: u32 = 1000;
/// Frames kept per report; more are counted in `frames_dropped`.
pub const MAX_FRAMES: usize = 128;
/// Longest line kept; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 64 * 1024;
/// A report is printed within milliseconds; a line stamped this much later
/// (seconds since boot) belongs to something else, and a stamp going back
/// means a reboot.
const MONO_GAP: f64 = 10.0;
/// The same for wall-clock stamps (coarser: syslog has whole seconds and
/// journald may write late).
const WALL_GAP_US: i64 = 60 * 1_000_000;
/// Reports open at once: CPUs printing their reports at the same time
/// interleave them line by line.
const MAX_OPEN: usize = 4;
/// Lines a lone `comm:` line (the start of a header another CPU's output
/// split) waits for the rest of its header.
const COMM_WAIT_LINES: u64 = 8;

/// One frame of a report's call trace, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceFrame {
    pub function: String,
    /// `+0x61/0xc0`.
    pub offset: Option<String>,
    pub module: Option<String>,
    /// `false` for `?` frames: found on the stack, not proven on the call chain.
    pub reliable: bool,
    /// The stack section (`<IRQ>`, `<TASK>`, ...) the frame was printed in.
    pub section: Section,
}

/// One `page allocation failure` report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// 1-based line number of the header line in its input.
    pub line: u64,
    /// Seconds since boot of the header line.
    pub mono: Option<f64>,
    /// Wall-clock time of the header line, microseconds since the epoch.
    pub wall_us: Option<i64>,
    pub host: Option<String>,
    pub comm: String,
    pub pid: Option<u32>,
    pub cpu: Option<u32>,
    /// Kernel release from the report's own `Not tainted 6.1.0-...` line.
    pub kernel: Option<String>,
    pub order: u32,
    pub gfp: u64,
    /// Flag names as printed by the kernel (4.6+).
    pub gfp_printed: Option<String>,
    /// The call trace, innermost frame first, `?` frames included.
    pub frames: Vec<TraceFrame>,
    pub frames_dropped: u32,
    /// The memory state printed after the trace.
    pub mem: Option<MemInfo>,
    /// The report was cut (log truncated, lines lost, next report started).
    pub partial: bool,
}

/// What the parser hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Report(Box<Report>),
    /// `warn_alloc: N callbacks suppressed`: N failures the log does not show.
    Suppressed {
        count: u64,
        mono: Option<f64>,
        wall_us: Option<i64>,
    },
    /// `SLUB: Unable to allocate memory`: a slab cache could not grow.
    Slab(Box<SlabFailure>),
}

/// Counters over everything the parser read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub lines: u64,
    pub bytes: u64,
    pub reports: u64,
    pub partial: u64,
    /// Lines saying `page allocation failure` in a shape the parser does not know.
    pub skipped: u64,
    /// Sum of `callbacks suppressed` counts.
    pub suppressed: u64,
    /// Lines cut at [`MAX_LINE`].
    pub long_lines: u64,
    /// `SLUB: Unable to allocate memory` failures.
    pub slab: u64,
    /// Lines printed inside reports that belong to none of the open ones
    /// (another CPU's, by their caller id or their task name).
    pub unassigned: u64,
}

impl Stats {
    /// Add another input's counters.
    pub fn add(&mut self, o: &Stats) {
        self.lines += o.lines;
        self.bytes += o.bytes;
        self.reports += o.reports;
        self.partial += o.partial;
        self.skipped += o.skipped;
        // Read from the log: a crafted count must not overflow.
        self.suppressed = self.suppressed.saturating_add(o.suppressed);
        self.long_lines += o.long_lines;
        self.slab += o.slab;
        self.unassigned += o.unassigned;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Header seen, before `Call Trace:`.
    Header,
    Trace,
    /// The trace closed with `</TASK>`-like marker.
    TraceDone,
    Mem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// `N pages reserved`: the last line of `show_mem`.
    Complete,
    /// A new report, a suppressed line, a time gap: the report is over.
    Interrupted,
    Eof,
    TooLong,
}

struct Open {
    report: Report,
    phase: Phase,
    caller: Option<String>,
    lines: u32,
    section: Section,
    /// The header ended before `mode:` (wrapped or split).
    awaiting_mode: bool,
    /// The identification line ended before the kernel release (wrapped).
    awaiting_kernel: bool,
    /// The caller named by the last ARM `from` line: the outermost frame
    /// when no line follows it.
    tail: Option<TraceFrame>,
}

/// The streaming report parser. Feed lines, receive [`Event`]s.
pub struct Parser {
    year: i32,
    /// With [`Parser::not_after`]: the month (0-11) of `year` that syslog
    /// stamps may not pass, so a log whose first stamp lies later in the
    /// year is taken as last year's.
    latest_month: Option<u32>,
    /// Month of the last syslog-stamped line, to notice New Year.
    last_month: Option<u32>,
    /// Open reports, oldest first; lines go to the newest unless their
    /// caller id or task name says otherwise.
    open: Vec<Open>,
    /// Lone `comm:` lines waiting for the rest of their header, with their
    /// line numbers.
    comms: Vec<(String, u64)>,
    /// A slab failure waiting for its `cache:` line.
    slab: Option<SlabFailure>,
    stats: Stats,
    /// The texts that make a line worth a look outside a report, found in
    /// one SIMD pass over the line.
    wanted: packed::Searcher,
}

impl Parser {
    /// A parser; `year` completes syslog stamps, which carry none (it is
    /// the year of the first such line, and advances when a log crosses New
    /// Year).
    #[must_use]
    pub fn new(year: i32) -> Self {
        Self {
            year,
            latest_month: None,
            last_month: None,
            open: Vec::new(),
            comms: Vec::new(),
            slab: None,
            stats: Stats::default(),
            wanted: wanted_searcher(),
        }
    }

    /// Take syslog stamps (which carry no year) as no later than `month0`
    /// (0-11) of the parser's year: when the first such stamp's month is
    /// later, the log began last year. For a log read today, today's month.
    #[must_use]
    pub fn not_after(mut self, month0: u32) -> Self {
        self.latest_month = Some(month0);
        self
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Take one line (with or without its newline).
    pub fn push_line(&mut self, raw: &[u8], emit: &mut dyn FnMut(Event)) {
        self.count_line(raw);
        if self.skippable(raw) {
            return;
        }
        let text = String::from_utf8_lossy(raw);
        let split = match prefix::split(&text, self.year) {
            Line::Kernel(s) => s,
            Line::Other => return,
        };
        let line_no = self.stats.lines;
        let body = split.body;

        self.close_on_gap(&split, emit);
        if self.take_slab_cache(body, emit) {
            return;
        }
        self.comms
            .retain(|(_, at)| line_no.saturating_sub(*at) <= COMM_WAIT_LINES);

        if body.contains(lines::FAILURE) && self.take_headers(&split, line_no, emit) {
            return;
        }
        if self.take_marker(&split, line_no, emit) || self.open.is_empty() {
            return;
        }
        if self.take_mode_continuation(body) {
            return;
        }
        let Some(target) = self.target_of(split.caller) else {
            return;
        };
        self.feed_target(target, body, emit);
    }

    /// Count the line, and follow the year of syslog stamps.
    fn count_line(&mut self, raw: &[u8]) {
        self.stats.lines += 1;
        self.stats.bytes += raw.len() as u64 + u64::from(!raw.ends_with(b"\n"));
        // Syslog stamps have no year: a month half a year before the
        // previous line's means the log crossed New Year. Checked on every
        // line (3 bytes) so that quiet months count too.
        if let Some(month) = prefix::bsd_month(raw) {
            if self.last_month.is_some_and(|last| month + 6 <= last) && self.year < 9999 {
                self.year += 1;
            }
            if self.last_month.is_none() && self.latest_month.is_some_and(|m| month > m) {
                self.year -= 1;
            }
            self.last_month = Some(month);
        }
    }

    /// Fast path: outside a report only a few kinds of line matter.
    fn skippable(&self, raw: &[u8]) -> bool {
        self.open.is_empty()
            && self.slab.is_none()
            && !ends_with_colon(raw)
            && self.wanted.find(raw).is_none()
    }

    /// A time gap (or a stamp going back) after the newest open report
    /// ends every open report.
    fn close_on_gap(&mut self, split: &prefix::Split<'_>, emit: &mut dyn FnMut(Event)) {
        if let Some(last) = self.open.last() {
            let r = &last.report;
            let gap = match (r.mono, split.mono, r.wall_us, split.wall_us) {
                (Some(a), Some(b), _, _) => b < a - 0.001 || b > a + MONO_GAP,
                (_, _, Some(a), Some(b)) => b < a - WALL_GAP_US || b > a + WALL_GAP_US,
                _ => false,
            };
            if gap {
                self.close_all(Close::Interrupted, emit);
            }
        }
    }

    /// A pending slab failure takes its `cache:` line (true: the line is
    /// used), or is emitted without one.
    fn take_slab_cache(&mut self, body: &str, emit: &mut dyn FnMut(Event)) -> bool {
        if let Some(pending) = self.slab.take() {
            match slab::cache_line(body) {
                Some((name, default_order, min_order)) => {
                    let mut s = pending;
                    s.cache = Some(name.to_owned());
                    s.order = min_order;
                    s.default_order = default_order;
                    self.emit_slab(s, emit);
                    return true;
                }
                None => self.emit_slab(pending, emit),
            }
        }
        false
    }

    /// A line saying `page allocation failure`: open a report per header
    /// on it. True: the line is used (a header, or no report to feed).
    fn take_headers(
        &mut self,
        split: &prefix::Split<'_>,
        line_no: u64,
        emit: &mut dyn FnMut(Event),
    ) -> bool {
        let mut any = false;
        for h in lines::headers(split.body) {
            match h {
                HeaderMatch::Header(h) => {
                    any = true;
                    self.open_report(&h, split, line_no, emit);
                }
                HeaderMatch::Unknown => self.stats.skipped += 1,
            }
        }
        any || self.open.is_empty()
    }

    /// The lines that matter outside a report: `callbacks suppressed`,
    /// `SLUB: Unable to allocate memory`, a lone `comm:` line. True: the
    /// line was one of them.
    fn take_marker(
        &mut self,
        split: &prefix::Split<'_>,
        line_no: u64,
        emit: &mut dyn FnMut(Event),
    ) -> bool {
        let body = split.body;
        if let Some(count) = lines::suppressed(body) {
            self.close_all(Close::Interrupted, emit);
            self.stats.suppressed = self.stats.suppressed.saturating_add(count);
            emit(Event::Suppressed {
                count,
                mono: split.mono,
                wall_us: split.wall_us,
            });
            return true;
        }
        if let Some((node, gfp, names)) = slab::slub_line(body) {
            // Printed after the page allocator's own report: that one is over.
            self.close_all(Close::Interrupted, emit);
            self.slab = Some(SlabFailure {
                line: line_no,
                mono: split.mono,
                wall_us: split.wall_us,
                host: split.host.map(str::to_owned),
                node,
                gfp,
                gfp_printed: names.map(str::to_owned),
                cache: None,
                order: None,
                default_order: None,
            });
            return true;
        }
        if let Some(comm) = lines::lone_comm(body) {
            if self.comms.len() >= MAX_OPEN {
                self.comms.remove(0);
            }
            self.comms.push((comm.to_owned(), line_no));
            return true;
        }
        false
    }

    /// The rest of a header cut before `mode:`. True: the line was it.
    fn take_mode_continuation(&mut self, body: &str) -> bool {
        if let Some((gfp, names)) = lines::mode_continuation(body)
            && let Some(o) = self.open.iter_mut().find(|o| o.awaiting_mode)
        {
            o.awaiting_mode = false;
            o.report.gfp = gfp;
            o.report.gfp_printed = names.map(str::to_owned);
            return true;
        }
        false
    }

    /// The open report a line belongs to: with printk caller ids, lines of
    /// other tasks/CPUs are told apart (None: none of the open ones,
    /// counted as unassigned); else the newest.
    fn target_of(&mut self, caller: Option<&str>) -> Option<usize> {
        match caller {
            Some(c) if self.open.iter().any(|o| o.caller.is_some()) => {
                let i = self
                    .open
                    .iter()
                    .rposition(|o| o.caller.as_deref() == Some(c));
                if i.is_none() {
                    self.stats.unassigned += 1;
                }
                i
            }
            _ => Some(self.open.len() - 1),
        }
    }

    /// A line of an open report: its identification, the rest of a
    /// wrapped identification, or a line of its trace or memory state.
    fn feed_target(&mut self, target: usize, body: &str, emit: &mut dyn FnMut(Event)) {
        let t = body.trim();
        if let Some(id) = lines::ident(t) {
            self.take_ident(&id, t, target);
            return;
        }
        let open = &mut self.open[target];
        if std::mem::take(&mut open.awaiting_kernel)
            && let Some(k) = lines::kernel_continuation(t)
        {
            open.report.kernel = Some(k.to_owned());
            return;
        }
        open.lines += 1;
        match feed(open, body) {
            Some(close) => self.close_at(target, close, emit),
            None if open.lines >= MAX_REPORT_LINES => self.close_at(target, Close::TooLong, emit),
            None => {}
        }
    }

    /// A header: open a report. Reports already past their header are over
    /// (the next report starts after the previous one's trace); reports
    /// still waiting for their identification stay open, since another
    /// CPU's header can come between a header and its lines.
    fn open_report(
        &mut self,
        h: &lines::Header<'_>,
        split: &prefix::Split<'_>,
        line_no: u64,
        emit: &mut dyn FnMut(Event),
    ) {
        let mut i = 0;
        while i < self.open.len() {
            if self.open[i].phase == Phase::Header && self.open[i].report.pid.is_none() {
                i += 1;
            } else {
                self.close_at(i, Close::Interrupted, emit);
            }
        }
        if self.open.len() >= MAX_OPEN {
            self.close_at(0, Close::Interrupted, emit);
        }
        // A header without a task name takes the lone `comm:` line printed
        // just before it, oldest first.
        let comm = if h.comm.is_empty() && !self.comms.is_empty() {
            self.comms.remove(0).0
        } else {
            h.comm.to_owned()
        };
        self.open.push(Open {
            report: Report {
                line: line_no,
                mono: split.mono,
                wall_us: split.wall_us,
                host: split.host.map(str::to_owned),
                comm,
                pid: None,
                cpu: None,
                kernel: None,
                order: h.order,
                gfp: h.gfp.unwrap_or(0),
                gfp_printed: h.names.map(str::to_owned),
                frames: Vec::new(),
                frames_dropped: 0,
                mem: None,
                partial: false,
            },
            phase: Phase::Header,
            caller: split.caller.map(str::to_owned),
            lines: 1,
            section: Section::None,
            awaiting_mode: h.gfp.is_none(),
            awaiting_kernel: false,
            tail: None,
        });
    }

    /// `CPU: N PID: N Comm: x ...`: goes to the open report of that task
    /// (the newest one), else to the target report if it has none yet.
    fn take_ident(&mut self, id: &lines::Ident<'_>, line: &str, target: usize) {
        let by_comm = id.comm.and_then(|c| {
            self.open.iter().rposition(|o| {
                o.report.pid.is_none() && !o.report.comm.is_empty() && o.report.comm == c
            })
        });
        let idx = by_comm.or_else(|| {
            let o = &self.open[target];
            (o.report.pid.is_none() && o.phase == Phase::Header).then_some(target)
        });
        let Some(idx) = idx else {
            self.stats.unassigned += 1;
            return;
        };
        let o = &mut self.open[idx];
        let r = &mut o.report;
        r.pid = id.pid;
        r.cpu = id.cpu;
        r.kernel = id.kernel.map(str::to_owned);
        if r.comm.is_empty()
            && let Some(c) = id.comm
        {
            c.clone_into(&mut r.comm);
        }
        o.awaiting_kernel =
            id.kernel.is_none() && (line.contains(" Tainted:") || line.contains(" Not tainted"));
    }

    /// End of input: close the reports still open.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Event)) {
        if let Some(s) = self.slab.take() {
            self.emit_slab(s, emit);
        }
        self.close_all(Close::Eof, emit);
    }

    fn emit_slab(&mut self, s: SlabFailure, emit: &mut dyn FnMut(Event)) {
        self.stats.slab += 1;
        emit(Event::Slab(Box::new(s)));
    }

    fn close_all(&mut self, how: Close, emit: &mut dyn FnMut(Event)) {
        while !self.open.is_empty() {
            self.close_at(0, how, emit);
        }
    }

    fn close_at(&mut self, index: usize, how: Close, emit: &mut dyn FnMut(Event)) {
        if index >= self.open.len() {
            return;
        }
        let open = self.open.remove(index);
        let mut report = open.report;
        if let Some(t) = open.tail {
            push_frame(&mut report, t);
        }
        report.partial = match how {
            Close::Complete => false,
            // A trace closed by its end marker, then the next message: the
            // kernel printed no Mem-Info (or it was rate-limited).
            Close::Interrupted => open.phase != Phase::TraceDone,
            Close::Eof | Close::TooLong => true,
        };
        self.stats.reports += 1;
        self.stats.partial += u64::from(report.partial);
        emit(Event::Report(Box::new(report)));
    }

    /// Parse a whole input, calling `emit` for each event.
    ///
    /// # Errors
    /// Read errors of the input.
    pub fn parse_reader<R: BufRead>(
        &mut self,
        input: R,
        emit: &mut dyn FnMut(Event),
    ) -> io::Result<()> {
        let mut long = 0u64;
        for_each_line(input, &mut |line, cut| {
            long += u64::from(cut);
            self.push_line(line, emit);
        })?;
        self.stats.long_lines += long;
        self.finish(emit);
        Ok(())
    }
}

/// One searcher for the three texts; Teddy (SIMD) where the CPU has it,
/// else Rabin-Karp: either way a single pass over the line.
fn wanted_searcher() -> packed::Searcher {
    let mut b = packed::Config::new()
        .match_kind(packed::MatchKind::LeftmostFirst)
        .builder();
    b.extend([
        lines::FAILURE.as_bytes(),
        b"callbacks suppressed".as_slice(),
        slab::SLUB.as_bytes(),
    ]);
    // Three short, distinct literals: the builder takes them whatever the CPU.
    b.build()
        .unwrap_or_else(|| unreachable!("three literals fit a packed searcher"))
}

/// The line's last visible byte is a colon (`swapper/3: `): maybe the start
/// of a header split by another CPU's output.
fn ends_with_colon(raw: &[u8]) -> bool {
    raw.iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b':')
}

/// One line inside an open report; `Some` when it ends the report.
fn feed(open: &mut Open, body: &str) -> Option<Close> {
    let r = &mut open.report;
    let t = body.trim();
    if open.phase == Phase::Mem {
        let mem = r.mem.get_or_insert_with(MemInfo::default);
        mem.feed(t);
        return t.ends_with("pages reserved").then_some(Close::Complete);
    }
    // `Mem-info:` on older arm kernels; `<EOI> Mem-Info:` where the trace
    // of an interrupt ends on the same line.
    if t.strip_prefix("<EOI>")
        .map_or(t, str::trim_start)
        .eq_ignore_ascii_case("mem-info:")
    {
        open.phase = Phase::Mem;
        r.mem = Some(MemInfo::default());
        return None;
    }
    if t.eq_ignore_ascii_case("call trace:") {
        open.phase = Phase::Trace;
        return None;
    }
    if let Some(tl) = lines::trace_line(t) {
        for m in &tl.markers {
            open.section = *m;
        }
        if let Some(f) = tl.frame {
            open.phase = Phase::Trace;
            let frame = |f: &frames::FrameLine<'_>| TraceFrame {
                function: f.function.to_owned(),
                offset: f.offset.map(str::to_owned),
                module: f.module.map(str::to_owned),
                reliable: f.reliable,
                section: open.section,
            };
            // The previous line's caller is this frame.
            open.tail = tl.caller.as_ref().map(frame);
            push_frame(r, frame(&f));
        } else if t == "</TASK>" && open.phase == Phase::Trace {
            open.phase = Phase::TraceDone;
        }
    }
    None
}

fn push_frame(r: &mut Report, f: TraceFrame) {
    if r.frames.len() < MAX_FRAMES {
        r.frames.push(f);
    } else {
        r.frames_dropped = r.frames_dropped.saturating_add(1);
    }
}

/// Call `f` for each line of `input` (without the newline); lines longer
/// than [`MAX_LINE`] are cut (the flag says so). Memory stays bounded
/// whatever the input.
///
/// # Errors
/// Read errors of the input.
pub fn for_each_line<R: BufRead>(mut input: R, f: &mut dyn FnMut(&[u8], bool)) -> io::Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if !carry.is_empty() || cut {
                f(&carry, cut);
            }
            return Ok(());
        }
        let mut start = 0;
        let len = buf.len();
        while let Some(pos) = memchr::memchr(b'\n', &buf[start..]) {
            let end = start + pos;
            if carry.is_empty() && !cut {
                f(&buf[start..end], false);
            } else {
                let room = MAX_LINE.saturating_sub(carry.len());
                let piece = &buf[start..end];
                cut |= piece.len() > room;
                carry.extend_from_slice(&piece[..piece.len().min(room)]);
                f(&carry, cut);
                carry.clear();
                cut = false;
            }
            start = end + 1;
        }
        let rest = &buf[start..];
        let room = MAX_LINE.saturating_sub(carry.len());
        cut |= rest.len() > room;
        carry.extend_from_slice(&rest[..rest.len().min(room)]);
        input.consume(len);
    }
}

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod shapes_tests;
#[cfg(test)]
mod tests;
