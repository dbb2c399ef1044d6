//! The outcome rule format and its parser.
//!
//! What a failed allocation means for its caller is decided by the call site,
//! so it is data, like the network path rules: the built-in table
//! (`builtin-outcomes.txt`) and user files (`--outcome-rules FILE`) share
//! this format, one rule a line:
//!
//! ```text
//! # outcome  kind    pattern         when          kernels             reason
//! fallback   exact   allocate_slab   gfp+NORETRY   5.10,6.1,6.12,6.18  slab's first try; it retries at its minimum order
//! pass       exact   allocate_slab   -             5.10,6.1,6.12,6.18  the minimum-order retry failed: the slab allocation fails
//! terminal   exact   skb_segment     -             5.10,6.1,6.12,6.18  GSO segmentation fails: the packet is dropped
//! ```
//!
//! - **outcome**: `fallback` (the caller retries smaller, elsewhere or later
//!   and normally succeeds), `terminal` (the caller gets nothing: an error or
//!   a drop), `unknown`, or `pass` (the frame hands the failure to its own
//!   caller: look at the next frame out).
//! - **kind**: `exact` (the function name equals the pattern) or `prefix`
//!   (it starts with it). Names are compared without compiler suffixes
//!   (`.part.0`, `.isra.0`).
//! - **when**: `-`, or conditions joined by `,`, all of which must hold:
//!   `gfp+NAME` / `gfp-NAME` (the failed request's mask has / lacks
//!   `__GFP_NAME`, looked up in the running kernel's own table; a flag the
//!   kernel does not have is never set), `order=N`, `order>=N`, `order<=N`,
//!   and `under=PREFIX` (a frame further out, in the same CPU context,
//!   starts with `PREFIX`).
//! - **kernels**: the kernel versions the rule was read from (`5.10,6.1`),
//!   or `-`. Documentation: rules apply on every kernel.
//! - **reason**: the rest of the line, required: why the kernel source gives
//!   this outcome.
//!
//! A `#` starts a comment when it begins the line or follows a space.

use thiserror::Error;

/// What a failure meant for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The caller gets nothing: an error returned, a packet dropped.
    Terminal,
    /// The caller retries smaller, elsewhere or later.
    Fallback,
    /// No rule decides.
    Unknown,
}

impl Outcome {
    pub const ALL: [Self; 3] = [Self::Terminal, Self::Fallback, Self::Unknown];

    /// The CSV spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminal => "terminal",
            Self::Fallback => "fallback",
            Self::Unknown => "unknown",
        }
    }

    /// Parse the CSV spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule says about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Is(Outcome),
    /// Look at the next frame out.
    Pass,
}

/// How a pattern is compared with a function name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Exact,
    Prefix,
}

/// A condition on the failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cond {
    /// `__GFP_<name>` set (`true`) or clear (`false`).
    Gfp(String, bool),
    OrderEq(u32),
    OrderGe(u32),
    OrderLe(u32),
    /// A frame further out starts with this.
    Under(String),
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub verdict: Verdict,
    pub kind: Kind,
    pub pattern: String,
    pub when: Vec<Cond>,
    pub kernels: Vec<String>,
    pub reason: String,
}

impl Rule {
    /// Whether the rule names this function (without compiler suffixes).
    pub fn names(&self, function: &str) -> bool {
        match self.kind {
            Kind::Exact => function == self.pattern,
            Kind::Prefix => function.starts_with(&self.pattern),
        }
    }
}

/// An outcome rule file that cannot be used; each variant carries the
/// 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OutcomeRuleError {
    #[error(
        "line {line}: missing the {field} (a rule is `outcome kind pattern when kernels reason`)"
    )]
    MissingField { line: usize, field: &'static str },
    #[error(
        "line {line}: unknown outcome `{found}` (expected fallback, terminal, unknown or pass)"
    )]
    UnknownOutcome { line: usize, found: String },
    #[error("line {line}: unknown kind `{found}` (expected exact or prefix)")]
    UnknownKind { line: usize, found: String },
    #[error(
        "line {line}: bad pattern `{found}`: a function name holds only ASCII letters, digits and `_`"
    )]
    BadPattern { line: usize, found: String },
    #[error(
        "line {line}: bad condition `{found}` (expected -, gfp+NAME, gfp-NAME, order=N, order>=N, order<=N or under=PREFIX)"
    )]
    BadCondition { line: usize, found: String },
    #[error("line {line}: bad kernel list `{found}` (expected - or versions like 5.10,6.1)")]
    BadKernels { line: usize, found: String },
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parse rules from `text`, in file order.
///
/// # Errors
/// The first bad line.
pub(crate) fn parse(text: &str) -> Result<Vec<Rule>, OutcomeRuleError> {
    let mut rules = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if let Some(rule) = parse_line(index + 1, raw)? {
            rules.push(rule);
        }
    }
    Ok(rules)
}

