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
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, info::Info},
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::{aggregate::OTHER, probe::Counters};

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

/// The metrics pagefail exposes.
pub struct Metrics {
    registry: Registry,
    failures: Family<FailureLabels, Counter>,
    allocations: Family<OrderLabels, Counter>,
    failed_allocations: Family<OrderLabels, Counter>,
    lost: Counter,
    warn_alloc: Counter,
    unseen: Counter,
    series: HashSet<FailureLabels>,
    cap: usize,
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
            series: HashSet::new(),
            cap: cap.max(1),
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
                    let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
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
