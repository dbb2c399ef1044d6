//! pagefail's userspace: load and attach the kernel program, collect failure
//! records, attribute and aggregate them, export them; read kernel logs; show
//! the memory state and advise. The module map, the path of one failure and
//! the owner of each concept: docs/ARCHITECTURE.md.

/// `eprintln!` that cannot panic: when stderr is closed
/// (`pagefail ... 2>&1 | head -1`), the note is lost and nothing else.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

/// Bounded aggregation of failure records into summary rows.
pub mod aggregate;
/// cgroup attribution on v1, v2 and hybrid hosts; id to path (and container id).
pub mod cgroup;
/// CPU context and network path of a failure, from its stack.
pub mod classify;
/// The subcommands, one file each.
pub mod cli;
/// What the failures cost: packet drops beside the failures.
pub mod drops;
/// Ring buffer records and the boot clock.
pub mod events;
/// The files' contract: summary, totals and memory CSVs, JSON lines.
pub mod export;
/// gfp masks: tables by kernel, and what a mask means.
pub mod gfp;
/// Struct member offsets and enum values from the running kernel's BTF.
pub mod kbtf;
/// The one parse of a kernel release string.
pub mod kernel_version;
/// Failure reports read back from kernel logs.
pub mod logs;
/// Rows rebuilt from the kernel's table of lost failures (ring buffer full).
pub mod lost;
/// Memory state from /proc, and the advice rules.
pub mod memory;
/// Prometheus metrics of `record`.
pub mod metrics;
/// SVG timelines of CSV summaries.
pub mod plot;
/// Dropping capabilities once attached.
pub mod privilege;
/// Loading and attaching the kernel program; kernel support.
pub mod probe;
/// Interval files of `record`: naming, retries, retention.
pub mod recorder;
/// pagefail under memory pressure: its OOM score, shortages it retries.
pub mod selfprotect;
/// A tracing session: attach, pump, stop, drain.
pub mod session;
/// Kernel stacks from /proc/kallsyms.
pub mod symbolize;
/// The one RFC 3339 writer and parser.
pub mod timestamp;
/// Which failures hurt: cause and outcome.
pub mod verdict;
