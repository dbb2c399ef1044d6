//! Which failures hurt: the `cause` and the `outcome` of a failure.
//!
//! # Cause: why the allocator said no
//! - `nolock`: the stack runs through a lock-free try (`alloc_pages_nolock`,
//!   `try_alloc_pages`, 6.15+): it takes no lock, never reclaims and fails by
//!   design when the per-CPU lists or the zone lock are busy.
//! - `memcg`: a memory cgroup refused the charge. With `__GFP_ACCOUNT` the
//!   page allocator charges the page *after* finding it
//!   (`__memcg_kmem_charge_page` at the end of `__alloc_pages`, 5.10 to
//!   6.18), frees it when the charge fails and fires the tracepoint with a
//!   NULL page, so the charge path is no longer on the stack. What tells the
//!   two apart is `warn_alloc`: every failure of the zone search ends in the
//!   slow path's `warn_alloc` (NOWARN ones too), a refused charge never
//!   reaches it. So, for an accounted request: `warn_alloc` reached → `zone`,
//!   not reached → `memcg`, when the `warn_alloc` probe is attached.
//!   Without it (no kprobes, `--lean`) pagefail looks at the zones right
//!   after the failure: when a zone the request could use held free blocks
//!   of its order and free pages above its high watermark, the zone search
//!   cannot have been what failed → `memcg`; otherwise `unknown`.
//! - `zone`: the zone search failed (watermarks, no free block of the order,
//!   cpuset or node limits): every failure without `__GFP_ACCOUNT` that is
//!   not a lock-free try.
//! - `unknown`: the evidence does not decide.
//!
//! # Outcome: what the failure meant for the caller
//! From the stack, innermost frame first, by rules ([`rules`] for the
//! format, `builtin-outcomes.txt` for the built-in table): the first frame a
//! rule names decides, `pass` rules hand over to the next frame out, and the
//! walk stops with `unknown` at the first frame no rule names, or at the
//! entry of the CPU context (frames beyond belong to interrupted code).

pub mod observed;
pub mod rules;

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use self::rules::{Cond, Rule, Verdict};
pub use self::rules::{Outcome, OutcomeRuleError};
use crate::{
    classify::{Frame, context_entry},
    gfp::GfpTable,
    memory::Snapshot,
};

/// The built-in outcome rules; their format is described in [`rules`].
pub const BUILTIN_OUTCOMES: &str = include_str!("builtin-outcomes.txt");

static BUILTIN: LazyLock<Vec<Rule>> =
    LazyLock::new(|| rules::parse(BUILTIN_OUTCOMES).expect("the built-in outcome rules parse"));

/// Why the allocator said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    Zone,
    Memcg,
    Nolock,
    Unknown,
}

impl Cause {
    pub const ALL: [Self; 4] = [Self::Zone, Self::Memcg, Self::Nolock, Self::Unknown];

    /// The CSV spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zone => "zone",
            Self::Memcg => "memcg",
            Self::Nolock => "nolock",
            Self::Unknown => "unknown",
        }
    }

    /// Parse the CSV spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl serde::Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome rules: a user file's first (they win), then the built-in ones.
#[derive(Debug, Clone)]
pub struct OutcomeRules {
    rules: Vec<Rule>,
}

impl Default for OutcomeRules {
    fn default() -> Self {
        Self::builtin()
    }
}

impl OutcomeRules {
    /// The built-in table.
    #[must_use]
    pub fn builtin() -> Self {
        Self {
            rules: BUILTIN.clone(),
        }
    }

    /// A user file's rules ahead of the built-in ones.
    ///
    /// # Errors
    /// The first bad line of `text`.
    pub fn with_user_rules(text: &str) -> Result<Self, OutcomeRuleError> {
        let mut rules = rules::parse(text)?;
        rules.extend(BUILTIN.iter().cloned());
        Ok(Self { rules })
    }

