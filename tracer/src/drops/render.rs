//! Text of the drops beside the failures: the start-up line, the live view,
//! the end summary, and the totals rows of `record`.

use std::fmt::Write as _;

use super::{DropReport, Status};
use crate::{memory::netdrops::NetDrops, probe::DropProbe};

/// Attributed drop rows shown in the end summary at most.
const SUMMARY_SITES: usize = 10;

/// The start-up line: only when drops cannot be counted, or with `-v`.
#[must_use]
pub fn setup_line(probe: &DropProbe, verbose: u8) -> String {
    match probe {
        DropProbe::Attached(a) if verbose > 0 => {
            let names: Vec<&str> = a.counted.iter().map(|(_, n)| n.as_str()).collect();
            if a.which == super::reasons::DropReasons::All {
                format!(
                    "pagefail: counting packet drops of all {} reasons (skb:kfree_skb)\n",
                    names.len()
                )
            } else {
                format!(
                    "pagefail: counting packet drops of the memory reasons {} (skb:kfree_skb)\n",
                    names.join(", ")
                )
            }
        }
        DropProbe::Unavailable(why) => {
            format!("pagefail: packet drop reasons not available ({why}); TCP drop counters only\n")
        }
        _ => String::new(),
    }
}

fn reason_list(total: &DropReport, delta: Option<&DropReport>) -> String {
    let mut s = String::new();
    for (name, n) in &total.reasons {
        let d = delta
            .and_then(|d| d.reasons.iter().find(|(r, _)| r == name))
            .map_or(0, |(_, n)| *n);
        let _ = write!(s, " {name} {n}");
        if delta.is_some() && d > 0 {
            let _ = write!(s, " (+{d})");
        }
    }
    if s.is_empty() { " none".to_owned() } else { s }
}

fn tcp_list(tcp: &NetDrops) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |n| n.to_string());
    format!(
        "ListenDrops {}  ListenOverflows {}  TCPBacklogDrop {}  softnet backlog {}",
        opt(tcp.listen_drops),
        opt(tcp.listen_overflows),
        opt(tcp.backlog_drops),
        tcp.softnet_dropped
    )
}

/// The live view's drop line: totals since start, with this interval's
/// increase.
#[must_use]
pub fn live_text(total: &DropReport, delta: &DropReport) -> String {
    let mut s = String::from("  drops");
    match &total.status {
        Status::Counting(which) => {
            let _ = write!(s, " ({which} reasons):{}", reason_list(total, Some(delta)));
        }
        Status::Unavailable(_) => s.push_str(": reasons n/a"),
        Status::Disabled => s.push_str(": reasons off"),
    }
    if let Some(tcp) = &total.tcp {
        let _ = write!(s, " | tcp: {}", tcp_list(tcp));
    }
    s.push('\n');
    s
}

/// The end summary's drop section.
#[must_use]
pub fn summary_text(r: &DropReport) -> String {
    let mut s = String::new();
    match &r.status {
        Status::Counting(which) => {
            let _ = writeln!(
                s,
                "packet drops ({which} reasons, skb:kfree_skb): {} =>{}",
                r.total(),
                reason_list(r, None)
            );
            let unseen = r
                .unseen
                .map_or_else(|| "not counted by the kernel".to_owned(), |n| n.to_string());
            let _ = writeln!(
                s,
                "  unattributed (attribution map full): {}; without a stack: {}; \
                 kfree_skb events unseen (nested, reason unknown): {unseen}",
                r.site_lost, r.stack_errors
            );
            if !r.sites.is_empty() {
                let _ = writeln!(
                    s,
                    "  {:<18} {:<16} {:>7} {:<8} {:<18} {:<28} {:>8}",
                    "REASON", "COMM", "PID", "CONTEXT", "PATH", "DROPPED_IN", "DROPS"
                );
                for d in r.sites.iter().take(SUMMARY_SITES) {
                    let _ = writeln!(
                        s,
                        "  {:<18} {:<16} {:>7} {:<8} {:<18} {:<28} {:>8}",
                        d.reason,
                        d.comm,
                        d.tgid,
                        d.context.as_str(),
                        if d.path.is_empty() { "-" } else { &d.path },
                        if d.site.is_empty() { "?" } else { &d.site },
                        d.drops
                    );
                }
                if r.sites.len() > SUMMARY_SITES {
                    let _ = writeln!(s, "  ... {} more", r.sites.len() - SUMMARY_SITES);
                }
            }
        }
        Status::Unavailable(why) => {
            let _ = writeln!(s, "packet drop reasons: not available ({why})");
        }
        Status::Disabled => {}
    }
    if let Some(tcp) = &r.tcp {
        let _ = writeln!(s, "tcp drops over the run: {}", tcp_list(tcp));
    }
    match &r.rx_alloc_fail {
        Ok(q) if q.is_empty() => {
            s.push_str("rx-alloc-fail: no device reports per-queue receive allocation failures\n");
        }
        Ok(q) => {
            let parts: Vec<String> = q
                .iter()
                .map(|c| format!("{}/rx{} {}", c.ifname, c.queue, c.count))
                .collect();
            let _ = writeln!(s, "rx-alloc-fail per queue: {}", parts.join("  "));
        }
        Err(why) => {
            let _ = writeln!(s, "rx-alloc-fail: not available ({why})");
        }
    }
    s
}

