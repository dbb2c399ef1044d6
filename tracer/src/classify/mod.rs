//! Attribution of a failure from its symbolized kernel stack: the CPU context
//! it ran in and the network paths it went through.
//!
//! One classifier serves live tracing and kernel logs.
//!
//! # Network paths
//! [`Classifier::paths`] labels a stack with every network path whose rules
//! match one of its frames (rules: [`rules`](self::rules) for the format,
//! `builtin-rules.txt` for the built-in table). A stack through bonding and TCP
//! gets both labels, each once, joined with `+` in a fixed order: by group, then
//! by the order labels first appear in the rules. The built-in order is
//!
//! ```text
//! driver:   xennet virtio_net veth loopback mlx5 ixgbe i40e ena bnxt e1000e igb
//!           hv_netvsc gve vmxnet3
//! upper:    bonding bridge vlan
//! generic:  netfilter net-rx net-tx
//! protocol: neigh tcp udp
//! ```
//!
//! so a TCP segment sent through a bond prints `bonding+net-tx+tcp`. A stack
//! that matches nothing prints `none`.
//!
//! Only the frames of the context the allocation ran in are matched: when the
//! stack runs in a softirq or hardirq ([`context_of`]), the frames outside the
//! entry frame belong to whatever the interrupt happened to interrupt. A
//! neighbour timer that fires on top of a `connect()` is the neighbour table's
//! failure, not TCP's, so it prints `neigh`, not `neigh+tcp`.
//!
//! Callers should leave out frames the kernel marks unreliable (`? func+0x..`
//! in kernel logs): they are stale return addresses found on the stack, often
//! from an unrelated earlier call.

mod context;
pub mod rules;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, LazyLock},
};

use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};

use self::rules::{Kind, RuleSet};
pub use self::{context::context_of, rules::RuleError};

/// The built-in rule table; its format is described in [`rules`].
pub const BUILTIN_RULES: &str = include_str!("builtin-rules.txt");

/// The built-in table, parsed once. The table is part of the build and a unit
/// test parses it, so a parse error here is a bug in this crate, not bad input.
static BUILTIN_SET: LazyLock<RuleSet> = LazyLock::new(|| {
    let mut set = RuleSet::default();
    set.add_text(BUILTIN_RULES)
        .expect("the built-in rule table parses");
    set
});

/// One symbolized kernel frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Function name without offset (`bond_start_xmit`).
    pub function: &'a str,
    /// Module name for module code (`bonding`), `None` for the core kernel.
    pub module: Option<&'a str>,
}

/// The CPU context a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Context {
    Task,
    Softirq,
    Hardirq,
    Unknown,
}

impl Context {
    /// The CSV spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Softirq => "softirq",
            Self::Hardirq => "hardirq",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The network path labels of one stack, in output order.
///
/// Held as the joined text (`bonding+net-tx+tcp`, empty for none): callers
/// key aggregates on it, so equality, hashing and printing are the cheap
/// operations, and cloning is a reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathLabels(Arc<str>);

impl PathLabels {
    /// No network path.
    #[must_use]
    pub fn none() -> Self {
        Self(Arc::from(""))
    }

    /// Whether any network path matched.
    #[must_use]
    pub fn is_network(&self) -> bool {
        !self.0.is_empty()
    }

    /// The labels, in output order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('+').filter(|label| !label.is_empty())
    }

    /// Whether `label` is one of the labels.
    #[must_use]
    pub fn contains(&self, label: &str) -> bool {
        self.labels().any(|l| l == label)
    }
}

impl Default for PathLabels {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Display for PathLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Compiled network path rules.
///
/// Each label is one bit of a `u128`, numbered in output order, so matching a
/// stack ORs masks without allocating and printing walks the bits in order.
/// Exact names and module names are hash lookups; prefix rules are scanned
/// among those starting with the frame's first byte (a few of the hundred);
/// substring rules are searched for with prebuilt finders.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Label names by bit.
    names: Vec<Box<str>>,
    exact: HashMap<Box<str>, u128>,
    /// Prefix rules by the first byte of their pattern.
    prefix: Box<[Scanned]>,
    contains: Vec<(Finder<'static>, u128)>,
    module: HashMap<Box<str>, u128>,
    module_prefix: Scanned,
}

/// Patterns compared one by one, each with the labels it stands for.
type Scanned = Vec<(Box<str>, u128)>;

impl Classifier {
    /// The built-in rule table.
    #[must_use]
    pub fn builtin() -> Self {
        Self::compile(&BUILTIN_SET)
    }

    /// Built-in rules plus the rules of a user file (same format as the
    /// built-in data, see [`rules`]). User rules may add labels or add
    /// patterns to built-in ones; new labels print after the built-in labels
    /// of their group.
    ///
    /// # Errors
    /// The first bad line of `text`, with its 1-based number.
    pub fn with_user_rules(text: &str) -> Result<Self, RuleError> {
        let mut set = BUILTIN_SET.clone();
        set.add_text(text)?;
        Ok(Self::compile(&set))
    }

