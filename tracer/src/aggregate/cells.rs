//! The per-record lookup and count: where a record counts.
//!
//! A record's *cell* is everything of it its row is told apart by (task name,
//! process, as far as rows are grouped by them; gfp, order and whether it
//! reached `warn_alloc`, which decide its cause and outcome), its cgroup id
//! and its stack id. A cell always lands in the same row: rows are never removed
//! within a window, a key refused by the cap stays refused, and the stack id
//! decides the stack's class. So the row is worked out on a cell's first
//! record (the row index, the cap, the printable key, the cgroup) and every
//! record is counted in its cell: one cache line, probed and written. A
//! row's counts are the sums of its cells', a row's failures with a stack
//! those of its cells with that stack id.
//!
//! The task name, gfp, order and cgroup of a record take few distinct values:
//! they are interned together as the record's *attributes* (a table small
//! enough to stay in cache), so a cell's key is three numbers and a cell with
//! its counts fills one cache line.
//!
//! Both tables hold a bounded number of entries (records beyond the key cap
//! could otherwise add cells without end, one per process); records that find
//! no room are counted the slower way (see [`super::Aggregator`]).

use hashbrown::HashTable;
use tracer_common::{EVENT_WARN_ALLOC, FailureEvent, TASK_COMM_LEN};

use super::{
    RowStats,
    group::{Dim, GroupBy},
    hash::hash_words,
};

/// A record's attributes: the task name as far as rows are grouped by it
/// (zero otherwise), and always the cgroup id (a row shows its cgroup only
/// while all its records share one), the gfp mask, the order and whether it
/// reached `warn_alloc`: a failure's cause and outcome are worked out from
/// them once per cell, so a cell's records must share them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attrs {
    /// The task name up to its NUL, zero-padded, as a little-endian number.
    comm: u128,
    gfp: u64,
    cgroup_id: u64,
    order: u32,
    /// The record's `EVENT_WARN_ALLOC` bit.
    warn_alloc: u32,
}

impl Attrs {
    #[inline]
    fn of(ev: &FailureEvent, by: GroupBy) -> Self {
        Self {
            comm: if by.has(Dim::Comm) { comm(&ev.comm) } else { 0 },
            gfp: ev.gfp,
            cgroup_id: ev.cgroup_id,
            order: ev.order,
            warn_alloc: ev.flags & EVENT_WARN_ALLOC,
        }
    }

    #[inline]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the 128-bit comm is hashed as its low and high halves"
    )]
    fn hash(&self) -> u64 {
        hash_words(&[
            self.comm as u64,
            (self.comm >> 64) as u64,
            self.gfp,
            self.cgroup_id,
            u64::from(self.order) | (u64::from(self.warn_alloc) << 32),
        ])
    }
}

/// A task name up to its first NUL, the bytes after it zeroed, as a
/// little-endian number: without a loop or a call.
#[inline]
fn comm(bytes: &[u8; TASK_COMM_LEN]) -> u128 {
    const ONES: u128 = u128::MAX / 0xff;
    let x = u128::from_le_bytes(*bytes);
    // The top bit of each zero byte; bytes above the first zero byte may be
    // flagged wrongly (a borrow), the first one never is.
    let zeros = x.wrapping_sub(ONES) & !x & (ONES << 7);
    if zeros == 0 {
        return x;
    }
    let first = zeros.trailing_zeros() - 7;
    x & ((1u128 << first) - 1)
}

/// A cell's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CellKey {
    /// Interned [`Attrs`].
    attrs: u32,
    /// Zero when not grouped by pid.
    tgid: u32,
    stack: u32,
}

impl CellKey {
    #[inline]
    fn hash(&self) -> u64 {
        hash_words(&[
            u64::from(self.attrs) | u64::from(self.tgid) << 32,
            u64::from(self.stack),
        ])
    }
}

/// Where a record counts: its row, and whether the key cap sent it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub row: u32,
    /// The row is an `[other]` row the key cap sent the record to.
    pub capped: bool,
}

/// One cell: its key, its place, its counts.
#[derive(Debug, Clone)]
// A cell is probed and updated on every record of it: one cache line each.
#[repr(align(64))]
struct Cell {
    key: CellKey,
    place: Place,
    stats: RowStats,
}

const _: () = assert!(size_of::<Cell>() == 64, "a cell fills one cache line");

/// What a cell counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct CellStats<'a> {
    pub row: u32,
    pub stack: u32,
    pub stats: &'a RowStats,
}

/// A record whose cell is not in the table: what [`Cells::insert`] needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Vacant {
    attrs: Result<u32, (u64, Attrs)>,
    tgid: u32,
    stack: u32,
}

