//! The `--rules` file: user network path rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::classify::Classifier;

fuzz_target!(|text: &str| {
    let _ = Classifier::with_user_rules(text);
});
