//! `pagefail report` / `check --from`: CSV summaries from anywhere. Rows
//! that parse must merge without panicking and keep their failure total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::{cli::report::merge, export::read_csv};

fuzz_target!(|data: &[u8]| {
    let Ok(rows) = read_csv("fuzz.csv", data) else {
        return;
    };
    let total = rows.iter().fold(0u64, |t, r| t.saturating_add(r.failures));
    let keys: Vec<String> = ["host", "comm", "order"].map(str::to_owned).to_vec();
    let merged = merge(rows, &keys);
    if total < u64::MAX / 2 {
        assert_eq!(merged.iter().map(|r| r.failures).sum::<u64>(), total);
    }
});
