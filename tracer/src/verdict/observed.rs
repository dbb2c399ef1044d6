//! Fallbacks seen to work (`--observe-fallbacks`): the outcome rules say
//! what a call site does after a failure; the kernel can also show it.
//!
//! # How
//! With the option the kernel program awaits, after each delivered failure,
//! the first allocation on the same CPU by the same thread with a smaller
//! order that succeeds within [`WINDOW`], and sends that allocation's stack
//! in a follow record (`EVENT_FOLLOW`; one per failure at most, none when
//! nothing smaller succeeds in time). Here the two stacks are compared from
//! the outermost frame in: a caller that falls back calls the allocator
//! again from the same function (slab's `allocate_slab` at its minimum
//! order, kvmalloc's vmalloc, `page_frag`'s order-0 refill), so the stacks
//! share every outer frame and part inside one function, which is the call
//! site. A follow record whose stack parts from the failure's in two
//! different functions is something else the thread did next (the packet
//! path going on after a dropped skb), and is not counted.
//!
//! # How exact
//! A seen fallback is a smaller success from the failing function right
//! after the failure: it shows the fallback was taken and its first
//! allocation worked, not that the whole fallback did (a vmalloc can still
//! fail on a later page, which is then a failure of its own). Not seen are
//! fallbacks that allocate nothing smaller (a retry later from a timer, a
//! caller that keeps what it had), that run on another CPU or thread or
//! after the window, that leave the failing function by a tail call (then
//! the frames part in two functions), failures whose stack filled every
//! slot (their outer frames are missing), and follow records the ring
//! buffer had no room for (counted: `lost`). So "seen" is a lower bound of
//! the fallbacks that worked, and a terminal or unknown call site seen to
//! fall back is a reason to read its rule again.

use std::{collections::HashMap, time::Duration};

use super::{Outcome, base_name};
use crate::symbolize::is_allocator_or_tracing_frame;

/// How long after a failure a smaller success is awaited.
pub const WINDOW: Duration = Duration::from_millis(1);

/// A delivered failure whose follow record may still come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awaited {
    pub ts_boot_ns: u64,
    /// Its stack id.
    pub stack: u32,
    pub outcome: Outcome,
    pub gfp: u64,
    pub order: u32,
}

/// Failures and seen fallbacks of one outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    /// Delivered failures while observing.
    pub failures: u64,
    /// Of those, failures seen to fall back at their own call site.
    pub seen: u64,
}

/// What the follow records showed, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FallbacksSeen {
    /// The window a smaller success was awaited in, microseconds.
    pub window_us: u64,
    /// By outcome (`terminal`, `fallback`, `unknown`).
    pub by_outcome: std::collections::BTreeMap<String, Seen>,
    /// Follow records that parted from their failure's stack in two
    /// different functions: something else the thread did next.
    pub elsewhere: u64,
    /// Follow records the ring buffer had no room for.
    pub lost: u64,
    /// Call sites seen to fall back, most first (at most [`TOP_SITES`]):
    /// `function`, the outcome its rules give, and how often.
    pub sites: Vec<SeenSite>,
}

impl std::fmt::Display for FallbacksSeen {
    /// Two lines: the share seen per outcome, then the sites.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fallbacks seen (a smaller success from the failing function within {} us):",
            self.window_us
        )?;
        for (outcome, s) in &self.by_outcome {
            if s.failures > 0 {
                let pct = 100.0 * s.seen as f64 / s.failures as f64;
                write!(f, " {outcome} {} of {} ({pct:.1} %),", s.seen, s.failures)?;
            }
        }
        writeln!(
            f,
            " elsewhere {}, follow records lost {}",
            self.elsewhere, self.lost
        )?;
        if !self.sites.is_empty() {
            let sites: Vec<String> = self
                .sites
                .iter()
                .map(|s| format!("{} ({}) {}", s.function, s.outcome, s.seen))
                .collect();
            writeln!(f, "  seen at: {}", sites.join(", "))?;
        }
        Ok(())
    }
}

