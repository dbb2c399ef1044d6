//! Kernel stack symbolization from `/proc/kallsyms`, module names kept.
//!
//! kallsyms lists every kernel and module text symbol with its address
//! (`ffffffffc0a01230 t bond_start_xmit\t[bonding]`). Addresses read as zero
//! when `kernel.kptr_restrict` hides them from this process (no `CAP_SYSLOG)`:
//! that case is detected and reported, and frames are then shown as raw
//! addresses.

use std::{
    collections::HashMap,
    fmt, fs,
    io::{self, BufRead as _, BufReader},
    path::Path,
};

use thiserror::Error;

/// Errors loading kallsyms.
#[derive(Debug, Error)]
pub enum SymbolizeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "kernel symbol addresses are hidden (kallsyms shows zeros): run as root or with \
         CAP_SYSLOG, or set kernel.kptr_restrict=0; stacks are shown as raw addresses"
    )]
    Hidden,
}

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Symbol {
    pub name: String,
    pub module: Option<String>,
    /// Offset of the address into the function.
    pub offset: u64,
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.module {
            Some(m) => write!(f, "{} [{m}]", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Collects text symbols line by line, then sorts them by address.
#[derive(Default)]
struct Builder {
    entries: Vec<(u64, Box<str>, Option<u32>)>,
    modules: Vec<Box<str>>,
    module_ids: HashMap<Box<str>, u32>,
}

impl Builder {
    fn push_line(&mut self, line: &str) {
        let mut parts = line.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if !matches!(kind, "t" | "T" | "w" | "W") {
            return;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        if addr == 0 {
            return;
        }
        let module = parts
            .next()
            .and_then(|m| m.strip_prefix('['))
            .and_then(|m| m.strip_suffix(']'))
            .map(|m| {
                if let Some(&id) = self.module_ids.get(m) {
                    return id;
                }
                let id = u32::try_from(self.modules.len()).unwrap_or(u32::MAX);
                self.modules.push(m.into());
                self.module_ids.insert(m.into(), id);
                id
            });
        self.entries.push((addr, name.into(), module));
    }

    fn finish(mut self) -> Kallsyms {
        // Stable, so symbols at the same address keep the file's order, but
        // a linker section marker goes before the function that starts the
        // section: lookups take the last symbol at an address, and arm64
        // kallsyms lists `__softirqentry_text_start` after `__do_softirq`.
        self.entries
            .sort_by_key(|e| (e.0, !is_section_marker(&e.1)));
        let addrs = self.entries.iter().map(|e| e.0).collect();
        let names = self
            .entries
            .into_iter()
            .map(|(_, name, module)| (name, module))
            .collect();
        Kallsyms {
            addrs,
            names,
            modules: self.modules,
        }
    }
}

/// A linker-script symbol that marks where a text section starts or ends
/// (`__softirqentry_text_start`, `__irqentry_text_end`, `_stext`), not a
/// function.
fn is_section_marker(name: &str) -> bool {
    name.ends_with("_text_start")
        || name.ends_with("_text_end")
        || matches!(name, "_stext" | "_etext" | "_sinittext" | "_einittext")
}

/// A sorted kernel symbol table.
#[derive(Debug, Default, Clone)]
pub struct Kallsyms {
    addrs: Vec<u64>,
    names: Vec<(Box<str>, Option<u32>)>,
    modules: Vec<Box<str>>,
}

impl Kallsyms {
    /// Read the running kernel's table.
    ///
    /// # Errors
    /// When the file cannot be read or its addresses are hidden.
    pub fn load() -> Result<Self, SymbolizeError> {
        Self::load_from(Path::new("/proc/kallsyms"))
    }

    /// Read a table in kallsyms format from a file, line by line: the
    /// running kernel's is about 10 MB of text, which is never held whole.
    ///
    /// # Errors
    /// When the file cannot be read or its addresses are hidden.
    pub fn load_from(path: &Path) -> Result<Self, SymbolizeError> {
        let err = |source| SymbolizeError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut reader = BufReader::with_capacity(1 << 16, fs::File::open(path).map_err(err)?);
        let mut builder = Builder::default();
        let mut line = String::new();
        let mut any_text = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(err)? == 0 {
                break;
            }
            any_text |= !line.trim().is_empty();
            builder.push_line(&line);
        }
        let table = builder.finish();
        if table.addrs.is_empty() && any_text {
            return Err(SymbolizeError::Hidden);
        }
        Ok(table)
    }

    /// Parse kallsyms text. Lines that are not text symbols, or are
    /// malformed, are skipped; zero addresses are skipped.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut builder = Builder::default();
        for line in text.lines() {
            builder.push_line(line);
        }
        builder.finish()
    }

    /// Number of symbols.
    #[must_use]
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The symbol containing `addr`, if any symbol starts at or below it.
    #[must_use]
    pub fn lookup(&self, addr: u64) -> Option<Symbol> {
        let idx = self.addrs.partition_point(|&a| a <= addr).checked_sub(1)?;
        Some(self.symbol(idx, addr))
    }

    /// Symbol `idx` as seen from `addr`.
    fn symbol(&self, idx: usize, addr: u64) -> Symbol {
        let (name, module) = &self.names[idx];
        Symbol {
            name: name.to_string(),
            module: module
                .and_then(|m| self.modules.get(m as usize))
                .map(ToString::to_string),
            offset: addr - self.addrs[idx],
        }
    }

    /// For each address, the index of the symbol containing it: the last one
    /// starting at or below it, as [`Kallsyms::lookup`] finds it.
    ///
    /// The binary searches advance together, one level a step, without
    /// branches: their loads do not wait on each other, so a stack of 40
    /// frames waits for memory once a level rather than 40 times (the table
    /// of a running kernel, a megabyte of addresses, is mostly not cached).
    fn indices(&self, addrs: &[u64]) -> Vec<Option<usize>> {
        let table = &self.addrs;
        if table.is_empty() {
            return vec![None; addrs.len()];
        }
        // Each search's answer (how many entries are <= its address) lies in
        // base..=base + len, and base + len <= table.len().
        let mut base = vec![0usize; addrs.len()];
        let mut len = table.len();
        while len > 1 {
            let half = len / 2;
            for (b, &addr) in base.iter_mut().zip(addrs) {
                if table[*b + half] <= addr {
                    *b += half;
                }
            }
            len -= half;
        }
        base.iter()
            .zip(addrs)
            .map(|(&b, &addr)| (b + usize::from(table[b] <= addr)).checked_sub(1))
            .collect()
    }

    /// Symbolize a stack of return addresses (innermost first) and trim the
    /// allocator and tracing frames at its top.
    #[must_use]
    pub fn symbolize_stack(&self, stack: &[u64]) -> Vec<Symbol> {
        // Return addresses point after the call; look up addr-1 so a call
        // that ends a function names the caller, not the next one.
        let calls: Vec<u64> = stack.iter().map(|a| a.saturating_sub(1)).collect();
        let frames: Vec<Symbol> = self
            .indices(&calls)
            .into_iter()
            .zip(stack.iter().zip(&calls))
            .map(|(idx, (&addr, &call))| match idx {
                Some(idx) => {
                    let mut s = self.symbol(idx, call);
                    s.offset += 1;
                    s
                }
                None => Symbol {
                    name: format!("{addr:#x}"),
                    module: None,
                    offset: 0,
                },
            })
            .collect();
        trim_allocator_frames(frames)
    }
}

/// Frames at the top of a failure stack that say nothing about the caller:
/// the tracing machinery (the BPF program itself, its trampolines) and the
/// page allocator's own functions, whose names changed across kernels
/// (`__alloc_pages_nodemask` -> `__alloc_pages` -> `__alloc_pages_noprof` ->
/// `__alloc_frozen_pages_noprof`).
#[must_use]
pub fn is_allocator_or_tracing_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "trace_event_raw_event_",
        "perf_trace_",
        "__traceiter_",
        "trace_mm_page_alloc",
        "__alloc_pages",
        "__alloc_frozen_pages",
        "alloc_pages",
        "alloc_frozen_pages",
        "__folio_alloc",
        "folio_alloc",
        "get_page_from_freelist",
        "__get_free_pages",
        "get_zeroed_page",
        "warn_alloc",
        "dump_stack",
        "__rmqueue",
        "rmqueue",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

fn trim_allocator_frames(frames: Vec<Symbol>) -> Vec<Symbol> {
    let skip = frames
        .iter()
        .take_while(|f| is_allocator_or_tracing_frame(&f.name))
        .count();
    if skip == frames.len() {
        // Nothing but allocator frames: keep them rather than show nothing.
        return frames;
    }
    frames.into_iter().skip(skip).collect()
}

/// Fold a stack (innermost first) the way flame graph tools read it: root
/// first, frames joined by `;`, module frames as `name [module]`.
#[must_use]
pub fn fold(frames: &[Symbol]) -> String {
    let mut out = String::new();
    for (i, f) in frames.iter().rev().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(&f.name);
        if let Some(m) = &f.module {
            out.push_str(" [");
            out.push_str(m);
            out.push(']');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
ffffffff81000000 T _stext
ffffffff81100000 T __alloc_pages_noprof
ffffffff81100400 t get_page_from_freelist
ffffffff81200000 T alloc_fdtable
ffffffff81200100 T expand_files
ffffffff81300000 D some_data
ffffffff81400000 T do_syscall_64
ffffffffc0a01230 t bond_start_xmit\t[bonding]
ffffffffc0a02000 t bond_xmit_hash\t[bonding]
";

    #[test]
    fn looks_up_kernel_and_module_symbols() {
        let k = Kallsyms::parse(TABLE);
        assert_eq!(k.len(), 8, "data symbol skipped");
        let s = k.lookup(0xffff_ffff_8120_0010).unwrap();
        assert_eq!((s.name.as_str(), s.offset), ("alloc_fdtable", 0x10));
        let s = k.lookup(0xffff_ffff_c0a0_1300).unwrap();
        assert_eq!(s.to_string(), "bond_start_xmit [bonding]");
        assert!(k.lookup(0x1000).is_none());
    }

    #[test]
    fn trims_allocator_frames_and_folds_root_first() {
        let k = Kallsyms::parse(TABLE);
        let stack = [
            0xffff_ffff_8110_0410, // get_page_from_freelist
            0xffff_ffff_8110_0020, // __alloc_pages_noprof
            0xffff_ffff_8120_0020, // alloc_fdtable
            0xffff_ffff_8120_0120, // expand_files
            0xffff_ffff_8140_0020, // do_syscall_64
        ];
        let frames = k.symbolize_stack(&stack);
        let names: Vec<_> = frames.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["alloc_fdtable", "expand_files", "do_syscall_64"]);
        assert_eq!(fold(&frames), "do_syscall_64;expand_files;alloc_fdtable");
    }

    #[test]
    fn return_address_at_function_end_names_the_caller() {
        let k = Kallsyms::parse(TABLE);
        // A return address equal to the next symbol's start belongs to the caller.
        // do_syscall_64 starts at ..8140_0000, so a return address there lies
        // past the end of expand_files (data symbols are not functions).
        let frames = k.symbolize_stack(&[0xffff_ffff_8140_0000, 0xffff_ffff_8120_0100]);
        let names: Vec<_> = frames.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["expand_files", "alloc_fdtable"]);
        assert_eq!(frames[1].offset, 0x100);
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let dir = std::env::temp_dir().join(format!("pagefail-ksyms-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("kallsyms");
        fs::write(
            &p,
            "0000000000000000 T _stext\n0000000000000000 t foo [m]\n",
        )
        .unwrap();
        assert!(matches!(
            Kallsyms::load_from(&p),
            Err(SymbolizeError::Hidden)
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batched_lookups_find_what_single_lookups_find() {
        // Duplicate addresses (aliases), the first and last symbol, gaps.
        let mut text = String::new();
        let mut addr = 0xffff_ffff_8100_0000u64;
        for i in 0..1000u64 {
            addr += [0, 1, 0x10, 0x123][(i % 4) as usize] * (1 + i % 7);
            let module = if i % 9 == 0 { "\t[m]" } else { "" };
            text.push_str(&format!("{addr:016x} t f{i}{module}\n"));
        }
        let k = Kallsyms::parse(&text);
        let mut probes = vec![0, 1, u64::MAX, 0xffff_ffff_8100_0000, addr, addr + 1];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            probes.push(0xffff_ffff_8100_0000 - 8 + x % (addr - 0xffff_ffff_8100_0000 + 16));
        }
        for &a in &k.addrs {
            probes.extend([a - 1, a, a + 1]);
        }
        let batched = k.indices(&probes);
        for (&a, idx) in probes.iter().zip(batched) {
            let single = k.addrs.partition_point(|&s| s <= a).checked_sub(1);
            assert_eq!(idx, single, "{a:#x}");
        }
        for n in 0..5 {
            let small = Kallsyms::parse(
                &text
                    .lines()
                    .take(n)
                    .flat_map(|l| [l, "\n"])
                    .collect::<String>(),
            );
            for &a in &probes[..200] {
                let single = small.addrs.partition_point(|&s| s <= a).checked_sub(1);
                assert_eq!(small.indices(&[a])[0], single, "{n} symbols, {a:#x}");
            }
        }
    }

    #[test]
    fn a_section_marker_never_names_the_function_at_its_address() {
        // arm64 6.1 kallsyms: the marker follows the function it starts.
        let k = Kallsyms::parse(
            "ffff800008010000 T __do_softirq\n\
             ffff800008010000 T __softirqentry_text_start\n\
             ffff800008010400 T __softirqentry_text_end\n\
             ffff800008010400 t ____do_softirq\n",
        );
        assert_eq!(
            k.lookup(0xffff_8000_0801_0010).unwrap().name,
            "__do_softirq"
        );
        assert_eq!(
            k.lookup(0xffff_8000_0801_0404).unwrap().name,
            "____do_softirq"
        );
        // The other order gives the same answer.
        let k = Kallsyms::parse(
            "ffff800008010000 T __softirqentry_text_start\n\
             ffff800008010000 T __do_softirq\n",
        );
        assert_eq!(
            k.lookup(0xffff_8000_0801_0010).unwrap().name,
            "__do_softirq"
        );
    }

    #[test]
    fn unknown_addresses_stay_raw() {
        let k = Kallsyms::parse(TABLE);
        let frames = k.symbolize_stack(&[0x10, 0xffff_ffff_8140_0020]);
        assert_eq!(frames[0].name, "0x10");
    }

    #[test]
    fn all_allocator_frames_are_kept_rather_than_dropped() {
        let k = Kallsyms::parse(TABLE);
        let frames = k.symbolize_stack(&[0xffff_ffff_8110_0020]);
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn hidden_table_says_what_to_do_and_stacks_stay_raw() {
        let dir = std::env::temp_dir().join(format!("pagefail-ksyms-raw-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("kallsyms");
        // What a process without CAP_SYSLOG reads under kptr_restrict=1.
        let zeroed: String = TABLE
            .lines()
            .flat_map(|l| ["0000000000000000", &l[16..], "\n"])
            .collect();
        fs::write(&p, zeroed).unwrap();
        let err = Kallsyms::load_from(&p).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("CAP_SYSLOG"), "{msg}");
        assert!(msg.contains("raw addresses"), "{msg}");
        // The session then symbolizes with an empty table: every frame raw.
        let k = Kallsyms::default();
        let frames = k.symbolize_stack(&[0xffff_ffff_8120_0020, 0xffff_ffff_8140_0020]);
        assert_eq!(
            fold(&frames),
            "0xffffffff81400020;0xffffffff81200020",
            "raw addresses, root first"
        );
        // An empty file is not "hidden", just empty; a missing one is a read error.
        fs::write(&p, "").unwrap();
        assert!(Kallsyms::load_from(&p).unwrap().is_empty());
        assert!(matches!(
            Kallsyms::load_from(&dir.join("missing")),
            Err(SymbolizeError::Read { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The real /proc/kallsyms read by a thread without capabilities: the
    /// kernel zeroes the addresses unless `kptr_restrict` is 0 and perf
    /// events are open to all (`perf_event_paranoid` <= 1).
    #[test]
    fn real_kallsyms_without_capabilities_is_hidden_or_readable_as_the_sysctls_say() {
        let sysctl = |n: &str| {
            fs::read_to_string(format!("/proc/sys/kernel/{n}"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        };
        let (Some(restrict), Some(paranoid)) =
            (sysctl("kptr_restrict"), sysctl("perf_event_paranoid"))
        else {
            crate::note!("SKIPPED: no kptr_restrict / perf_event_paranoid sysctl");
            return;
        };
        let shown = restrict == 0 && paranoid <= 1;
        std::thread::spawn(move || {
            crate::privilege::drop_all().expect("drop capabilities");
            match Kallsyms::load() {
                Ok(k) => assert!(
                    shown && !k.is_empty(),
                    "addresses shown though they should be hidden"
                ),
                Err(SymbolizeError::Hidden) => {
                    assert!(!shown, "hidden though the sysctls allow them");
                }
                Err(e) => panic!("{e}"),
            }
        })
        .join()
        .expect("kallsyms thread");
    }
}
