//! The memory CSV (`--memory-csv`, `<stem>.memory.csv` of `record`):
//! memory snapshot summaries as CSV rows and JSON, written and read here.
//!
//! CSV columns ([`MEMORY_CSV_HEADER`]), one row per populated zone per snapshot;
//! sizes in pages:
//!
//! | column | meaning |
//! |---|---|
//! | `taken` | when the snapshot was taken, RFC 3339 UTC |
//! | `node`, `zone` | the zone (`Node 0, zone Normal`) |
//! | `managed` | pages the allocator manages in the zone |
//! | `free` | free pages |
//! | `min`, `low`, `high` | watermarks; atomic requests may dip below `min` (to 3/8 of it for GFP_ATOMIC) |
//! | `boost` | temporary watermark boost after fragmentation events |
//! | `free_above_min` | `free - min`; negative below the min watermark |
//! | `largest_free_order` | the largest order with a free block; empty when none |
//! | `free_blocks` | free blocks of order 0, 1, 2, ... separated by spaces |
//! | `highatomic_blocks` | pageblocks in the high-order atomic reserve; empty when unknown |
//! | `min_free_kbytes`, `watermark_scale_factor` | the sysctls at that moment |

use std::io::{Read, Write};

use thiserror::Error;

use crate::memory::SnapshotSummary;

/// The memory CSV columns, in order: a stable contract.
pub const MEMORY_CSV_HEADER: [&str; 15] = [
    "taken",
    "node",
    "zone",
    "managed",
    "free",
    "min",
    "low",
    "high",
    "boost",
    "free_above_min",
    "largest_free_order",
    "free_blocks",
    "highatomic_blocks",
    "min_free_kbytes",
    "watermark_scale_factor",
];

/// Writing summaries failed.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error(
        "{name}: not a pagefail memory CSV: the header must start with\n  {expected}\nbut is\n  {found}"
    )]
    Header {
        name: String,
        expected: String,
        found: String,
    },
    #[error("{name}: row {line} does not parse: {source}")]
    Row {
        name: String,
        line: usize,
        source: csv::Error,
    },
    #[error("writing memory CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing memory JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("writing memory output: {0}")]
    Io(#[from] std::io::Error),
}

/// Write summaries as CSV; the header first when `header` is set (a new file).
///
/// # Errors
/// I/O errors of the writer.
pub fn write_memory_csv<W: Write>(
    out: W,
    rows: &[SnapshotSummary],
    header: bool,
) -> Result<(), ExportError> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    if header {
        w.write_record(MEMORY_CSV_HEADER)?;
    }
    for row in rows {
        w.serialize(row)?;
    }
    w.flush()?;
    Ok(())
}

/// Write summaries as JSON lines, one object per zone with the CSV's fields.
///
/// # Errors
/// I/O errors of the writer.
pub fn write_memory_json_lines<W: Write>(
    mut out: W,
    rows: &[SnapshotSummary],
) -> Result<(), ExportError> {
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Read a memory CSV. Columns appended after [`MEMORY_CSV_HEADER`] are
/// ignored, so files of later versions still read.
///
/// # Errors
/// When the header does not start with the contract's columns, or a row
/// does not parse (the error names the line).
pub fn read_memory_csv(name: &str, input: impl Read) -> Result<Vec<SnapshotSummary>, ExportError> {
    let mut reader = csv::Reader::from_reader(input);
    let header = reader.headers()?.clone();
    let found: Vec<&str> = header.iter().collect();
    if !found.starts_with(&MEMORY_CSV_HEADER) {
        return Err(ExportError::Header {
            name: name.to_owned(),
            expected: MEMORY_CSV_HEADER.join(","),
            found: found.join(","),
        });
    }
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| {
            row.map_err(|source| ExportError::Row {
                name: name.to_owned(),
                line: i + 2,
                source,
            })
        })
        .collect()
}
