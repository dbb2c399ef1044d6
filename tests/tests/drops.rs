//! Kernel tier: the `skb:kfree_skb` drop counter on the real kernel, checked
//! against the kernel's own count (a tracefs hist trigger keyed by reason).
//! Root, serial.

use std::{collections::BTreeMap, net::UdpSocket};

use pagefail_tests::{bpf_available, hist::FieldCount, tracefs};
use tracer::{
    drops::reasons::{DropReasons, MEMORY_REASONS},
    probe::{DropProbe, ProbeConfig, Tracer, drops::reason_table},
};

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    u32::try_from(unsafe { libc::gettid() }).expect("tid")
}

/// A loopback UDP port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// Send `n` datagrams to a closed loopback port: each is dropped with
/// `NO_SOCKET` in this thread's softirq (loopback delivers on the sender's CPU
/// before `sendto` returns).
fn send_to_closed_port(n: usize) {
    let port = closed_port();
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..n {
        s.send_to(b"pagefail", ("127.0.0.1", port)).expect("send");
    }
}

fn cfg(drops: DropReasons) -> ProbeConfig {
    ProbeConfig {
        atomic_only: true,
        warn_alloc: false,
        drops,
        ..ProbeConfig::default()
    }
}

/// pagefail's drops of this process, by reason number.
fn own_drops(tracer: &Tracer) -> BTreeMap<u64, u64> {
    let pid = std::process::id();
    let mut out = BTreeMap::new();
    for s in tracer.drop_sites().expect("drop sites") {
        if s.key.tgid == pid {
            *out.entry(u64::from(s.key.reason)).or_default() += s.count;
        }
    }
    out
}

/// Datagrams sent to the closed port.
const SENT: usize = 300;

#[test]
fn drop_counts_per_reason_equal_the_kernels_hist() {
    if !bpf_available("drop_counts_per_reason_equal_the_kernels_hist") {
        return;
    }
    let tfs = tracefs();
    let table = match reason_table(&tfs.to_string_lossy()) {
        Ok(t) => t,
        Err(why) => {
            // No reasons (before 5.17): the tracer must say so, not guess.
            let tracer = Tracer::attach(&cfg(DropReasons::All)).expect("attach");
            assert!(
                matches!(&tracer.drops, DropProbe::Unavailable(w) if *w == why),
                "{:?}",
                tracer.drops
            );
            eprintln!("SKIPPED the hist comparison: {why}");
            return;
        }
    };
    let no_socket = table
        .number("NO_SOCKET")
        .expect("NO_SOCKET in the reason table");
    let tid = gettid();
    let kernel_count = FieldCount::start(
        &tfs,
        &format!("pagefail-drops-{}", std::process::id()),
        "skb/kfree_skb",
        "reason",
        &format!("common_pid == {tid}"),
    )
    .expect("kernel count");
    eprintln!("kernel count by {:?}", kernel_count.method());
    let mut tracer = Tracer::attach(&cfg(DropReasons::All)).expect("attach");
    assert!(
        matches!(tracer.drops, DropProbe::Attached(_)),
        "{:?}",
        tracer.drops
    );
    let before = tracer.drop_counts().expect("counts").expect("attached");
    send_to_closed_port(SENT);
    tracer.detach();
    kernel_count.stop();
    let (kernel, dropped) = kernel_count
        .read(&|name| table.number(name).map(u64::from))
        .expect("kernel count");
    drop(kernel_count);
    assert_eq!(dropped, 0, "the kernel's count dropped entries");

    let ours = own_drops(&tracer);
    let after = tracer.drop_counts().expect("counts").expect("attached");
    let delta = after.since(&before);
    let lost = delta.site_lost + delta.unseen.unwrap_or(0);
    eprintln!(
        "kernel hist (this thread) {kernel:?}; pagefail (this process) {ours:?}; \
         unattributed {} unseen {:?}",
        delta.site_lost, delta.unseen
    );
    assert!(
        kernel.get(&u64::from(no_socket)).copied().unwrap_or(0) >= SENT as u64,
        "the kernel saw fewer NO_SOCKET drops than datagrams sent: {kernel:?}"
    );
    // Per reason: equal, or short by no more than the counted losses.
    let reasons: std::collections::BTreeSet<u64> =
        kernel.keys().chain(ours.keys()).copied().collect();
    for r in reasons {
        let k = kernel.get(&r).copied().unwrap_or(0);
        let p = ours.get(&r).copied().unwrap_or(0);
        assert!(
            p <= k && k - p <= lost,
            "reason {r} ({}): kernel {k}, pagefail {p}, counted losses {lost}",
            table.name(u32::try_from(r).unwrap_or(u32::MAX))
        );
    }
    // The per-reason counter covers every process: at least ours.
    assert!(delta.by_reason.get(&no_socket).copied().unwrap_or(0) >= SENT as u64);
}

#[test]
fn memory_mode_counts_only_the_memory_reasons() {
    if !bpf_available("memory_mode_counts_only_the_memory_reasons") {
        return;
    }
    let tfs = tracefs();
    if let Err(why) = reason_table(&tfs.to_string_lossy()) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut tracer = Tracer::attach(&cfg(DropReasons::Memory)).expect("attach");
    let DropProbe::Attached(a) = &tracer.drops else {
        panic!("not attached: {:?}", tracer.drops);
    };
    let names: Vec<String> = a.counted.iter().map(|(_, n)| n.clone()).collect();
    assert!(names.iter().any(|n| n == "NOMEM"), "{names:?}");
    for n in &names {
        assert!(
            MEMORY_REASONS.iter().any(|(m, _)| m == n),
            "{n} is not a memory reason"
        );
    }
    let no_socket = a.table.number("NO_SOCKET").expect("NO_SOCKET");
    send_to_closed_port(50);
    tracer.detach();
    let counts = tracer.drop_counts().expect("counts").expect("attached");
    assert!(!counts.by_reason.contains_key(&no_socket), "{counts:?}");
    assert!(
        own_drops(&tracer).is_empty(),
        "NO_SOCKET drops were attributed in memory mode"
    );
}

#[test]
fn drops_off_attaches_nothing() {
    if !bpf_available("drops_off_attaches_nothing") {
        return;
    }
    let tracer = Tracer::attach(&cfg(DropReasons::Off)).expect("attach");
    assert!(matches!(tracer.drops, DropProbe::Disabled));
    assert_eq!(tracer.drop_counts().expect("counts"), None);
}
