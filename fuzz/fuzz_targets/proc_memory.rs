//! The /proc memory files. The first byte picks the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::memory::{buddyinfo, netdrops::NetDrops, pagetypeinfo, sysctls, vmstat, zoneinfo};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 6 {
        0 => drop(buddyinfo::parse(text)),
        1 => drop(zoneinfo::parse(text)),
        2 => drop(pagetypeinfo::parse(text)),
        3 => drop(vmstat::parse(text)),
        4 => drop(sysctls::parse_value("min_free_kbytes", text)),
        _ => {
            // softnet_stat and netstat, separated by a NUL.
            let (a, b) = text.split_once('\0').unwrap_or((text, ""));
            drop(NetDrops::parse(a, b));
        }
    }
});