/// One call site seen to fall back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeenSite {
    pub function: String,
    pub outcome: String,
    pub seen: u64,
}

/// Sites listed in [`FallbacksSeen::sites`].
pub const TOP_SITES: usize = 10;

/// Distinct sites remembered; beyond it new sites count only by outcome.
const SITE_CAP: usize = 1024;

/// The follow-record bookkeeping of a run.
#[derive(Debug, Default)]
pub struct Observer {
    /// By CPU: the last delivered failure.
    awaited: Vec<Option<Awaited>>,
    by_outcome: [Seen; 3],
    elsewhere: u64,
    /// Follow records with no awaited failure of their time on their CPU.
    pub unmatched: u64,
    sites: HashMap<(Box<str>, Outcome), u64>,
}

fn slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Terminal => 0,
        Outcome::Fallback => 1,
        Outcome::Unknown => 2,
    }
}

impl Observer {
    /// A delivered failure on `cpu`: the one a follow record from that CPU
    /// refers to, until the next.
    #[inline]
    pub fn note(&mut self, cpu: u32, failure: Awaited) {
        self.by_outcome[slot(failure.outcome)].failures += 1;
        let cpu = cpu as usize;
        if cpu >= self.awaited.len() {
            self.awaited.resize(cpu + 1, None);
        }
        self.awaited[cpu] = Some(failure);
    }

    /// The failure a follow record from `cpu` stamped `ts_boot_ns` refers
    /// to; taken, so a record counts once.
    pub fn take(&mut self, cpu: u32, ts_boot_ns: u64) -> Option<Awaited> {
        let hit = self
            .awaited
            .get_mut(cpu as usize)
            .and_then(|slot| match *slot {
                Some(a) if a.ts_boot_ns == ts_boot_ns => slot.take(),
                _ => None,
            });
        if hit.is_none() {
            self.unmatched += 1;
        }
        hit
    }

    /// Count the verdict of [`call_site`] for a failure of `outcome`.
    pub fn count(&mut self, outcome: Outcome, site: Option<&str>) {
        match site {
            Some(function) => {
                self.by_outcome[slot(outcome)].seen += 1;
                let key = (Box::<str>::from(function), outcome);
                if let Some(n) = self.sites.get_mut(&key) {
                    *n += 1;
                } else if self.sites.len() < SITE_CAP {
                    self.sites.insert(key, 1);
                }
            }
            None => self.elsewhere += 1,
        }
    }

    /// Start counting anew (a new window); awaited failures stay awaited.
    pub fn clear_counts(&mut self) {
        self.by_outcome = [Seen::default(); 3];
        self.elsewhere = 0;
        self.unmatched = 0;
        self.sites.clear();
    }

    /// Forget the awaited failures (their stack ids are about to be reused).
    pub fn forget_awaited(&mut self) {
        self.awaited.iter_mut().for_each(|a| *a = None);
    }

    /// The run's figures; `lost`: the kernel's count of follow records that
    /// found the ring buffer full.
    #[must_use]
    pub fn report(&self, lost: u64) -> FallbacksSeen {
        let mut sites: Vec<SeenSite> = self
            .sites
            .iter()
            .map(|((function, outcome), &seen)| SeenSite {
                function: function.to_string(),
                outcome: outcome.as_str().to_owned(),
                seen,
            })
            .collect();
        sites.sort_by(|a, b| {
            b.seen
                .cmp(&a.seen)
                .then_with(|| a.function.cmp(&b.function))
        });
        sites.truncate(TOP_SITES);
        FallbacksSeen {
            window_us: u64::try_from(WINDOW.as_micros()).unwrap_or(u64::MAX),
            by_outcome: Outcome::ALL
                .into_iter()
                .map(|o| (o.as_str().to_owned(), self.by_outcome[slot(o)]))
                .collect(),
            elsewhere: self.elsewhere,
            lost,
            sites,
        }
    }
}