/// The cells of a window.
#[derive(Debug)]
pub(super) struct Cells {
    /// Interned attributes: `(attributes, id)`, ids in order of arrival.
    attrs: HashTable<(Attrs, u32)>,
    #[expect(
        clippy::struct_field_names,
        reason = "the table of cells; `Cells` also holds the interned attributes"
    )]
    cells: HashTable<Cell>,
    /// Entries held at most, in each table.
    limit: usize,
}

impl Cells {
    /// Tables of at most `limit` attributes and `limit` cells.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            attrs: HashTable::new(),
            cells: HashTable::new(),
            limit,
        }
    }

    /// Count a record with stack id `stack` in its cell and say where it
    /// went; or, when its cell is not in the table, what [`Cells::insert`]
    /// needs.
    #[inline]
    pub fn record(
        &mut self,
        ev: &FailureEvent,
        stack: u32,
        by: GroupBy,
        warned: bool,
    ) -> Result<Place, Vacant> {
        let attrs = Attrs::of(ev, by);
        let hash = attrs.hash();
        let tgid = if by.has(Dim::Pid) { ev.tgid } else { 0 };
        let Some(&(_, id)) = self.attrs.find(hash, |(a, _)| *a == attrs) else {
            return Err(Vacant {
                attrs: Err((hash, attrs)),
                tgid,
                stack,
            });
        };
        let key = CellKey {
            attrs: id,
            tgid,
            stack,
        };
        match self.cells.find_mut(key.hash(), |c| c.key == key) {
            Some(cell) => {
                cell.stats.record(ev.ts_boot_ns, warned);
                Ok(cell.place)
            }
            None => Err(Vacant {
                attrs: Ok(id),
                tgid,
                stack,
            }),
        }
    }

    /// Add the cell of a record [`Cells::record`] found no cell for, with
    /// that record counted in it. `false` when a table is full: the caller
    /// counts the record.
    pub fn insert(&mut self, vacant: Vacant, place: Place, ts: u64, warned: bool) -> bool {
        if self.cells.len() >= self.limit {
            return false;
        }
        let attrs = match vacant.attrs {
            Ok(id) => id,
            Err(_) if self.attrs.len() >= self.limit => return false,
            Err((hash, attrs)) => {
                let id = u32::try_from(self.attrs.len()).unwrap_or(u32::MAX);
                self.attrs
                    .insert_unique(hash, (attrs, id), |(a, _)| a.hash());
                id
            }
        };
        let cell = Cell {
            key: CellKey {
                attrs,
                tgid: vacant.tgid,
                stack: vacant.stack,
            },
            place,
            stats: RowStats::one(ts, warned),
        };
        self.cells
            .insert_unique(cell.key.hash(), cell, |c| c.key.hash());
        true
    }

    /// Every cell's row, stack and counts, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = CellStats<'_>> {
        self.cells.iter().map(|c| CellStats {
            row: c.place.row,
            stack: c.key.stack,
            stats: &c.stats,
        })
    }

    /// Reset every cell's per-interval count.
    pub fn start_interval(&mut self) {
        for cell in &mut self.cells {
            cell.stats.interval_failures = 0;
        }
    }

    /// Forget every cell (the memory is kept for the next window).
    pub fn clear(&mut self) {
        self.attrs.clear();
        self.cells.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_keeps_the_name_up_to_its_nul() {
        let name = |s: &[u8]| {
            let mut b = [0u8; TASK_COMM_LEN];
            b[..s.len()].copy_from_slice(s);
            b
        };
        let reference = |b: &[u8; TASK_COMM_LEN]| {
            let len = b.iter().position(|&c| c == 0).unwrap_or(TASK_COMM_LEN);
            let mut out = [0u8; TASK_COMM_LEN];
            out[..len].copy_from_slice(&b[..len]);
            u128::from_le_bytes(out)
        };
        let mut cases = vec![
            name(b""),
            name(b"x"),
            name(b"nginx"),
            name(b"0123456789abcdef"),
            name(b"0123456789abcde"),
            // Garbage after the NUL, and bytes that borrow in the zero test.
            name(b"ab\0\x01\x01\xff\x80zz"),
            name(b"\x01\0\x01"),
            name(b"\0\xff\xff"),
            name(b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"),
            name(b"\xff\xfe\x01\x00\x01"),
        ];
        for i in 0..TASK_COMM_LEN {
            let mut b = [0x01u8; TASK_COMM_LEN];
            b[i] = 0;
            cases.push(b);
            let mut b = [0xffu8; TASK_COMM_LEN];
            b[i] = 0;
            cases.push(b);
        }
        for b in &cases {
            assert_eq!(comm(b), reference(b), "{b:?}");
        }
    }
}
