//! The running kernel's drop reasons and which of them pagefail counts.
//!
//! The numbers of `enum skb_drop_reason` move between kernel versions (new
//! reasons are inserted in the middle of the list), so they are never
//! written down here: they are read from the `__print_symbolic` table in the
//! `skb:kfree_skb` format file, where the kernel has replaced each enum
//! name by its value. A kernel whose tracepoint has no `reason` field
//! (before 5.17) has no drop reasons.
//!
//! The memory-related reasons are chosen by name, from the enum's own
//! documentation (`include/net/dropreason-core.h`, 6.1 to 6.18;
//! `include/linux/skbuff.h` before 6.0): see [`MEMORY_REASONS`].

use std::collections::BTreeMap;

use thiserror::Error;
use tracer_common::{DROP_MASK_WORDS, DROP_SLOTS, drop_slot};

/// The reasons the kernel attributes to memory, with why. A name the running
/// kernel does not have is skipped.
///
/// Left out on purpose: `SOCKET_RCVBUFF` and `TCP_OFO_QUEUE_PRUNE` (a socket's
/// own receive buffer is full: the application reads too slowly, a per-socket
/// limit, not memory), `FULL_RING`, `CPU_BACKLOG`, `QDISC_*`,
/// `NEIGH_QUEUEFULL` (queue lengths), `SKB_GSO_SEG` and `SKB_UCOPY_FAULT`
/// (segmentation and copy errors, memory only sometimes), `PKT_TOO_SMALL` and
/// the other header checks.
pub const MEMORY_REASONS: [(&str, &str); 4] = [
    (
        "NOMEM",
        "an allocation failed (skb, clone, header expansion, fragment list)",
    ),
    (
        "NEIGH_CREATEFAIL",
        "no neighbour entry could be created: an allocation failed or the table is full (gc_thresh3)",
    ),
    (
        "PROTO_MEM",
        "the protocol's memory limit refused the charge (tcp_mem / udp_mem under pressure)",
    ),
    (
        "PFMEMALLOC",
        "a packet allocated from the emergency reserves reached a socket that may not use them",
    ),
];

/// Which reasons are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DropReasons {
    /// The memory-related reasons ([`MEMORY_REASONS`]).
    #[default]
    Memory,
    /// Every reason (costs a stack walk per dropped packet; for tests and
    /// short investigations).
    All,
    /// No drop tracing.
    Off,
}

/// Why the running kernel's drop reasons cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReasonError {
    #[error("the skb:kfree_skb tracepoint has no `reason` field (drop reasons need Linux 5.17+)")]
    NoReasonField,
    #[error("the skb:kfree_skb format has no __print_symbolic table of reasons")]
    NoTable,
}

/// The running kernel's drop reasons: number to name (`NOMEM`, without the
/// `SKB_DROP_REASON_` prefix, as the format file spells them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonTable {
    names: BTreeMap<u32, String>,
}

impl ReasonTable {
    /// Parse the `skb:kfree_skb` format file.
    ///
    /// # Errors
    /// No `reason` field (kernel before 5.17), or no table of names.
    pub fn from_format(format: &str) -> Result<Self, ReasonError> {
        let has_field = format.lines().any(|l| {
            l.trim_start().starts_with("field:")
                && l.split(';')
                    .next()
                    .is_some_and(|f| f.split_whitespace().last() == Some("reason"))
        });
        if !has_field {
            return Err(ReasonError::NoReasonField);
        }
        let start = format
            .find("__print_symbolic(REC->reason")
            .ok_or(ReasonError::NoTable)?;
        let mut names = BTreeMap::new();
        let mut rest = &format[start..];
        // Entries: `{ 2, "NOT_SPECIFIED" }`; an entry whose value the kernel
        // left as a name (no number) is skipped.
        while let Some(open) = rest.find('{') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find('}') else { break };
            let entry = &rest[..close];
            rest = &rest[close + 1..];
            let Some((value, name)) = entry.split_once(',') else {
                continue;
            };
            let value = value.trim();
            let parsed = value.strip_prefix("0x").map_or_else(
                || value.parse::<u32>().ok(),
                |hex| u32::from_str_radix(hex, 16).ok(),
            );
            let name = name.trim().trim_matches('"');
            if let Some(v) = parsed
                && !name.is_empty()
            {
                names.insert(v, name.to_owned());
            }
        }
        if names.is_empty() {
            return Err(ReasonError::NoTable);
        }
        Ok(Self { names })
    }

    /// The name of a reason number (`reason#N` for one the table lacks).
    #[must_use]
    pub fn name(&self, reason: u32) -> String {
        self.names
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| format!("reason#{reason}"))
    }

    /// The number of a reason name.
    #[must_use]
    pub fn number(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find_map(|(n, v)| (v == name).then_some(*n))
    }

    /// The reasons counted for `which`: number and name, in number order.
    #[must_use]
    pub fn counted(&self, which: DropReasons) -> Vec<(u32, String)> {
        match which {
            DropReasons::Off => Vec::new(),
            DropReasons::All => self.names.iter().map(|(n, v)| (*n, v.clone())).collect(),
            DropReasons::Memory => {
                let mut v: Vec<(u32, String)> = MEMORY_REASONS
                    .iter()
                    .filter_map(|(name, _)| Some((self.number(name)?, (*name).to_owned())))
                    .collect();
                v.sort_unstable();
                v
            }
        }
    }
}

