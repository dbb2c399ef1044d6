//! The tracepoint format file (`events/kmem/mm_page_alloc/format`): the gfp
//! table and the record layout are read from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::{gfp::GfpTable, probe::layout::RecordLayout};

fuzz_target!(|text: &str| {
    if let Ok(table) = GfpTable::from_format(text) {
        for mask in [0, 0x20, 0x820, 0xcc0, u64::MAX] {
            let _ = table.decode(mask);
        }
    }
    let _ = RecordLayout::from_format(text);
});