fn parse_line(line: usize, raw: &str) -> Result<Option<Rule>, OutcomeRuleError> {
    let content = match raw.find('#') {
        Some(0) => "",
        Some(at) if raw[..at].ends_with([' ', '\t']) => &raw[..at],
        _ => raw,
    };
    let mut rest = content.trim();
    if rest.is_empty() {
        return Ok(None);
    }
    let mut field = |name: &'static str| -> Result<&str, OutcomeRuleError> {
        let text = rest;
        let end = text.find(char::is_whitespace).unwrap_or(text.len());
        if end == 0 {
            return Err(OutcomeRuleError::MissingField { line, field: name });
        }
        rest = text[end..].trim_start();
        Ok(&text[..end])
    };
    let outcome = field("outcome")?;
    let kind = field("kind")?;
    let pattern = field("pattern")?;
    let when = field("when")?;
    let kernels = field("kernels")?;
    let reason = rest.trim();
    if reason.is_empty() {
        return Err(OutcomeRuleError::MissingField {
            line,
            field: "reason",
        });
    }
    let verdict =
        match outcome {
            "pass" => Verdict::Pass,
            other => Verdict::Is(Outcome::parse(other).ok_or_else(|| {
                OutcomeRuleError::UnknownOutcome {
                    line,
                    found: other.to_owned(),
                }
            })?),
        };
    let kind = match kind {
        "exact" => Kind::Exact,
        "prefix" => Kind::Prefix,
        other => {
            return Err(OutcomeRuleError::UnknownKind {
                line,
                found: other.to_owned(),
            });
        }
    };
    if !is_name(pattern) {
        return Err(OutcomeRuleError::BadPattern {
            line,
            found: pattern.to_owned(),
        });
    }
    let when = if when == "-" {
        Vec::new()
    } else {
        when.split(',')
            .map(|c| {
                parse_cond(c).ok_or_else(|| OutcomeRuleError::BadCondition {
                    line,
                    found: c.to_owned(),
                })
            })
            .collect::<Result<_, _>>()?
    };
    let kernels = if kernels == "-" {
        Vec::new()
    } else {
        let list: Vec<String> = kernels.split(',').map(str::to_owned).collect();
        let ok = list.iter().all(|v| {
            let mut parts = v.split('.');
            parts.next().is_some_and(|p| p.parse::<u32>().is_ok())
                && parts.all(|p| p.parse::<u32>().is_ok())
                && v.contains('.')
        });
        if !ok {
            return Err(OutcomeRuleError::BadKernels {
                line,
                found: kernels.to_owned(),
            });
        }
        list
    };
    Ok(Some(Rule {
        verdict,
        kind,
        pattern: pattern.to_owned(),
        when,
        kernels,
        reason: reason.to_owned(),
    }))
}

fn parse_cond(text: &str) -> Option<Cond> {
    if let Some(name) = text.strip_prefix("gfp+") {
        return is_name(name).then(|| Cond::Gfp(name.to_owned(), true));
    }
    if let Some(name) = text.strip_prefix("gfp-") {
        return is_name(name).then(|| Cond::Gfp(name.to_owned(), false));
    }
    if let Some(n) = text.strip_prefix("order>=") {
        return n.parse().ok().map(Cond::OrderGe);
    }
    if let Some(n) = text.strip_prefix("order<=") {
        return n.parse().ok().map(Cond::OrderLe);
    }
    if let Some(n) = text.strip_prefix("order=") {
        return n.parse().ok().map(Cond::OrderEq);
    }
    if let Some(prefix) = text.strip_prefix("under=") {
        return is_name(prefix).then(|| Cond::Under(prefix.to_owned()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_line_parses_with_conditions_and_reason() {
        let rules = parse(
            "# comment\n\nfallback exact allocate_slab gfp+NORETRY,order>=1 5.10,6.1 slab's first try # note\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.verdict, Verdict::Is(Outcome::Fallback));
        assert_eq!(r.kind, Kind::Exact);
        assert_eq!(
            r.when,
            vec![Cond::Gfp("NORETRY".into(), true), Cond::OrderGe(1)]
        );
        assert_eq!(r.kernels, vec!["5.10", "6.1"]);
        assert_eq!(r.reason, "slab's first try");
        assert!(r.names("allocate_slab"));
        assert!(!r.names("allocate_slab_x"));
    }

    #[test]
    fn bad_lines_name_their_line_and_problem() {
        let err = |text: &str| parse(text).unwrap_err();
        assert!(matches!(
            err("fallback exact f - -"),
            OutcomeRuleError::MissingField {
                line: 1,
                field: "reason"
            }
        ));
        assert!(matches!(
            err("\nmaybe exact f - - why"),
            OutcomeRuleError::UnknownOutcome { line: 2, .. }
        ));
        assert!(matches!(
            err("pass glob f - - why"),
            OutcomeRuleError::UnknownKind { .. }
        ));
        assert!(matches!(
            err("pass exact f* - - why"),
            OutcomeRuleError::BadPattern { .. }
        ));
        assert!(matches!(
            err("pass exact f order>1 - why"),
            OutcomeRuleError::BadCondition { .. }
        ));
        assert!(matches!(
            err("pass exact f - six why"),
            OutcomeRuleError::BadKernels { .. }
        ));
        assert!(
            err("pass exact f - six why")
                .to_string()
                .starts_with("line 1:")
        );
    }
}
