//! Rows rebuilt from the kernel's table of lost failures.
//!
//! A failure that finds the ring buffer full (the reader did not run: CPU
//! starved, stopped, or just slower than a storm) is counted in the
//! kernel's per-CPU table by everything its row is told apart by (task,
//! process, cgroup, order, gfp, stack). The table is cumulative; each drain
//! adds what every key gained since the previous drain to the rows, so a
//! full ring costs the per-record detail, never a row's count.
//!
//! Times: the kernel keeps each key's first and last failure per CPU. The
//! first drain of a key gives its exact first time; a later drain of the
//! same key knows only the last time of what it adds, which then stands
//! for both (a row's first seen may be later than its true first failure
//! when its failures were rebuilt in several drains).

use std::collections::HashMap;

use tracer_common::{FailureEvent, LostCount, LostKey, MAX_STACK_DEPTH};

use crate::{
    aggregate::{Aggregator, RowStats},
    probe::{ProbeError, Tracer},
};

/// What was taken from the kernel's table so far.
#[derive(Debug, Default)]
pub struct LostRows {
    /// Each key's cumulative counts at the last drain.
    seen: HashMap<LostKey, LostCount>,
    /// Frames per stack id (ids are never reused: the kernel keeps a
    /// bucket's first stack).
    stacks: HashMap<i32, Vec<u64>>,
    /// Failures added to rows so far.
    pub rebuilt: u64,
}

impl LostRows {
    /// Add what the kernel's table gained since the last drain to `agg`'s
    /// rows. Returns the failures added.
    ///
    /// # Errors
    /// When the table cannot be read.
    pub fn drain(&mut self, tracer: &Tracer, agg: &mut Aggregator) -> Result<u64, ProbeError> {
        let table = tracer.lost_table()?;
        Ok(self.add(table, tracer, agg))
    }

    /// Add the gains of `table` (as [`Tracer::lost_table`] read it) to
    /// `agg`'s rows. Returns the failures added.
    pub fn add(
        &mut self,
        table: Vec<(LostKey, LostCount)>,
        tracer: &Tracer,
        agg: &mut Aggregator,
    ) -> u64 {
        let mut added = 0;
        for (key, now) in table {
            let before = self.seen.get(&key).copied().unwrap_or_default();
            let failures = now.failures.saturating_sub(before.failures);
            if failures == 0 {
                continue;
            }
            let warn_alloc = now.warn_alloc.saturating_sub(before.warn_alloc);
            let warned = if agg.gfp().is_nowarn(key.gfp) {
                0
            } else {
                warn_alloc
            };
            let first = if before.failures == 0 {
                now.first_ns
            } else {
                now.last_ns
            };
            let frames = self
                .stacks
                .entry(key.stack_id)
                .or_insert_with(|| tracer.lost_stack(key.stack_id));
            let ev = event_of(&key, frames, first);
            agg.add_rebuilt(
                &ev,
                &RowStats::counted(failures, warned, first, now.last_ns),
            );
            self.seen.insert(key, now);
            added += failures;
        }
        self.rebuilt += added;
        added
    }
}

/// A record standing for a key's failures: the key's fields, its stack (as
/// many frames as a record carries, so the same stack gets the same id as
/// in records), no thread id or CPU (rows use neither).
fn event_of(key: &LostKey, frames: &[u64], ts: u64) -> FailureEvent {
    let mut stack = [0u64; MAX_STACK_DEPTH];
    let n = frames.len().min(MAX_STACK_DEPTH);
    stack[..n].copy_from_slice(&frames[..n]);
    FailureEvent {
        ts_boot_ns: ts,
        cgroup_id: key.cgroup_id,
        gfp: key.gfp,
        pid: key.tgid,
        tgid: key.tgid,
        order: key.order,
        migratetype: 0,
        cpu: 0,
        flags: 0,
        stack_len: u32::try_from(n).unwrap_or(0),
        _pad: 0,
        comm: key.comm,
        stack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_becomes_a_record_with_its_stack_cut_to_a_records_depth() {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"ksoft");
        let key = LostKey {
            cgroup_id: 9,
            gfp: 0x820,
            tgid: 42,
            order: 3,
            stack_id: 7,
            _pad: 0,
            comm,
        };
        let frames: Vec<u64> = (1..=100).collect();
        let ev = event_of(&key, &frames, 55);
        assert_eq!((ev.tgid, ev.order, ev.gfp, ev.cgroup_id), (42, 3, 0x820, 9));
        assert_eq!(ev.ts_boot_ns, 55);
        assert_eq!(crate::events::comm(&ev), "ksoft");
        assert_eq!(crate::events::stack(&ev).len(), MAX_STACK_DEPTH);
        assert_eq!(crate::events::stack(&ev)[0], 1);
        let none = event_of(&key, &[], 1);
        assert!(crate::events::stack(&none).is_empty());
    }
}