    fn compile(set: &RuleSet) -> Self {
        // Output order: by group, then by first appearance (a stable sort keeps it).
        let mut order: Vec<usize> = (0..set.labels.len()).collect();
        order.sort_by_key(|&index| set.labels[index].group);
        let mut bit_of = vec![0u128; set.labels.len()];
        for (bit, &index) in order.iter().enumerate() {
            bit_of[index] = 1u128 << bit;
        }
        let names = order
            .iter()
            .map(|&index| Box::from(set.labels[index].name.as_str()))
            .collect();

        let mut exact = HashMap::new();
        let mut module = HashMap::new();
        let mut prefix = vec![Vec::new(); 256].into_boxed_slice();
        let mut contains = Vec::new();
        let mut module_prefix = Vec::new();
        for rule in &set.rules {
            let bit = bit_of[rule.label];
            let pattern: Box<str> = Box::from(rule.pattern.as_str());
            match rule.kind {
                Kind::Exact => *exact.entry(pattern).or_default() |= bit,
                Kind::Module => *module.entry(pattern).or_default() |= bit,
                Kind::Prefix => {
                    // Patterns are never empty (see `rules`); an empty one
                    // would match every name.
                    let first = pattern.bytes().next().map_or(0, usize::from);
                    add_scanned(&mut prefix[first], pattern, bit);
                }
                Kind::Contains => add_scanned(&mut contains, pattern, bit),
                Kind::ModulePrefix => add_scanned(&mut module_prefix, pattern, bit),
            }
        }
        Self {
            names,
            exact,
            prefix,
            contains: contains
                .into_iter()
                .map(|(pattern, bit)| (Finder::new(pattern.as_bytes()).into_owned(), bit))
                .collect(),
            module,
            module_prefix,
        }
    }

    /// Network path labels of a stack (frames innermost first, as the kernel
    /// prints stacks). Only frames of the context the allocation ran in count
    /// (see the module documentation).
    #[must_use]
    pub fn paths(&self, frames: &[Frame<'_>]) -> PathLabels {
        let own = match context::entry(frames) {
            Some((index, _)) => &frames[..=index],
            None => frames,
        };
        let mask = own
            .iter()
            .fold(0, |mask, frame| mask | self.frame_mask(frame));
        self.render(mask)
    }

    /// The labels one frame matches.
    fn frame_mask(&self, frame: &Frame<'_>) -> u128 {
        let function = base_name(frame.function);
        let mut mask = self.exact.get(function).copied().unwrap_or(0);
        if let Some(&first) = function.as_bytes().first() {
            for (pattern, bit) in &self.prefix[usize::from(first)] {
                if function.starts_with(&**pattern) {
                    mask |= bit;
                }
            }
        }
        for (finder, bit) in &self.contains {
            if finder.find(function.as_bytes()).is_some() {
                mask |= bit;
            }
        }
        if let Some(module) = frame.module {
            mask |= self.module.get(module).copied().unwrap_or(0);
            for (pattern, bit) in &self.module_prefix {
                if module.starts_with(&**pattern) {
                    mask |= bit;
                }
            }
        }
        mask
    }

    fn render(&self, mask: u128) -> PathLabels {
        if mask == 0 {
            return PathLabels::none();
        }
        let mut text = String::new();
        let mut rest = mask;
        while rest != 0 {
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if let Some(name) = self.names.get(bit) {
                if !text.is_empty() {
                    text.push('+');
                }
                text.push_str(name);
            }
        }
        PathLabels(Arc::from(text))
    }

    /// Every label this classifier knows, in output order.
    pub fn known_labels(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|name| &**name)
    }
}

/// The index of the frame (innermost first) where the allocation's CPU
/// context was entered (a softirq or hardirq entry), if any: frames beyond it
/// belong to the code the interrupt interrupted.
#[must_use]
pub fn context_entry(frames: &[Frame<'_>]) -> Option<usize> {
    context::entry(frames).map(|(index, _)| index)
}

/// Add a scanned pattern, merging a pattern listed for several labels.
fn add_scanned(list: &mut Scanned, pattern: Box<str>, bit: u128) {
    match list.iter_mut().find(|(p, _)| *p == pattern) {
        Some((_, mask)) => *mask |= bit,
        None => list.push((pattern, bit)),
    }
}

/// A function name without the compiler's suffixes (`.part.0`, `.isra.0`,
/// `.constprop.0`, `.cold`): C identifiers never hold a `.`.
fn base_name(function: &str) -> &str {
    function.split_once('.').map_or(function, |(base, _)| base)
}
