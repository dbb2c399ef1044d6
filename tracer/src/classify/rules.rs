//! The rule file format and its parser.
//!
//! Network path rules are data, so a site can teach pagefail about its own
//! drivers and tunnels without a new build. The built-in table
//! (`builtin-rules.txt`) and user files share this one format:
//!
//! ```text
//! # comment; blank lines are ignored, and `#` also starts a trailing comment
//! label   group     kind     pattern [pattern ...]
//! xennet  driver    prefix   xennet_
//! xennet  driver    module   xen_netfront
//! tcp     protocol  exact    sk_stream_alloc_skb
//! ```
//!
//! Fields are separated by spaces or tabs. A line adds one or more patterns to
//! a label; a label may take any number of lines, and a user file extends a
//! built-in label by naming it again (with the same group).
//!
//! - **label**: what the output says (`tcp`, `bonding`): ASCII letters, digits,
//!   `_` and `-`. `none` is reserved (it is what an unmatched stack prints)
//!   and `+` joins labels in the output, so neither can be a label.
//! - **group**: decides where the label sits in the output, in this order:
//!   `driver` (device drivers), `upper` (devices stacked on others: bonding,
//!   bridge, vlan), `generic` (core receive/transmit, netfilter), `protocol`
//!   (neighbour tables, TCP, UDP). Inside a group, labels keep the order in
//!   which they first appear: built-in ones first, then the user's.
//! - **kind**, how each pattern is compared:
//!   - `exact`: the function name equals the pattern;
//!   - `prefix`: the function name starts with the pattern;
//!   - `contains`: the function name contains the pattern;
//!   - `module`: the frame's module name equals the pattern;
//!   - `module-prefix`: the frame's module name starts with the pattern.
//!
//!   Function names are compared without the compiler's suffixes (`.part.0`,
//!   `.constprop.0`, `.isra.0`, `.cold`): C names never hold a `.`, so
//!   everything from the first `.` on is the compiler's.
//! - **pattern**: a function pattern holds letters, digits and `_` (no
//!   wildcards: the kind says how it matches); a module pattern holds letters,
//!   digits and `_` (the kernel prints module names with `_`, never `-`).

use std::collections::HashMap;

use thiserror::Error;

/// Where a label sits in the output; the declaration order is the output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Group {
    Driver,
    Upper,
    Generic,
    Protocol,
}

impl Group {
    const ALL: [Self; 4] = [Self::Driver, Self::Upper, Self::Generic, Self::Protocol];

    fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Upper => "upper",
            Self::Generic => "generic",
            Self::Protocol => "protocol",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }
}

/// How a pattern is compared with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Exact,
    Prefix,
    Contains,
    Module,
    ModulePrefix,
}

impl Kind {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "exact" => Self::Exact,
            "prefix" => Self::Prefix,
            "contains" => Self::Contains,
            "module" => Self::Module,
            "module-prefix" => Self::ModulePrefix,
            _ => return None,
        })
    }

    fn is_module(self) -> bool {
        matches!(self, Self::Module | Self::ModulePrefix)
    }
}

/// The most labels a classifier holds: one bit each in a `u128` mask keeps
/// matching free of allocation.
pub(crate) const MAX_LABELS: usize = 128;

/// A rule file that cannot be used. Every variant carries the 1-based line
/// number in the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    #[error("line {line}: missing the {field} (a rule is `label group kind pattern...`)")]
    MissingField { line: usize, field: &'static str },
    #[error("line {line}: unknown group `{group}` (expected driver, upper, generic or protocol)")]
    UnknownGroup { line: usize, group: String },
    #[error(
        "line {line}: unknown kind `{kind}` (expected exact, prefix, contains, module or module-prefix)"
    )]
    UnknownKind { line: usize, kind: String },
    #[error("line {line}: the `{kind}` rule has no pattern")]
    EmptyPattern { line: usize, kind: String },
    #[error("line {line}: bad label `{label}`: {reason}")]
    BadLabel {
        line: usize,
        label: String,
        reason: &'static str,
    },
    #[error("line {line}: bad pattern `{pattern}`: {reason}")]
    BadPattern {
        line: usize,
        pattern: String,
        reason: &'static str,
    },
    #[error(
        "line {line}: label `{label}` belongs to group {expected}, not {found}: a label has one group"
    )]
    GroupMismatch {
        line: usize,
        label: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("line {line}: too many labels (at most {MAX_LABELS})")]
    TooManyLabels { line: usize },
}

