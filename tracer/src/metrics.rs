//! Prometheus metrics for `pagefail record`: counters kept since start, the
//! `OpenMetrics` text exposition, and a small HTTP endpoint serving it.
//!
//! Labels leave out the pid (unbounded over weeks); the number of distinct
//! failure label sets is capped, and failures beyond the cap are counted in a
//! series with `comm="[other]"`, so the sum over series stays exact.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::{
    aggregate::OTHER,
    drops::DropReport,
    memory::{Snapshot, Sources},
    probe::Counters,
};

/// Labels of one failure series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub comm: String,
    pub context: String,
    pub path: String,
    pub order: String,
    pub gfp_flags: String,
    pub atomic: String,
    /// `zone`, `memcg`, `nolock` or `unknown`.
    pub cause: String,
    /// `terminal`, `fallback` or `unknown`.
    pub outcome: String,
}

/// Labels of per-order series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrderLabels {
    pub order: String,
}

/// Labels of per-zone memory series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    pub node: String,
    pub zone: String,
}

/// Labels of per-zone, per-order memory series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneOrderLabels {
    pub node: String,
    pub zone: String,
    pub order: String,
}

/// Labels of the watermark series (`level`: min, low, high).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatermarkLabels {
    pub node: String,
    pub zone: String,
    pub level: String,
}

/// The memory state as gauges, read from `/proc` when scraped (at most once
/// a second), so fragmentation is seen over time next to the failures.
struct MemoryGauges {
    sources: Sources,
    refreshed: Option<Instant>,
    free_blocks: Family<ZoneOrderLabels, Gauge>,
    order_capacity: Family<ZoneOrderLabels, Gauge>,
    largest_free_order: Family<ZoneLabels, Gauge>,
    free_bytes: Family<ZoneLabels, Gauge>,
    managed_bytes: Family<ZoneLabels, Gauge>,
    free_above_min_bytes: Family<ZoneLabels, Gauge>,
    watermark_bytes: Family<WatermarkLabels, Gauge>,
    highatomic_blocks: Family<ZoneLabels, Gauge>,
    min_free_kbytes: Gauge,
    watermark_scale_factor: Gauge,
    read_errors: Counter,
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl MemoryGauges {
    fn register(registry: &mut Registry, sources: Sources) -> Self {
        let g = Self {
            sources,
            refreshed: None,
            free_blocks: Family::default(),
            order_capacity: Family::default(),
            largest_free_order: Family::default(),
            free_bytes: Family::default(),
            managed_bytes: Family::default(),
            free_above_min_bytes: Family::default(),
            watermark_bytes: Family::default(),
            highatomic_blocks: Family::default(),
            min_free_kbytes: Gauge::default(),
            watermark_scale_factor: Gauge::default(),
            read_errors: Counter::default(),
        };
        registry.register(
            "memory_free_blocks",
            "Free blocks of exactly this order per zone (/proc/buddyinfo)",
            g.free_blocks.clone(),
        );
        registry.register(
            "memory_order_capacity",
            "Allocations of this order the zone's free lists could serve now (0: no free block \
             of this order or larger)",
            g.order_capacity.clone(),
        );
        registry.register(
            "memory_largest_free_order",
            "Largest order with a free block in the zone (-1: none)",
            g.largest_free_order.clone(),
        );
        registry.register(
            "memory_free_bytes",
            "Free memory of the zone (/proc/zoneinfo)",
            g.free_bytes.clone(),
        );
        registry.register(
            "memory_managed_bytes",
            "Memory the page allocator manages in the zone",
            g.managed_bytes.clone(),
        );
        registry.register(
            "memory_free_above_min_bytes",
            "Free memory above the zone's min watermark (negative below it)",
            g.free_above_min_bytes.clone(),
        );
        registry.register(
            "memory_watermark_bytes",
            "The zone's min, low and high watermarks",
            g.watermark_bytes.clone(),
        );
        registry.register(
            "memory_highatomic_blocks",
            "Pageblocks in the zone's high-order atomic reserve (/proc/pagetypeinfo; absent \
             when unreadable)",
            g.highatomic_blocks.clone(),
        );
        registry.register(
            "vm_min_free_kbytes",
            "vm.min_free_kbytes",
            g.min_free_kbytes.clone(),
        );
        registry.register(
            "vm_watermark_scale_factor",
            "vm.watermark_scale_factor",
            g.watermark_scale_factor.clone(),
        );
        registry.register(
            "memory_read_errors",
            "Scrapes whose memory state could not be read (the gauges keep their last values)",
            g.read_errors.clone(),
        );
        g
    }

    /// Read the memory state again when the last read is a second old.
    fn refresh(&mut self, now: Instant) {
        if self
            .refreshed
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.refreshed = Some(now);
        match Snapshot::read(&self.sources) {
            Ok(snap) => self.set(&snap),
            Err(_) => {
                self.read_errors.inc();
            }
        }
    }

    fn set(&self, snap: &Snapshot) {
        let page = snap.page_kb * 1024;
        for z in snap.zones.iter().filter(|z| z.is_populated()) {
            let zl = ZoneLabels {
                node: z.node.to_string(),
                zone: z.zone.clone(),
            };
            let bytes = |pages: u64| gauge_value(pages.saturating_mul(page));
            self.free_bytes.get_or_create(&zl).set(bytes(z.free));
            self.managed_bytes.get_or_create(&zl).set(bytes(z.managed));
            self.free_above_min_bytes
                .get_or_create(&zl)
                .set(z.free_above_min().saturating_mul(gauge_value(page)));
            for (level, pages) in [("min", z.min), ("low", z.low), ("high", z.high)] {
                self.watermark_bytes
                    .get_or_create(&WatermarkLabels {
                        node: zl.node.clone(),
                        zone: zl.zone.clone(),
                        level: level.to_owned(),
                    })
                    .set(bytes(pages));
            }
            if let Some(b) = snap.buddy_of(z.node, &z.zone) {
                self.largest_free_order
                    .get_or_create(&zl)
                    .set(b.largest_free_order().map_or(-1, i64::from));
                for order in 0..b.free.len() {
                    let l = ZoneOrderLabels {
                        node: zl.node.clone(),
                        zone: zl.zone.clone(),
                        order: order.to_string(),
                    };
                    self.free_blocks
                        .get_or_create(&l)
                        .set(gauge_value(b.free[order]));
                    self.order_capacity.get_or_create(&l).set(gauge_value(
                        crate::memory::buddyinfo::order_capacity(&b.free, order),
                    ));
                }
            }
            if let Some(n) = snap
                .pagetype
                .as_ref()
                .and_then(|p| p.blocks_of(z.node, &z.zone, "HighAtomic"))
            {
                self.highatomic_blocks
                    .get_or_create(&zl)
                    .set(gauge_value(n));
            }
        }
        self.min_free_kbytes
            .set(gauge_value(snap.sysctls.min_free_kbytes));
        self.watermark_scale_factor
            .set(gauge_value(snap.sysctls.watermark_scale_factor));
    }
}

/// Labels of the per-reason drop series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: String,
}

