//! The dimensions summary rows are grouped by (`--by comm,pid,order`).

use std::{fmt, str::FromStr};

/// A dimension rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Comm,
    Pid,
    Cgroup,
    Context,
    Path,
    Order,
    Gfp,
    Stack,
}

impl Dim {
    const ALL: [Self; 8] = [
        Self::Comm,
        Self::Pid,
        Self::Cgroup,
        Self::Context,
        Self::Path,
        Self::Order,
        Self::Gfp,
        Self::Stack,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Comm => "comm",
            Self::Pid => "pid",
            Self::Cgroup => "cgroup",
            Self::Context => "context",
            Self::Path => "path",
            Self::Order => "order",
            Self::Gfp => "gfp",
            Self::Stack => "stack",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of dimensions rows are grouped by (`--by comm,pid,order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy(u8);

impl GroupBy {
    /// Whether rows are split by `dim`.
    #[must_use]
    pub fn has(self, dim: Dim) -> bool {
        self.0 & dim.bit() != 0
    }
}

impl Default for GroupBy {
    /// `comm,pid,context,path,order,gfp`: the CSV contract's row key.
    fn default() -> Self {
        "comm,pid,context,path,order,gfp"
            .parse()
            .unwrap_or(Self(0xff))
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bits = 0;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let dim = Dim::ALL
                .into_iter()
                .find(|d| d.name() == word)
                .ok_or_else(|| {
                    format!(
                        "unknown key `{word}`: use any of comm,pid,cgroup,context,path,order,gfp,stack"
                    )
                })?;
            bits |= dim.bit();
        }
        if bits == 0 {
            return Err(
                "give at least one key: comm,pid,cgroup,context,path,order,gfp,stack".into(),
            );
        }
        Ok(Self(bits))
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Dim::ALL
            .into_iter()
            .filter(|d| self.has(*d))
            .map(Dim::name)
            .collect();
        f.write_str(&names.join(","))
    }
}