    /// Work out, once per distinct stack, which rules can decide its outcome
    /// (frames innermost first).
    #[must_use]
    pub fn plan(&self, frames: &[Frame<'_>]) -> Plan {
        let own = match context_entry(frames) {
            Some(index) => &frames[..index],
            None => frames,
        };
        let mut steps = Vec::new();
        let mut names = Vec::new();
        for (index, frame) in own.iter().enumerate() {
            let function = base_name(frame.function);
            let outer = &own[index + 1..];
            let candidates: Vec<u16> = self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, rule)| rule.names(function))
                .filter(|(_, rule)| {
                    rule.when.iter().all(|cond| match cond {
                        Cond::Under(prefix) => outer
                            .iter()
                            .any(|f| base_name(f.function).starts_with(prefix.as_str())),
                        _ => true,
                    })
                })
                .filter_map(|(i, _)| u16::try_from(i).ok())
                .collect();
            if candidates.is_empty() {
                if names.is_empty() {
                    names.push(Box::from(function));
                }
                break;
            }
            names.push(Box::from(function));
            // A frame whose first candidate holds unconditionally ends the walk.
            let ends = candidates.first().is_some_and(|&i| {
                let rule = &self.rules[usize::from(i)];
                rule.verdict != Verdict::Pass
                    && rule.when.iter().all(|c| matches!(c, Cond::Under(_)))
            });
            steps.push(candidates.into_boxed_slice());
            if ends {
                break;
            }
        }
        Plan {
            steps: steps.into_boxed_slice(),
            frames: names.into_boxed_slice(),
        }
    }

    /// The outcome of one failure of a planned stack.
    #[must_use]
    pub fn outcome(&self, plan: &Plan, gfp_table: &GfpTable, gfp: u64, order: u32) -> Outcome {
        self.decide(plan, gfp_table, gfp, order).0
    }

    /// The call site of a failure: the function whose rule decides its
    /// outcome, or with no rule the first function past the allocator.
    #[must_use]
    pub fn site<'p>(
        &self,
        plan: &'p Plan,
        gfp_table: &GfpTable,
        gfp: u64,
        order: u32,
    ) -> Option<&'p str> {
        let step = self.decide(plan, gfp_table, gfp, order).2.unwrap_or(0);
        plan.frames.get(step).map(|f| &**f)
    }

    /// The outcome and the rule that gave it (its index in file order).
    fn decide(
        &self,
        plan: &Plan,
        gfp_table: &GfpTable,
        gfp: u64,
        order: u32,
    ) -> (Outcome, Option<usize>, Option<usize>) {
        for (index, step) in plan.steps.iter().enumerate() {
            let hit = step.iter().map(|&i| usize::from(i)).find(|&i| {
                self.rules[i].when.iter().all(|cond| match cond {
                    Cond::Gfp(name, set) => {
                        let bit = gfp_table.bit(&format!("__GFP_{name}")).unwrap_or(0);
                        (bit != 0 && gfp & bit == bit) == *set
                    }
                    Cond::OrderEq(n) => order == *n,
                    Cond::OrderGe(n) => order >= *n,
                    Cond::OrderLe(n) => order <= *n,
                    Cond::Under(_) => true,
                })
            });
            match hit.map(|i| (i, self.rules[i].verdict)) {
                Some((_, Verdict::Pass)) => {}
                Some((i, Verdict::Is(outcome))) => return (outcome, Some(i), Some(index)),
                None => return (Outcome::Unknown, None, None),
            }
        }
        (Outcome::Unknown, None, None)
    }

    /// The reason of the rule that decides a failure, for `-v` output and tests.
    #[must_use]
    pub fn reason(&self, plan: &Plan, gfp_table: &GfpTable, gfp: u64, order: u32) -> Option<&str> {
        self.decide(plan, gfp_table, gfp, order)
            .1
            .map(|i| self.rules[i].reason.as_str())
    }
}

/// The rules that can decide a stack's outcome: per frame, innermost first,
/// the indices of the rules naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    steps: Box<[Box<[u16]>]>,
    /// The function of each step's frame (at least the first frame's, so a
    /// stack no rule names still has a call site).
    frames: Box<[Box<str>]>,
}

/// A function name without compiler suffixes (`.part.0`, `.isra.0`).
pub(crate) fn base_name(function: &str) -> &str {
    function.split_once('.').map_or(function, |(base, _)| base)
}

/// Whether a stack runs through a lock-free page allocation try.
#[must_use]
pub fn is_nolock(frames: &[Frame<'_>]) -> bool {
    frames.iter().take(4).any(|f| {
        let name = base_name(f.function);
        name.contains("_nolock") || name.starts_with("try_alloc_pages")
    })
}

/// What is known about one failure when its cause is decided.
#[expect(
    clippy::struct_excessive_bools,
    reason = "four independent facts about one failure, named where the cause is decided"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    /// The stack runs through a lock-free try.
    pub nolock: bool,
    /// The request had `__GFP_ACCOUNT`.
    pub account: bool,
    /// The `warn_alloc` probe is attached.
    pub warn_probe: bool,
    /// The failure reached `warn_alloc`.
    pub warn_reached: bool,
}

/// The cause of a failure; `zone_room` is asked only when the `warn_alloc`
/// evidence is missing for an accounted request (see the module docs).
#[must_use]
pub fn cause(evidence: Evidence, zone_room: impl FnOnce() -> Option<bool>) -> Cause {
    if evidence.nolock {
        Cause::Nolock
    } else if !evidence.account {
        Cause::Zone
    } else if evidence.warn_probe {
        if evidence.warn_reached {
            Cause::Zone
        } else {
            Cause::Memcg
        }
    } else if zone_room() == Some(true) {
        Cause::Memcg
    } else {
        Cause::Unknown
    }
}

/// Whether the zones could have served an order-`order` request: a zone
/// kernel memory comes from (Normal, DMA32) with at least two free blocks of
/// that order or larger and free pages above its high watermark plus the
/// request.
#[must_use]
pub fn zones_have_room(snapshot: &Snapshot, order: u32) -> bool {
    snapshot.zones.iter().any(|z| {
        (z.zone == "Normal" || z.zone == "DMA32")
            && z.free > z.high.saturating_add(1 << order.min(20))
            && snapshot
                .buddy_of(z.node, &z.zone)
                .is_some_and(|b| b.blocks_at_least(order) >= 2)
    })
}

/// The zone state for causes, read at most every [`ZoneLook::EVERY`].
#[derive(Debug, Default)]
pub struct ZoneLook {
    last: Option<(Instant, Option<Snapshot>)>,
}

impl ZoneLook {
    const EVERY: Duration = Duration::from_millis(50);

    /// Whether the zones have room for `order` now (`None`: unreadable).
    pub fn has_room(&mut self, order: u32) -> Option<bool> {
        let now = Instant::now();
        let fresh = self
            .last
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < Self::EVERY);
        if !fresh {
            self.last = Some((now, Snapshot::take().ok()));
        }
        self.last
            .as_ref()
            .and_then(|(_, s)| s.as_ref())
            .map(|s| zones_have_room(s, order))
    }
}

#[cfg(test)]
mod tests;