/// Labels of the attributed drop series (no comm, no pid: the cardinality
/// stays reasons x contexts x paths).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropSiteLabels {
    pub reason: String,
    pub context: String,
    pub path: String,
}

/// Labels of the TCP and backlog drop counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CounterLabels {
    pub counter: String,
}

/// Labels of the per-queue receive allocation failures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub ifname: String,
    pub queue: String,
}

/// The metrics pagefail exposes.
pub struct Metrics {
    registry: Registry,
    failures: Family<FailureLabels, Counter>,
    allocations: Family<OrderLabels, Counter>,
    failed_allocations: Family<OrderLabels, Counter>,
    lost: Counter,
    warn_alloc: Counter,
    unseen: Counter,
    drops: Family<DropLabels, Counter>,
    drop_sites: Family<DropSiteLabels, Counter>,
    drops_unattributed: Counter,
    tcp_drops: Family<CounterLabels, Counter>,
    rx_alloc_fail: Family<QueueLabels, Counter>,
    series: HashSet<FailureLabels>,
    cap: usize,
    memory: Option<MemoryGauges>,
}

impl Metrics {
    /// A registry with pagefail's metrics; `cap` bounds the failure series.
    #[must_use]
    pub fn new(cap: usize, kernel: &str, attach: &str) -> Self {
        let mut registry = Registry::with_prefix("pagefail");
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "failures",
            "Failed page allocations recorded, by task name, context, network path, order, gfp flags, cause and outcome",
            failures.clone(),
        );
        let allocations = Family::<OrderLabels, Counter>::default();
        registry.register(
            "allocations",
            "Successful page allocations by order",
            allocations.clone(),
        );
        let failed_allocations = Family::<OrderLabels, Counter>::default();
        registry.register(
            "failed_allocations",
            "Failed page allocations by order, before pagefail's filters",
            failed_allocations.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "lost_events",
            "Failures that matched the filters but found the ring buffer full",
            lost.clone(),
        );
        let warn_alloc = Counter::default();
        registry.register(
            "warn_alloc",
            "Entries of the kernel's warn_alloc (kprobe; 0 without kprobes)",
            warn_alloc.clone(),
        );
        let unseen = Counter::default();
        registry.register(
            "unseen_events",
            "Allocation events the kernel skipped because pagefail's program was already \
             running on the CPU (with --lean: all nested ones; else an upper bound, normally 0)",
            unseen.clone(),
        );
        let drops = Family::<DropLabels, Counter>::default();
        registry.register(
            "drops",
            "Packet drops by skb drop reason (skb:kfree_skb; by default only the reasons the \
             kernel attributes to memory)",
            drops.clone(),
        );
        let drop_sites = Family::<DropSiteLabels, Counter>::default();
        registry.register(
            "drops_attributed",
            "Packet drops by reason, context and network path of the dropping stack (all but \
             the unattributed ones)",
            drop_sites.clone(),
        );
        let drops_unattributed = Counter::default();
        registry.register(
            "drops_unattributed",
            "Packet drops counted by reason that found the attribution map full",
            drops_unattributed.clone(),
        );
        let tcp_drops = Family::<CounterLabels, Counter>::default();
        registry.register(
            "tcp_drops",
            "TCP and input backlog drop counters (/proc/net/netstat, softnet_stat)",
            tcp_drops.clone(),
        );
        let rx_alloc_fail = Family::<QueueLabels, Counter>::default();
        registry.register(
            "rx_alloc_fail",
            "Receive buffer allocation failures per queue (netdev netlink qstats, 6.9+)",
            rx_alloc_fail.clone(),
        );
        let info = Info::new(vec![
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ("kernel".to_owned(), kernel.to_owned()),
            ("attach".to_owned(), attach.to_owned()),
        ]);
        registry.register("build", "pagefail version, kernel and attach style", info);
        Self {
            registry,
            failures,
            allocations,
            failed_allocations,
            lost,
            warn_alloc,
            unseen,
            drops,
            drop_sites,
            drops_unattributed,
            tcp_drops,
            rx_alloc_fail,
            series: HashSet::new(),
            cap: cap.max(1),
            memory: None,
        }
    }

    /// Also expose the memory state read from `sources` (`Sources::proc()`
    /// on a live host), refreshed when scraped.
    #[must_use]
    pub fn with_memory(mut self, sources: Sources) -> Self {
        self.memory = Some(MemoryGauges::register(&mut self.registry, sources));
        self
    }

    /// Read the memory state again if it is older than a second.
    pub fn refresh_memory(&mut self) {
        if let Some(m) = &mut self.memory {
            m.refresh(Instant::now());
        }
    }

    /// Add failures to a series (or to the `[other]` series past the cap).
    pub fn add_failures(&mut self, mut labels: FailureLabels, n: u64) {
        if !self.series.contains(&labels) {
            if self.series.len() >= self.cap {
                labels = FailureLabels {
                    comm: OTHER.to_owned(),
                    context: String::new(),
                    path: String::new(),
                    order: labels.order,
                    gfp_flags: labels.gfp_flags,
                    atomic: labels.atomic,
                    cause: labels.cause,
                    outcome: labels.outcome,
                };
            }
            self.series.insert(labels.clone());
        }
        self.failures.get_or_create(&labels).inc_by(n);
    }

    /// Add the kernel counters' change over an interval.
    pub fn add_counters(&self, delta: &Counters) {
        for (order, n) in delta.allocs.iter().enumerate().filter(|(_, n)| **n > 0) {
            self.allocations
                .get_or_create(&OrderLabels {
                    order: order.to_string(),
                })
                .inc_by(*n);
        }
        for (order, n) in delta.fails.iter().enumerate().filter(|(_, n)| **n > 0) {
            self.failed_allocations
                .get_or_create(&OrderLabels {
                    order: order.to_string(),
                })
                .inc_by(*n);
        }
        self.lost.inc_by(delta.lost);
        self.warn_alloc.inc_by(delta.warn_alloc);
        self.unseen.inc_by(delta.unseen.unwrap_or(0));
    }

    /// Add the drops of a window.
    pub fn add_drops(&self, r: &DropReport) {
        for (reason, n) in &r.reasons {
            // Created at 0 too, so every counted reason has a series.
            self.drops
                .get_or_create(&DropLabels {
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        for d in &r.sites {
            self.drop_sites
                .get_or_create(&DropSiteLabels {
                    reason: d.reason.clone(),
                    context: d.context.to_string(),
                    path: d.path.clone(),
                })
                .inc_by(d.drops);
        }
        self.drops_unattributed.inc_by(r.site_lost);
        if let Some(tcp) = &r.tcp {
            for (name, v) in [
                ("ListenDrops", tcp.listen_drops),
                ("ListenOverflows", tcp.listen_overflows),
                ("TCPBacklogDrop", tcp.backlog_drops),
                ("softnet_dropped", Some(tcp.softnet_dropped)),
            ] {
                if let Some(n) = v {
                    self.tcp_drops
                        .get_or_create(&CounterLabels {
                            counter: name.to_owned(),
                        })
                        .inc_by(n);
                }
            }
        }
        if let Ok(queues) = &r.rx_alloc_fail {
            for q in queues {
                self.rx_alloc_fail
                    .get_or_create(&QueueLabels {
                        ifname: q.ifname.clone(),
                        queue: q.queue.to_string(),
                    })
                    .inc_by(q.count);
            }
        }
    }

    /// The `OpenMetrics` text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serve `GET /metrics` (any path) from `metrics` on `addr` until the task
/// is dropped.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Mutex<Metrics>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let body = metrics
                        .lock()
                        .map(|mut m| {
                            m.refresh_memory();
                            m.render()
                        })
                        .unwrap_or_default();
                    async move {
                        Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn labels(comm: &str) -> FailureLabels {
        FailureLabels {
            comm: comm.to_owned(),
            context: "softirq".into(),
            path: "bonding+tcp".into(),
            order: "3".into(),
            gfp_flags: "GFP_ATOMIC".into(),
            atomic: "true".into(),
            cause: "zone".into(),
            outcome: "terminal".into(),
        }
    }

    #[test]
    fn drops_add_up_per_reason_and_per_site() {
        use crate::{
            classify::Context,
            drops::{DropSite, Status},
        };
        let m = Metrics::new(10, "6.12.0", "raw_tp");
        let report = |nomem: u64| DropReport {
            status: Status::Counting("memory".to_owned()),
            reasons: vec![("NOMEM".to_owned(), nomem), ("PROTO_MEM".to_owned(), 0)],
            site_lost: 1,
            stack_errors: 0,
            unseen: Some(0),
            sites: vec![DropSite {
                reason: "NOMEM".to_owned(),
                comm: "x".to_owned(),
                tgid: 1,
                context: Context::Softirq,
                path: "net-rx".to_owned(),
                site: "f".to_owned(),
                drops: nomem - 1,
            }],
            tcp: Some(crate::memory::netdrops::NetDrops {
                softnet_dropped: 2,
                listen_drops: Some(3),
                listen_overflows: None,
                backlog_drops: Some(0),
            }),
            rx_alloc_fail: Err("none".to_owned()),
        };
        m.add_drops(&report(4));
        m.add_drops(&report(6));
        let text = m.render();
        for want in [
            "pagefail_drops_total{reason=\"NOMEM\"} 10",
            "pagefail_drops_total{reason=\"PROTO_MEM\"} 0",
            "pagefail_drops_attributed_total{reason=\"NOMEM\",context=\"softirq\",path=\"net-rx\"} 8",
            "pagefail_drops_unattributed_total 2",
            "pagefail_tcp_drops_total{counter=\"ListenDrops\"} 6",
            "pagefail_tcp_drops_total{counter=\"softnet_dropped\"} 4",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(
            !text.contains("ListenOverflows"),
            "an unknown counter is no series"
        );
    }

    #[test]
    fn exposition_has_the_series_and_caps_cardinality() {
        let mut m = Metrics::new(2, "6.18.0", "raw_tp");
        m.add_failures(labels("a"), 3);
        m.add_failures(labels("b"), 1);
        m.add_failures(labels("c"), 5);
        m.add_failures(labels("d"), 2);
        m.add_failures(labels("a"), 1);
        m.add_counters(&Counters {
            allocs: vec![10, 0, 2],
            fails: vec![0, 1],
            matched: 12,
            lost: 4,
            warn_alloc: 7,
            unseen: Some(9),
            ..Counters::default()
        });
        let text = m.render();
        assert!(text.contains("pagefail_unseen_events_total 9"), "{text}");
        assert!(text.contains(r#"pagefail_failures_total{comm="a",context="softirq",path="bonding+tcp",order="3",gfp_flags="GFP_ATOMIC",atomic="true",cause="zone",outcome="terminal"} 4"#), "{text}");
        assert!(
            text.contains(r#"comm="[other]""#) && text.contains("} 7"),
            "c and d summed: {text}"
        );
        assert!(!text.contains(r#"comm="c""#));
        assert!(text.contains(r#"pagefail_allocations_total{order="0"} 10"#));
        assert!(text.contains(r#"pagefail_failed_allocations_total{order="1"} 1"#));
        assert!(text.contains("pagefail_lost_events_total 4"));
        assert!(text.contains("pagefail_warn_alloc_total 7"));
        assert!(text.contains(r#"pagefail_build_info{version=""#));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn memory_gauges_follow_the_proc_files() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/proc/6.1");
        let snap = Snapshot::read(&Sources::dir(&dir)).unwrap();
        let mut m = Metrics::new(10, "k", "raw_tp").with_memory(Sources::dir(&dir));
        m.refresh_memory();
        let text = m.render();
        let zone = snap.key_zone().unwrap();
        let node = zone.node;
        let name = &zone.zone;
        let buddy = snap.buddy_of(node, name).unwrap();
        for (order, n) in buddy.free.iter().enumerate() {
            let line = format!(
                "pagefail_memory_free_blocks{{node=\"{node}\",zone=\"{name}\",order=\"{order}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line} missing in {text}");
            let capacity: u64 = buddy.free[order..]
                .iter()
                .enumerate()
                .map(|(i, n)| n << i)
                .sum();
            let line = format!(
                "pagefail_memory_order_capacity{{node=\"{node}\",zone=\"{name}\",order=\"{order}\"}} {capacity}\n"
            );
            assert!(text.contains(&line), "{line} missing");
        }
        let min = format!(
            "pagefail_memory_watermark_bytes{{node=\"{node}\",zone=\"{name}\",level=\"min\"}} {}\n",
            zone.min * 4096
        );
        assert!(text.contains(&min), "{min} missing");
        let above = format!(
            "pagefail_memory_free_above_min_bytes{{node=\"{node}\",zone=\"{name}\"}} {}\n",
            zone.free_above_min() * 4096
        );
        assert!(text.contains(&above), "{above} missing");
        assert!(text.contains(&format!(
            "pagefail_vm_min_free_kbytes {}\n",
            snap.sysctls.min_free_kbytes
        )));
        assert!(
            text.contains("pagefail_memory_read_errors_total 0\n"),
            "{text}"
        );
        // An unreadable source counts an error and keeps the last values.
        let mut broken = Metrics::new(10, "k", "raw_tp")
            .with_memory(Sources::dir(std::path::Path::new("/nonexistent")));
        broken.refresh_memory();
        assert!(
            broken
                .render()
                .contains("pagefail_memory_read_errors_total 1\n")
        );
    }

    #[test]
    fn endpoint_serves_the_exposition() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let m = Arc::new(Mutex::new(Metrics::new(10, "k", "raw_tp")));
            m.lock().unwrap().add_failures(labels("x"), 2);
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            let task = serve(addr, m).await.unwrap();
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.unwrap();
            assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
            assert!(buf.contains(r#"comm="x""#));
            task.abort();
        });
    }
}