impl RuleError {
    /// The 1-based line the error is on.
    #[must_use]
    pub fn line(&self) -> usize {
        match self {
            Self::MissingField { line, .. }
            | Self::UnknownGroup { line, .. }
            | Self::UnknownKind { line, .. }
            | Self::EmptyPattern { line, .. }
            | Self::BadLabel { line, .. }
            | Self::BadPattern { line, .. }
            | Self::GroupMismatch { line, .. }
            | Self::TooManyLabels { line } => *line,
        }
    }
}

/// One label as declared; its index in [`RuleSet::labels`] is its first appearance.
#[derive(Debug, Clone)]
pub(crate) struct LabelDecl {
    pub name: String,
    pub group: Group,
}

/// One pattern of one label.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Index into [`RuleSet::labels`].
    pub label: usize,
    pub kind: Kind,
    pub pattern: String,
}

/// Rules accumulated from one or more files, before compilation.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleSet {
    /// Labels in order of first appearance.
    pub labels: Vec<LabelDecl>,
    pub rules: Vec<Rule>,
    by_name: HashMap<String, usize>,
}

impl RuleSet {
    /// Parse `text` and add its rules. After an error the set holds the rules
    /// before the bad line; callers drop it.
    pub fn add_text(&mut self, text: &str) -> Result<(), RuleError> {
        for (index, raw) in text.lines().enumerate() {
            self.add_line(index + 1, raw)?;
        }
        Ok(())
    }

    fn add_line(&mut self, line: usize, raw: &str) -> Result<(), RuleError> {
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let mut fields = content.split_ascii_whitespace();
        let Some(label) = fields.next() else {
            return Ok(());
        };
        let group_text = fields.next().ok_or(RuleError::MissingField {
            line,
            field: "group",
        })?;
        let kind_text = fields.next().ok_or(RuleError::MissingField {
            line,
            field: "kind",
        })?;

        check_label(line, label)?;
        let group = Group::parse(group_text).ok_or_else(|| RuleError::UnknownGroup {
            line,
            group: group_text.to_owned(),
        })?;
        let kind = Kind::parse(kind_text).ok_or_else(|| RuleError::UnknownKind {
            line,
            kind: kind_text.to_owned(),
        })?;

        let mut patterns = fields.peekable();
        if patterns.peek().is_none() {
            return Err(RuleError::EmptyPattern {
                line,
                kind: kind_text.to_owned(),
            });
        }
        let label_index = self.label_index(line, label, group)?;
        for pattern in patterns {
            check_pattern(line, kind, pattern)?;
            self.rules.push(Rule {
                label: label_index,
                kind,
                pattern: pattern.to_owned(),
            });
        }
        Ok(())
    }

    fn label_index(&mut self, line: usize, name: &str, group: Group) -> Result<usize, RuleError> {
        if let Some(&index) = self.by_name.get(name) {
            let expected = self.labels[index].group;
            if expected != group {
                return Err(RuleError::GroupMismatch {
                    line,
                    label: name.to_owned(),
                    expected: expected.as_str(),
                    found: group.as_str(),
                });
            }
            return Ok(index);
        }
        if self.labels.len() == MAX_LABELS {
            return Err(RuleError::TooManyLabels { line });
        }
        let index = self.labels.len();
        self.labels.push(LabelDecl {
            name: name.to_owned(),
            group,
        });
        self.by_name.insert(name.to_owned(), index);
        Ok(index)
    }
}

fn check_label(line: usize, label: &str) -> Result<(), RuleError> {
    let reason = if label == "none" {
        "`none` is what a stack without network path prints"
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        "a label holds only ASCII letters, digits, `_` and `-`"
    } else {
        return Ok(());
    };
    Err(RuleError::BadLabel {
        line,
        label: label.to_owned(),
        reason,
    })
}

fn check_pattern(line: usize, kind: Kind, pattern: &str) -> Result<(), RuleError> {
    let bad = |reason| {
        Err(RuleError::BadPattern {
            line,
            pattern: pattern.to_owned(),
            reason,
        })
    };
    if pattern.contains(['*', '?']) {
        return bad("no wildcards: the kind says how a pattern matches (use prefix or contains)");
    }
    if kind.is_module() && pattern.contains('-') {
        return bad("the kernel prints module names with `_`, never `-`");
    }
    if pattern.contains('.') && !kind.is_module() {
        return bad("function names are matched without compiler suffixes such as `.part.0`");
    }
    if !pattern
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return bad("a pattern holds only ASCII letters, digits and `_`");
    }
    Ok(())
}
