//! `pagefail logs`: any bytes, read as a kernel log, every report analyzed
//! and summarized. Invariant: the parser's counts add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::logs::{Event, Parser, analyze::Analyzer, summary::Summary};

fuzz_target!(|data: &[u8]| {
    let mut parser = Parser::new(2026);
    let mut analyzer = Analyzer::new(None);
    let mut summary = Summary::new();
    let mut reports = 0u64;
    parser
        .parse_reader(data, &mut |ev| {
            if let Event::Report(r) = ev {
                reports += 1;
                let a = analyzer.analyze(&r);
                summary.add_report(&r, &a);
            }
        })
        .expect("reading from memory cannot fail");
    let stats = parser.stats();
    assert_eq!(stats.reports, reports);
    assert!(stats.partial <= stats.reports);
    summary.add_stats(stats);
    let _ = summary.render();
    let _ = summary.rows();
});