/// Rows for the totals file: metric name and value (`None`: not known).
#[must_use]
pub fn totals_rows(r: &DropReport) -> Vec<(String, Option<u64>)> {
    let mut rows = Vec::new();
    if let Status::Counting(_) = r.status {
        for (name, n) in &r.reasons {
            rows.push((format!("drops:{name}"), Some(*n)));
        }
        rows.push(("drops_unattributed".to_owned(), Some(r.site_lost)));
        rows.push(("drops_unseen".to_owned(), r.unseen));
    }
    if let Some(tcp) = &r.tcp {
        rows.push(("tcp_listen_drops".to_owned(), tcp.listen_drops));
        rows.push(("tcp_listen_overflows".to_owned(), tcp.listen_overflows));
        rows.push(("tcp_backlog_drops".to_owned(), tcp.backlog_drops));
        rows.push(("softnet_dropped".to_owned(), Some(tcp.softnet_dropped)));
    }
    if let Ok(queues) = &r.rx_alloc_fail {
        for q in queues {
            rows.push((
                format!("rx_alloc_fail:{}:{}", q.ifname, q.queue),
                Some(q.count),
            ));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classify::Context, drops::DropSite};

    fn report() -> DropReport {
        DropReport {
            status: Status::Counting("memory".to_owned()),
            reasons: vec![("NEIGH_CREATEFAIL".to_owned(), 2), ("NOMEM".to_owned(), 5)],
            site_lost: 1,
            stack_errors: 0,
            unseen: Some(0),
            sites: vec![DropSite {
                reason: "NOMEM".to_owned(),
                comm: "iperf3".to_owned(),
                tgid: 42,
                context: Context::Softirq,
                path: "net-rx".to_owned(),
                site: "tcp_v4_rcv".to_owned(),
                drops: 4,
            }],
            tcp: Some(NetDrops {
                softnet_dropped: 0,
                listen_drops: Some(3),
                listen_overflows: Some(1),
                backlog_drops: None,
            }),
            rx_alloc_fail: Err("no netdev family".to_owned()),
        }
    }

    #[test]
    fn summary_says_every_count_and_what_is_missing() {
        let r = report();
        let s = summary_text(&r);
        assert!(
            s.contains("(memory reasons, skb:kfree_skb): 7 => NEIGH_CREATEFAIL 2 NOMEM 5"),
            "{s}"
        );
        assert!(s.contains("attribution map full): 1;"), "{s}");
        assert!(
            s.contains("iperf3") && s.contains("tcp_v4_rcv") && s.contains("softirq"),
            "{s}"
        );
        assert!(
            s.contains("ListenDrops 3") && s.contains("TCPBacklogDrop n/a"),
            "{s}"
        );
        assert!(
            s.contains("rx-alloc-fail: not available (no netdev family)"),
            "{s}"
        );
        let unavailable = DropReport {
            status: Status::Unavailable("no reason field".to_owned()),
            reasons: Vec::new(),
            ..r
        };
        assert!(summary_text(&unavailable).contains("not available (no reason field)"));
    }

    #[test]
    fn live_line_shows_interval_increases() {
        let total = report();
        let delta = DropReport {
            reasons: vec![("NEIGH_CREATEFAIL".to_owned(), 0), ("NOMEM".to_owned(), 2)],
            ..report()
        };
        let s = live_text(&total, &delta);
        assert!(s.contains("NEIGH_CREATEFAIL 2 NOMEM 5 (+2)"), "{s}");
    }

    #[test]
    fn totals_rows_name_each_reason() {
        let rows = totals_rows(&report());
        let get = |m: &str| rows.iter().find(|(k, _)| k == m).map(|(_, v)| *v);
        assert_eq!(get("drops:NOMEM"), Some(Some(5)));
        assert_eq!(get("drops:NEIGH_CREATEFAIL"), Some(Some(2)));
        assert_eq!(get("drops_unattributed"), Some(Some(1)));
        assert_eq!(get("tcp_backlog_drops"), Some(None));
        assert_eq!(get("tcp_listen_drops"), Some(Some(3)));
    }
}