/// The kernel program's bit mask for `which`: the slots of the counted
/// reasons; for [`DropReasons::All`] every slot (reasons beyond the table
/// too, in the last slot).
#[must_use]
pub fn mask(table: &ReasonTable, which: DropReasons) -> [u64; DROP_MASK_WORDS] {
    let mut m = [0u64; DROP_MASK_WORDS];
    match which {
        DropReasons::Off => {}
        DropReasons::All => m = [u64::MAX; DROP_MASK_WORDS],
        DropReasons::Memory => {
            for (n, _) in table.counted(which) {
                let slot = drop_slot(n);
                // The last slot is shared by every larger value: a memory
                // reason never lands there (the core enum is far smaller).
                if slot < DROP_SLOTS - 1 {
                    m[(slot / 64) as usize] |= 1 << (slot % 64);
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_618: &str = "name: kfree_skb\nID: 2310\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
        \tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n\n\
        print fmt: \"skbaddr=%p reason: %s\", REC->skbaddr, __print_symbolic(REC->reason, \
        { 2, \"NOT_SPECIFIED\" }, { 3, \"NO_SOCKET\" }, { 20, \"PROTO_MEM\" }, \
        { 57, \"NEIGH_CREATEFAIL\" }, { 81, \"NOMEM\" }, { 0x7c, \"PFMEMALLOC\" }, \
        { SKB_DROP_REASON_UNRESOLVED, \"UNRESOLVED\" }, { 130, \"MAX\" })\n";

    const FORMAT_510: &str = "name: kfree_skb\nformat:\n\
        \tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
        \tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\n\
        print fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location\n";

    #[test]
    fn reasons_are_read_from_the_format_not_assumed() {
        let t = ReasonTable::from_format(FORMAT_618).unwrap();
        assert_eq!(t.number("NOMEM"), Some(81));
        assert_eq!(t.number("PFMEMALLOC"), Some(124));
        assert_eq!(t.name(3), "NO_SOCKET");
        assert_eq!(t.name(99), "reason#99");
        assert_eq!(t.number("UNRESOLVED"), None);
        let mem = t.counted(DropReasons::Memory);
        let names: Vec<&str> = mem.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            ["PROTO_MEM", "NEIGH_CREATEFAIL", "NOMEM", "PFMEMALLOC"]
        );
        assert_eq!(t.counted(DropReasons::All).len(), 7);
        assert!(t.counted(DropReasons::Off).is_empty());
    }

    #[test]
    fn the_mask_holds_exactly_the_counted_reasons() {
        let t = ReasonTable::from_format(FORMAT_618).unwrap();
        let m = mask(&t, DropReasons::Memory);
        let bit = |n: u32| m[(n / 64) as usize] >> (n % 64) & 1 == 1;
        for n in 0..DROP_SLOTS {
            assert_eq!(bit(n), [20, 57, 81, 124].contains(&n), "slot {n}");
        }
        assert_eq!(mask(&t, DropReasons::Off), [0; DROP_MASK_WORDS]);
        assert_eq!(mask(&t, DropReasons::All), [u64::MAX; DROP_MASK_WORDS]);
    }

    #[test]
    fn kernels_without_reasons_say_so() {
        assert_eq!(
            ReasonTable::from_format(FORMAT_510),
            Err(ReasonError::NoReasonField)
        );
        let no_table = FORMAT_618.split("print fmt").next().unwrap();
        assert_eq!(
            ReasonTable::from_format(no_table),
            Err(ReasonError::NoTable)
        );
    }
}