/// Where a smaller success's stack parts from a failure's (return
/// addresses, innermost first), compared from the outermost frame in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parting {
    /// The same call chain: one stack is the other's outer part (the same
    /// call made again, smaller).
    Same,
    /// The stacks share their outer frames and part inside this function
    /// (two calls from it).
    In(String),
    /// Nothing in common, or they part in two different functions (or in
    /// the allocator itself).
    Apart,
}

/// Where the stacks part; `name_of` names the function of a return address.
pub fn parting(
    failure: &[u64],
    success: &[u64],
    name_of: impl Fn(u64) -> Option<String>,
) -> Parting {
    let common = failure
        .iter()
        .rev()
        .zip(success.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        return Parting::Apart;
    }
    let (f_rest, s_rest) = (failure.len() - common, success.len() - common);
    if f_rest == 0 || s_rest == 0 {
        return Parting::Same;
    }
    match (name_of(failure[f_rest - 1]), name_of(success[s_rest - 1])) {
        (Some(here), Some(there))
            if base_name(&here) == base_name(&there) && !is_allocator_or_tracing_frame(&here) =>
        {
            Parting::In(here)
        }
        _ => Parting::Apart,
    }
}

/// Whether a parting shows the failure's caller falling back: the same call
/// made again smaller, or two calls from the failure's call site itself
/// (the function whose rule decides its outcome; see
/// [`super::OutcomeRules::site`]). Two calls from a function further out
/// are that function going on with something else after the failure.
#[must_use]
pub fn shows_fallback(parting: &Parting, site: Option<&str>) -> bool {
    match parting {
        Parting::Same => true,
        Parting::In(function) => site.is_some_and(|s| base_name(s) == base_name(function)),
        Parting::Apart => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names by address range: each function spans 0x100 bytes.
    fn names(addr: u64) -> Option<String> {
        let table = [
            (0x1000, "__alloc_pages"),
            (0x1100, "allocate_slab"),
            (0x1200, "new_slab"),
            (0x1300, "___slab_alloc"),
            (0x1400, "kvmalloc_node"),
            (0x1500, "alloc_fdtable"),
            (0x1600, "neigh_hash_grow"),
            (0x1700, "neigh_alloc"),
            (0x1800, "__neigh_create"),
            (0x1900, "ip_finish_output2"),
        ];
        table
            .iter()
            .find(|(start, _)| (*start..start + 0x100).contains(&addr))
            .map(|(_, n)| (*n).to_owned())
    }

    #[test]
    fn a_retry_from_the_call_site_is_a_fallback_seen() {
        // slab's first try and its minimum-order retry: the two calls sit
        // at different offsets of allocate_slab, the callers are the same.
        let failure = [0x1010, 0x1120, 0x1210, 0x1310];
        let success = [0x1010, 0x1180, 0x1210, 0x1310];
        let p = parting(&failure, &success, names);
        assert_eq!(p, Parting::In("allocate_slab".into()));
        assert!(shows_fallback(&p, Some("allocate_slab")));
        // kvmalloc: kmalloc's frames inside, vmalloc's inside, parted in
        // kvmalloc_node, the frame whose rule decides.
        let failure = [0x1010, 0x1150, 0x1420, 0x1510];
        let success = [0x1010, 0x1230, 0x1490, 0x1510];
        let p = parting(&failure, &success, names);
        assert!(shows_fallback(&p, Some("kvmalloc_node")));
        assert!(!shows_fallback(&p, Some("allocate_slab")));
    }

    #[test]
    fn the_caller_going_on_after_the_failure_is_not_a_fallback() {
        // neigh_hash_grow's table failed; __neigh_create then allocated the
        // entry itself: the stacks part in __neigh_create, not at the site.
        let failure = [0x1010, 0x1620, 0x1810, 0x1910];
        let success = [0x1010, 0x1120, 0x1720, 0x1830, 0x1910];
        let p = parting(&failure, &success, names);
        assert_eq!(p, Parting::In("__neigh_create".into()));
        assert!(!shows_fallback(&p, Some("neigh_hash_grow")));
        // Two different functions, nothing in common, the allocator itself.
        let p = parting(&[0x1010, 0x1510, 0x1910], &[0x1010, 0x1610, 0x1910], names);
        assert_eq!(p, Parting::Apart);
        assert_eq!(
            parting(&[0x1010, 0x1510], &[0x1010, 0x1610], names),
            Parting::Apart
        );
        assert_eq!(parting(&[], &[0x1010], names), Parting::Apart);
        assert_eq!(
            parting(&[0x1010, 0x1120], &[0x1020, 0x1120], names),
            Parting::Apart
        );
        assert!(!shows_fallback(&Parting::Apart, Some("allocate_slab")));
        assert!(!shows_fallback(&Parting::In("allocate_slab".into()), None));
    }

    #[test]
    fn the_same_call_again_smaller_is_a_fallback_seen() {
        let stack = [0x1010, 0x1120, 0x1210];
        assert_eq!(parting(&stack, &stack, names), Parting::Same);
        assert!(shows_fallback(&Parting::Same, None));
        // A compiler suffix does not make another function.
        assert!(shows_fallback(
            &Parting::In("allocate_slab.isra.0".into()),
            Some("allocate_slab")
        ));
    }

    #[test]
    fn a_follow_record_counts_once_and_only_for_its_own_failure() {
        let failure = |ts_boot_ns, stack, outcome| Awaited {
            ts_boot_ns,
            stack,
            outcome,
            gfp: 0x820,
            order: 3,
        };
        let mut o = Observer::default();
        o.note(3, failure(100, 7, Outcome::Fallback));
        assert_eq!(o.take(3, 99), None, "another failure's time");
        assert_eq!(o.take(2, 100), None, "another CPU");
        assert_eq!(o.take(3, 100), Some(failure(100, 7, Outcome::Fallback)));
        assert_eq!(o.take(3, 100), None, "taken already");
        assert_eq!(o.unmatched, 3);
        o.note(3, failure(200, 8, Outcome::Terminal));
        o.note(3, failure(300, 9, Outcome::Fallback));
        assert_eq!(o.take(3, 200), None, "replaced by the CPU's next failure");
        o.count(Outcome::Fallback, Some("allocate_slab"));
        o.count(Outcome::Fallback, Some("allocate_slab"));
        o.count(Outcome::Terminal, Some("neigh_hash_alloc"));
        o.count(Outcome::Terminal, None);
        let r = o.report(5);
        assert_eq!(r.lost, 5);
        assert_eq!(r.elsewhere, 1);
        assert_eq!(
            r.by_outcome["fallback"],
            Seen {
                failures: 2,
                seen: 2
            }
        );
        assert_eq!(
            r.by_outcome["terminal"],
            Seen {
                failures: 1,
                seen: 1
            }
        );
        assert_eq!(r.by_outcome["unknown"], Seen::default());
        assert_eq!(r.sites[0].function, "allocate_slab");
        assert_eq!(r.sites[0].seen, 2);
        assert_eq!(r.sites[1].outcome, "terminal");
        let text = r.to_string();
        assert!(
            text.contains(" fallback 2 of 2 (100.0 %),") && text.contains(" terminal 1 of 1 "),
            "{text}"
        );
        assert!(!text.contains("unknown 0 of 0"), "{text}");
        assert!(
            text.contains("seen at: allocate_slab (fallback) 2, neigh_hash_alloc (terminal) 1"),
            "{text}"
        );
        o.clear_counts();
        assert_eq!(o.report(0).by_outcome["fallback"], Seen::default());
    }
}
