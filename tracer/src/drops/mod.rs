//! What the failures cost: the packet drops the kernel itself attributes to
//! memory in the same window, shown beside the failures.
//!
//! Three sources:
//! - `skb:kfree_skb` drop reasons (5.17+), counted in the kernel by reason
//!   ([`reasons`]) and attributed like failures (task, context and network
//!   path from the kernel stack, plus the function that dropped);
//! - the TCP counters that show lost connections and segments
//!   (`TcpExt: ListenDrops ListenOverflows TCPBacklogDrop`, and the
//!   per-CPU backlog drops of `softnet_stat`), as deltas over the window;
//! - per-queue `rx-alloc-fail` of the netdev netlink family (6.9+), see
//!   [`qstats`].

pub mod qstats;
pub mod reasons;
pub mod render;

use std::collections::HashMap;

use serde::Serialize;
use tracer_common::DropKey;

use crate::{
    classify::{Classifier, Context, Frame, context_of},
    memory::netdrops::NetDrops,
    probe::{DropCounts, DropProbe, ProbeError, Tracer},
    symbolize::Kallsyms,
};

/// The drop state at one moment; reports are taken between two marks.
#[derive(Debug, Clone)]
pub struct Mark {
    counts: Option<DropCounts>,
    sites: HashMap<DropKey, u64>,
    /// Frames by stack id, for the entries in `sites`.
    stacks: HashMap<i32, Vec<u64>>,
    net: Option<NetDrops>,
    /// The queue counters, or why they could not be read.
    rx_alloc_fail: Result<qstats::RxAllocFail, String>,
}

impl Mark {
    /// Read every source now. The TCP and queue counters are best effort:
    /// a source that cannot be read is left out of the report.
    ///
    /// # Errors
    /// When a drop map cannot be read.
    pub fn take(tracer: &Tracer) -> Result<Self, ProbeError> {
        let counts = tracer.drop_counts()?;
        let mut sites = HashMap::new();
        let mut stacks = HashMap::new();
        if counts.is_some() {
            for s in tracer.drop_sites()? {
                sites.insert(s.key, s.count);
                stacks.entry(s.key.stack_id).or_insert(s.stack);
            }
        }
        Ok(Self {
            counts,
            sites,
            stacks,
            net: NetDrops::read().ok(),
            rx_alloc_fail: qstats::RxAllocFail::read().map_err(|e| e.to_string()),
        })
    }

    /// Only the per-reason counters and the TCP counters (for the live view:
    /// a handful of map reads, no stack lookups).
    ///
    /// # Errors
    /// When a drop map cannot be read.
    pub fn take_counts(tracer: &Tracer) -> Result<Self, ProbeError> {
        Ok(Self {
            counts: tracer.drop_counts()?,
            sites: HashMap::new(),
            stacks: HashMap::new(),
            net: NetDrops::read().ok(),
            rx_alloc_fail: Err("not read for the live view".to_owned()),
        })
    }
}

/// Whether drop reasons are counted in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Status {
    /// Counting the memory reasons (`memory`) or every reason (`all`).
    Counting(String),
    Unavailable(String),
    Disabled,
}

/// One attributed group of drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropSite {
    pub reason: String,
    pub comm: String,
    pub tgid: u32,
    pub context: Context,
    pub path: String,
    /// The function that dropped the packet (the caller of the skb free).
    pub site: String,
    pub drops: u64,
}

/// The drops of one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropReport {
    pub status: Status,
    /// Counted reasons by name, in reason-number order, zeros included.
    pub reasons: Vec<(String, u64)>,
    /// Drops that found the attribution map full: in `reasons`, not in `sites`.
    pub site_lost: u64,
    /// Drops attributed without a stack.
    pub stack_errors: u64,
    /// `kfree_skb` events the kernel kept from the program (nested on a CPU):
    /// their reasons are unknown. `None` where the kernel does not count them.
    pub unseen: Option<u64>,
    /// Attributed drops, most first.
    pub sites: Vec<DropSite>,
    /// TCP and backlog drop counters over the window.
    pub tcp: Option<NetDrops>,
    /// `rx-alloc-fail` per queue over the window (6.9+ drivers that report
    /// it), or why there is none.
    pub rx_alloc_fail: Result<Vec<qstats::QueueCount>, String>,
}

impl DropReport {
    /// Counted drops by reason name, for the summary JSON.
    #[must_use]
    pub fn by_reason(&self) -> std::collections::BTreeMap<String, u64> {
        self.reasons.iter().cloned().collect()
    }

    /// All counted drops.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.reasons.iter().map(|(_, n)| n).sum()
    }
}

