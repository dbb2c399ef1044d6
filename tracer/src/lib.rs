//! pagefail's userspace: load and attach the kernel program, collect failure
//! records, attribute and aggregate them, export them; read kernel logs; show
//! the memory state and advise.

/// `eprintln!` that cannot panic: when stderr is closed
/// (`pagefail ... 2>&1 | head -1`), the note is lost and nothing else.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

pub mod aggregate;
pub mod cgroup;
pub mod classify;
pub mod cli;
pub mod events;
pub mod export;
pub mod gfp;
pub mod kbtf;
pub mod logs;
pub mod memory;
pub mod metrics;
pub mod plot;
pub mod privilege;
pub mod probe;
pub mod recorder;
pub mod selfprotect;
pub mod session;
pub mod symbolize;
