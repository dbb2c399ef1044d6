//! Throughput of `pagefail logs`' parser on a synthetic kernel log: the
//! fixture reports interleaved with ordinary kernel lines (a report every
//! few thousand lines, as on a host that has trouble but is not dying).
//!
//! Run: `cargo bench -p tracer --bench logs`. A benchmark, not a test: the
//! target is >= 100 MB/s on the project's 2-core machines.

use std::{fmt::Write as _, hint::black_box};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tracer::logs::{Event, Parser};

const FIXTURES: [&str; 6] = [
    include_str!("../../tests/fixtures/logs/dmesg-01-neigh_hash-tcp_connect-bond0.txt"),
    include_str!("../../tests/fixtures/logs/dmesg-02-reuseport-listen.txt"),
    include_str!("../../tests/fixtures/logs/v2.6.32-dmesg.txt"),
    include_str!("../../tests/fixtures/logs/v3.4-kern.log"),
    include_str!("../../tests/fixtures/logs/v4.9-journal-short-precise.txt"),
    include_str!("../../tests/fixtures/logs/v5.4-dmesg-T.txt"),
];

const ORDINARY: [&str; 8] = [
    "IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
    "EXT4-fs (nvme0n1p2): mounted filesystem with ordered data mode. Quota mode: none.",
    "audit: type=1400 audit(1700000000.123:456): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"/usr/bin/man\" pid=812 comm=\"apparmor_parser\"",
    "TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies.  Check SNMP counters.",
    "nf_conntrack: nf_conntrack: table full, dropping packet",
    "bond0: (slave eth1): link status definitely up, 10000 Mbps full duplex",
    "xen_netfront: xennet: skb rides the rocket: 19 slots, 65226 bytes",
    "systemd-journald[312]: Time spent on flushing to /var/log/journal/abc is 12.345ms for 1234 entries.",
];

/// About `target` bytes of log.
fn synthetic(target: usize) -> Vec<u8> {
    let mut out = String::with_capacity(target + 64 * 1024);
    let mut t = 100.0_f64;
    let mut n = 0usize;
    while out.len() < target {
        for _ in 0..3000 {
            let line = ORDINARY[n % ORDINARY.len()];
            let _ = writeln!(out, "[{t:12.6}] {line}");
            t += 0.0005;
            n += 1;
        }
        out.push_str(FIXTURES[n % FIXTURES.len()]);
    }
    out.into_bytes()
}

fn parse(log: &[u8]) -> u64 {
    let mut parser = Parser::new(2026);
    let mut reports = 0u64;
    let result = parser.parse_reader(log, &mut |ev| {
        if let Event::Report(r) = ev {
            reports += u64::from(r.order) + 1;
        }
    });
    assert!(result.is_ok());
    reports
}

fn bench(c: &mut Criterion) {
    let log = synthetic(64 * 1024 * 1024);
    let mut g = c.benchmark_group("logs");
    g.throughput(Throughput::Bytes(log.len() as u64));
    g.sample_size(10);
    g.bench_function("parse_64MiB_synthetic", |b| {
        b.iter(|| black_box(parse(black_box(&log))));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