/// The report of what happened between `from` and `to`.
#[must_use]
pub fn report(
    tracer: &Tracer,
    from: &Mark,
    to: &Mark,
    ksyms: &Kallsyms,
    classifier: &Classifier,
) -> DropReport {
    let status = match &tracer.drops {
        DropProbe::Attached(a) => Status::Counting(
            match a.which {
                reasons::DropReasons::All => "all",
                _ => "memory",
            }
            .to_owned(),
        ),
        DropProbe::Unavailable(why) => Status::Unavailable(why.clone()),
        DropProbe::Disabled => Status::Disabled,
    };
    let delta = match (&to.counts, &from.counts) {
        (Some(a), Some(b)) => a.since(b),
        (Some(a), None) => a.clone(),
        _ => DropCounts::default(),
    };
    let (reasons, sites) = match &tracer.drops {
        DropProbe::Attached(a) => {
            let mut reasons: Vec<(String, u64)> = delta
                .by_reason
                .iter()
                .map(|(slot, n)| (slot_name(&a.table, &a.counted, *slot), *n))
                .collect();
            if a.which == reasons::DropReasons::All {
                reasons.retain(|(_, n)| *n > 0);
            }
            let sites = attribute(&a.table, from, to, ksyms, classifier);
            (reasons, sites)
        }
        _ => (Vec::new(), Vec::new()),
    };
    DropReport {
        status,
        reasons,
        site_lost: delta.site_lost,
        stack_errors: delta.stack_errors,
        unseen: delta.unseen,
        sites,
        tcp: to.net.zip(from.net.as_ref()).map(|(a, b)| a.since(b)),
        rx_alloc_fail: match (&to.rx_alloc_fail, &from.rx_alloc_fail) {
            (Ok(a), Ok(b)) => Ok(a.since(b)),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        },
    }
}

fn slot_name(table: &reasons::ReasonTable, counted: &[(u32, String)], slot: u32) -> String {
    if slot == tracer_common::DROP_SLOTS - 1 && !counted.iter().any(|(n, _)| *n == slot) {
        return format!("reason>={slot}");
    }
    table.name(slot)
}

/// Group the attribution entries that moved between the marks by reason,
/// task, context, path and dropping function, most drops first.
fn attribute(
    table: &reasons::ReasonTable,
    from: &Mark,
    to: &Mark,
    ksyms: &Kallsyms,
    classifier: &Classifier,
) -> Vec<DropSite> {
    let mut described: HashMap<i32, (Context, String, String)> = HashMap::new();
    let mut grouped: HashMap<(u32, String, u32, Context, String, String), u64> = HashMap::new();
    for (key, n) in &to.sites {
        let d = n.saturating_sub(from.sites.get(key).copied().unwrap_or(0));
        if d == 0 {
            continue;
        }
        let (context, path, site) = described
            .entry(key.stack_id)
            .or_insert_with(|| match to.stacks.get(&key.stack_id) {
                Some(stack) if !stack.is_empty() => describe(stack, ksyms, classifier),
                _ => (Context::Unknown, String::new(), String::new()),
            })
            .clone();
        *grouped
            .entry((key.reason, comm(&key.comm), key.tgid, context, path, site))
            .or_default() += d;
    }
    let mut out: Vec<DropSite> = grouped
        .into_iter()
        .map(
            |((reason, comm, tgid, context, path, site), drops)| DropSite {
                reason: table.name(reason),
                comm,
                tgid,
                context,
                path,
                site,
                drops,
            },
        )
        .collect();
    out.sort_by(|a, b| {
        b.drops
            .cmp(&a.drops)
            .then_with(|| (&a.reason, &a.comm, a.tgid).cmp(&(&b.reason, &b.comm, b.tgid)))
    });
    out
}

fn comm(raw: &[u8]) -> String {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..len]).into_owned()
}

/// Frames of the skb free itself and of the tracing machinery, skipped to
/// name the function that dropped the packet.
fn is_free_frame(name: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "bpf_",
        "__bpf",
        "__traceiter_",
        "trace_",
        "kfree_skb",
        "__kfree_skb",
        "sk_skb_reason_drop",
        "skb_release",
        "__dev_kfree_skb",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Context, path and dropping function of a drop stack.
fn describe(stack: &[u64], ksyms: &Kallsyms, classifier: &Classifier) -> (Context, String, String) {
    let frames = ksyms.symbolize_stack(stack);
    let view: Vec<Frame<'_>> = frames
        .iter()
        .map(|f| Frame {
            function: &f.name,
            module: f.module.as_deref(),
        })
        .collect();
    let site = frames
        .iter()
        .find(|f| !is_free_frame(&f.name))
        .map_or_else(String::new, |f| f.name.clone());
    (context_of(&view), classifier.paths(&view).to_string(), site)
}
