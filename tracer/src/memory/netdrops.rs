//! Packet drops to correlate allocation failures with real loss:
//! `/proc/net/softnet_stat` (per-CPU backlog drops, second column, hex) and
//! `/proc/net/netstat` (`TcpExt: ListenOverflows ListenDrops TCPBacklogDrop`).
//! Upstream reviewers ask for evidence of real loss before reserves are raised.

use serde::Serialize;

use super::MemoryError;

const SOFTNET: &str = "/proc/net/softnet_stat";
const NETSTAT: &str = "/proc/net/netstat";

/// Drop counters, totals since boot (or deltas, after [`NetDrops::since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NetDrops {
    /// Packets dropped because a CPU's input backlog was full (all CPUs).
    pub softnet_dropped: u64,
    /// TCP SYNs dropped at a listener (`TcpExt: ListenDrops`).
    pub listen_drops: Option<u64>,
    /// Accept queue overflows (`TcpExt: ListenOverflows`).
    pub listen_overflows: Option<u64>,
    /// Segments dropped because the socket backlog was full (`TcpExt: TCPBacklogDrop`).
    pub backlog_drops: Option<u64>,
}

impl NetDrops {
    /// Read both files now.
    ///
    /// # Errors
    /// When a file cannot be read or parsed.
    pub fn read() -> Result<Self, MemoryError> {
        let softnet = super::read(SOFTNET)?;
        let netstat = super::read(NETSTAT)?;
        Self::parse(&softnet, &netstat)
    }

    /// Parse the two files' text.
    ///
    /// # Errors
    /// A softnet line with fewer than two hex columns, or a `TcpExt:` header
    /// without its value line.
    pub fn parse(softnet: &str, netstat: &str) -> Result<Self, MemoryError> {
        let mut softnet_dropped = 0u64;
        for (i, line) in softnet.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let col = line.split_whitespace().nth(1).ok_or_else(|| {
                MemoryError::parse(SOFTNET, i + 1, "fewer than two columns".to_owned())
            })?;
            let v = u64::from_str_radix(col, 16)
                .map_err(|_| MemoryError::parse(SOFTNET, i + 1, format!("`{col}` is not hex")))?;
            softnet_dropped = softnet_dropped.saturating_add(v);
        }
        let mut out = Self {
            softnet_dropped,
            ..Self::default()
        };
        let lines: Vec<&str> = netstat.lines().collect();
        for (i, pair) in lines.chunks(2).enumerate() {
            let [names, values] = pair else {
                return Err(MemoryError::parse(
                    NETSTAT,
                    i * 2 + 1,
                    "a header line without its value line (truncated file?)".to_owned(),
                ));
            };
            let Some(names) = names.strip_prefix("TcpExt:") else {
                continue;
            };
            let values = values.strip_prefix("TcpExt:").ok_or_else(|| {
                MemoryError::parse(NETSTAT, i * 2 + 2, "expected the TcpExt values".to_owned())
            })?;
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                let v = value.parse::<u64>().ok();
                match name {
                    "ListenDrops" => out.listen_drops = v,
                    "ListenOverflows" => out.listen_overflows = v,
                    "TCPBacklogDrop" => out.backlog_drops = v,
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The change from `earlier` to `self`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let d = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b.unwrap_or(0)));
        Self {
            softnet_dropped: self.softnet_dropped.saturating_sub(earlier.softnet_dropped),
            listen_drops: d(self.listen_drops, earlier.listen_drops),
            listen_overflows: d(self.listen_overflows, earlier.listen_overflows),
            backlog_drops: d(self.backlog_drops, earlier.backlog_drops),
        }
    }

    /// Sum of all drop counters.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.softnet_dropped + self.listen_drops.unwrap_or(0) + self.backlog_drops.unwrap_or(0)
    }
}
