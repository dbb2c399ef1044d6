//! Classifier tests against real kernel output (a Debian 6.1 guest driven into
//! atomic allocation failures) and against rule files.
//!
//! Expected labels below were worked out by reading each stack, not produced
//! by the classifier.

use super::*;

const TRACE_EXAMPLES: &str =
    include_str!("../../../tests/fixtures/vm-6.1/trace-examples-by-site.txt");
const DMESG_NEIGH: &str =
    include_str!("../../../tests/fixtures/vm-6.1/dmesg-01-neigh_hash-tcp_connect-bond0.txt");
const DMESG_REUSEPORT: &str =
    include_str!("../../../tests/fixtures/vm-6.1/dmesg-02-reuseport-listen.txt");

// ---------------------------------------------------------------------------
// Test-only parsers for the two stack shapes.
// ---------------------------------------------------------------------------

/// One `<stack trace>` record of tracefs output.
struct TraceStack<'a> {
    /// `comm-pid` and CPU of the record line (`nettool-184`, `000`).
    task: &'a str,
    cpu: &'a str,
    /// The irq-info column (`..s2.`): its third character is `h`/`H` in
    /// hardirq, `s` in softirq, `.` in task context.
    flags: &'a str,
    frames: Vec<Frame<'a>>,
}

/// One `### site ctx=... order=N` section of the examples file.
struct Section<'a> {
    header: &'a str,
    ctx: &'a str,
    /// `(task, cpu, flags)` of the section's `mm_page_alloc` event.
    event: (&'a str, &'a str, &'a str),
    stacks: Vec<TraceStack<'a>>,
}

/// `comm-pid [cpu] flags ...` of a tracefs record line.
fn record_fields(line: &str) -> (&str, &str, &str) {
    let mut words = line.split_whitespace();
    let task = words.next().expect("record has a task");
    let cpu = words
        .next()
        .and_then(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .expect("record has a [cpu]");
    let flags = words.next().expect("record has flags");
    (task, cpu, flags)
}

fn parse_trace_examples(text: &str) -> Vec<Section<'_>> {
    let mut sections: Vec<Section<'_>> = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("### ") {
            let ctx = header
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ctx="))
                .expect("header has ctx=");
            sections.push(Section {
                header,
                ctx,
                event: ("", "", ""),
                stacks: Vec::new(),
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        if let Some(function) = line.strip_prefix(" => ") {
            let stack = section.stacks.last_mut().expect("frame after a record");
            stack.frames.push(Frame {
                function: function.trim(),
                module: None,
            });
        } else if line.contains("<stack trace>") {
            let (task, cpu, flags) = record_fields(line);
            section.stacks.push(TraceStack {
                task,
                cpu,
                flags,
                frames: Vec::new(),
            });
        } else if line.contains(" mm_page_alloc: ") {
            section.event = record_fields(line);
        }
    }
    sections
}

/// The context tracefs printed for a record.
fn context_of_flags(flags: &str) -> Context {
    match flags.as_bytes().get(2) {
        Some(b'h' | b'H' | b'z' | b'Z') => Context::Hardirq,
        Some(b's') => Context::Softirq,
        Some(b'.') => Context::Task,
        other => panic!("unexpected irq flags {flags} ({other:?})"),
    }
}

/// Frames of the first `Call Trace:` of a kernel log, innermost first.
///
/// `? func+0x..` frames are left out: the unwinder found those addresses on
/// the stack but could not prove they are return addresses of the current
/// call chain, and they often come from earlier, unrelated calls
/// (`? __inet_dev_addr_type` in the neighbour report below).
fn parse_call_trace(text: &str) -> Vec<Frame<'_>> {
    let mut frames = Vec::new();
    let mut in_trace = false;
    for line in text.lines() {
        // Drop the `[   17.188775] ` timestamp.
        let body = line.split_once("] ").map_or(line, |(_, rest)| rest).trim();
        if body == "Call Trace:" {
            in_trace = true;
            continue;
        }
        if !in_trace {
            continue;
        }
        if body == "</TASK>" || body == "Mem-Info:" {
            break;
        }
        if body.starts_with('?') || body.starts_with('<') {
            continue;
        }
        let mut words = body.split_whitespace();
        let Some(symbol) = words.next() else {
            continue;
        };
        // `func+0x44/0x5c`; register dumps and `RIP: 0033:...` lines have no `+0x`.
        let Some((function, offset)) = symbol.split_once('+') else {
            continue;
        };
        if !offset.starts_with("0x") {
            continue;
        }
        let module = words
            .next()
            .and_then(|w| w.strip_prefix('[')?.strip_suffix(']'));
        frames.push(Frame { function, module });
    }
    frames
}

fn names<'a>(frames: &[Frame<'a>]) -> Vec<&'a str> {
    frames.iter().map(|f| f.function).collect()
}

// ---------------------------------------------------------------------------
// Real tracefs stacks.
// ---------------------------------------------------------------------------

/// Every stack of `trace-examples-by-site.txt`: (section header, index of the
/// stack in its section, expected paths, expected context).
///
/// A section may hold stacks of other CPUs printed in between (tracefs
/// interleaves them), so the header's site is not always the stack's.
const EXPECTED_TRACE: &[(&str, usize, &str, Context)] = &[
    // Receive of an ACK-worthy segment, run from a bh-enable after a transmit:
    // only the softirq's own frames count, so the transmit outside is not net-tx.
    (
        "__tcp_send_ack.part.0 ctx=softirq order=2",
        0,
        "net-rx+tcp",
        Context::Softirq,
    ),
    (
        "tcp_stream_alloc_skb ctx=task order=2",
        0,
        "tcp",
        Context::Task,
    ),
    // TCP segmentation inside the bond's transmit.
    (
        "skb_segment ctx=task order=2",
        0,
        "bonding+net-tx+tcp",
        Context::Task,
    ),
    (
        "tcp_stream_alloc_skb ctx=task order=1",
        0,
        "tcp",
        Context::Task,
    ),
    ("arp_create ctx=task order=1", 0, "neigh+tcp", Context::Task),
    ("pskb_expand_head ctx=task order=2", 0, "tcp", Context::Task),
    (
        "sk_clone_lock ctx=softirq order=3",
        0,
        "net-rx+tcp",
        Context::Softirq,
    ),
    (
        "__tcp_send_ack.part.0 ctx=task order=2",
        0,
        "tcp",
        Context::Task,
    ),
    // TCP loss probe timer interrupting a sendmsg: the timer is TCP's.
    (
        "tcp_stream_alloc_skb ctx=softirq order=1",
        0,
        "tcp",
        Context::Softirq,
    ),
    (
        "tcp_make_synack ctx=softirq order=2",
        0,
        "net-rx+tcp",
        Context::Softirq,
    ),
    // Zero-window probe timer in ksoftirqd, out through the bond.
    (
        "pskb_expand_head ctx=softirq order=2",
        0,
        "bonding+net-tx+tcp",
        Context::Softirq,
    ),
    (
        "neigh_hash_alloc ctx=task order=2",
        0,
        "neigh+tcp",
        Context::Task,
    ),
    (
        "arp_create ctx=softirq order=2",
        0,
        "neigh+tcp",
        Context::Task,
    ),
    (
        "arp_create ctx=softirq order=2",
        1,
        "net-rx+tcp",
        Context::Softirq,
    ),
    // TCP small-queue tasklet.
    (
        "tcp_stream_alloc_skb ctx=softirq order=2",
        0,
        "tcp",
        Context::Softirq,
    ),
    (
        "neigh_hash_alloc ctx=task order=1",
        0,
        "neigh+tcp",
        Context::Task,
    ),
    (
        "neigh_hash_alloc ctx=softirq order=2",
        0,
        "neigh+tcp",
        Context::Task,
    ),
    // Neighbour timer interrupting a TCP sendmsg: neigh only.
    (
        "arp_create ctx=softirq order=1",
        0,
        "neigh",
        Context::Softirq,
    ),
    (
        "pskb_expand_head ctx=softirq order=1",
        0,
        "bonding+net-tx+tcp",
        Context::Softirq,
    ),
    (
        "pskb_expand_head ctx=softirq order=1",
        1,
        "neigh",
        Context::Softirq,
    ),
    (
        "__tcp_send_ack.part.0 ctx=task order=1",
        0,
        "net-rx+tcp",
        Context::Softirq,
    ),
    (
        "__tcp_send_ack.part.0 ctx=task order=1",
        1,
        "neigh+tcp",
        Context::Task,
    ),
    (
        "sk_clone_lock ctx=softirq order=2",
        0,
        "net-rx+tcp",
        Context::Softirq,
    ),
    (
        "sk_clone_lock ctx=softirq order=2",
        1,
        "net-rx+tcp",
        Context::Softirq,
    ),
    (
        "neigh_hash_alloc ctx=softirq order=1",
        0,
        "neigh+tcp",
        Context::Task,
    ),
    (
        "neigh_hash_alloc ctx=softirq order=1",
        1,
        "tcp",
        Context::Softirq,
    ),
    // ICMP host-unreachable after a failed ARP resolution, in a timer run at
    // bh-enable inside tcp_close: the TCP frames outside are not its cause.
    (
        "__alloc_pages ctx=softirq order=1",
        0,
        "neigh",
        Context::Softirq,
    ),
    (
        "__neigh_notify ctx=softirq order=1",
        0,
        "neigh",
        Context::Softirq,
    ),
    (
        "sk_clone_lock ctx=task order=2",
        0,
        "net-rx+tcp",
        Context::Softirq,
    ),
    ("sk_clone_lock ctx=task order=2", 1, "tcp", Context::Task),
    (
        "__alloc_pages ctx=task order=1",
        0,
        "neigh+tcp",
        Context::Task,
    ),
    // listen() growing a SO_REUSEPORT group: inet_csk_listen_start is TCP's.
    (
        "__reuseport_alloc ctx=task order=2",
        0,
        "tcp",
        Context::Task,
    ),
    (
        "__tcp_send_ack.part.0 ctx=softirq order=1",
        0,
        "tcp",
        Context::Task,
    ),
    (
        "__tcp_send_ack.part.0 ctx=softirq order=1",
        1,
        "neigh",
        Context::Softirq,
    ),
    (
        "__reuseport_alloc ctx=task order=3",
        0,
        "tcp",
        Context::Task,
    ),
    (
        "__reuseport_alloc ctx=softirq order=3",
        0,
        "tcp",
        Context::Task,
    ),
    (
        "__reuseport_alloc ctx=softirq order=3",
        1,
        "net-rx+tcp",
        Context::Softirq,
    ),
    (
        "__reuseport_alloc ctx=softirq order=1",
        0,
        "tcp",
        Context::Task,
    ),
    (
        "__reuseport_alloc ctx=softirq order=1",
        1,
        "neigh",
        Context::Softirq,
    ),
    (
        "__tcp_send_ack.part.0 ctx=softirq order=3",
        0,
        "net-rx+tcp",
        Context::Softirq,
    ),
    (
        "__tcp_send_ack.part.0 ctx=softirq order=3",
        1,
        "net-rx+tcp",
        Context::Softirq,
    ),
    (
        "__reuseport_alloc ctx=task order=1",
        0,
        "tcp",
        Context::Task,
    ),
    (
        "__reuseport_alloc ctx=task order=1",
        1,
        "neigh+tcp",
        Context::Task,
    ),
    // Neighbour timer on interrupt exit inside kcompactd.
    (
        "__neigh_notify ctx=task order=2",
        0,
        "neigh",
        Context::Softirq,
    ),
    ("__neigh_notify ctx=task order=2", 1, "tcp", Context::Task),
    ("arp_create ctx=task order=2", 0, "neigh", Context::Softirq),
    ("arp_create ctx=task order=2", 1, "tcp", Context::Task),
    // ARP timer interrupting tcp_connect: neigh only.
    ("arp_create ctx=task order=3", 0, "neigh", Context::Softirq),
    ("arp_create ctx=task order=3", 1, "tcp", Context::Task),
    // Idle CPU, timer interrupt exit runs NET_RX; the received ACK opens the
    // window and TCP transmits through the bond, segmenting there.
    (
        "skb_segment ctx=softirq order=2",
        0,
        "bonding+net-rx+net-tx+tcp",
        Context::Softirq,
    ),
    (
        "skb_segment ctx=softirq order=2",
        1,
        "bonding+net-rx+net-tx+tcp",
        Context::Softirq,
    ),
];

#[test]
fn every_trace_example_stack_is_classified_as_expected() {
    let classifier = Classifier::builtin();
    let sections = parse_trace_examples(TRACE_EXAMPLES);
    assert_eq!(sections.len(), 41, "sections in the examples file");

    let mut seen = 0;
    for section in &sections {
        for (index, stack) in section.stacks.iter().enumerate() {
            let expected = EXPECTED_TRACE
                .iter()
                .find(|(header, i, _, _)| *header == section.header && *i == index)
                .unwrap_or_else(|| {
                    panic!("no expectation for stack {index} of `{}`", section.header)
                });
            let (_, _, paths, ctx) = *expected;
            assert!(!stack.frames.is_empty(), "{}: empty stack", section.header);
            assert_eq!(
                classifier.paths(&stack.frames).to_string(),
                paths,
                "paths of stack {index} of `{}`: {:?}",
                section.header,
                names(&stack.frames)
            );
            assert_eq!(
                context_of(&stack.frames),
                ctx,
                "context of stack {index} of `{}`",
                section.header
            );
            // The kernel's own view of the context, from preempt_count.
            assert_eq!(
                context_of(&stack.frames),
                context_of_flags(stack.flags),
                "tracefs flags {} of stack {index} of `{}`",
                stack.flags,
                section.header
            );
            seen += 1;
        }
    }
    assert_eq!(seen, EXPECTED_TRACE.len(), "every expectation used once");
    assert_eq!(seen, 51, "stacks in the examples file");
}

#[test]
fn header_context_matches_the_event_stack() {
    // The header's ctx= comes from the section's mm_page_alloc event; its
    // stack is the record of the same task on the same CPU with the same
    // flags. Sections whose stack was not captured are counted, not tested.
    let sections = parse_trace_examples(TRACE_EXAMPLES);
    let mut checked = 0;
    let mut without_stack = 0;
    for section in &sections {
        let (task, cpu, flags) = section.event;
        assert!(!task.is_empty(), "{}: no event line", section.header);
        let matching: Vec<&TraceStack<'_>> = section
            .stacks
            .iter()
            .filter(|s| s.task == task && s.cpu == cpu && s.flags == flags)
            .collect();
        match matching.as_slice() {
            [] => without_stack += 1,
            [stack] => {
                assert_eq!(
                    context_of(&stack.frames).as_str(),
                    section.ctx,
                    "`{}`",
                    section.header
                );
                checked += 1;
            }
            _ => panic!("{}: several stacks match the event", section.header),
        }
    }
    assert_eq!((checked, without_stack), (35, 6));
}

// ---------------------------------------------------------------------------
// Real kernel log call traces.
// ---------------------------------------------------------------------------

#[test]
fn dmesg_neighbour_table_growth_during_connect() {
    let frames = parse_call_trace(DMESG_NEIGH);
    assert_eq!(frames.len(), 19, "{:?}", names(&frames));
    assert_eq!(frames[0].function, "dump_stack_lvl");
    assert!(!names(&frames).contains(&"__inet_dev_addr_type"));
    let classifier = Classifier::builtin();
    assert_eq!(classifier.paths(&frames).to_string(), "neigh+tcp");
    // The trace sits inside <TASK>: a connect() system call.
    assert_eq!(context_of(&frames), Context::Task);
}

#[test]
fn dmesg_reuseport_group_growth_during_listen() {
    let frames = parse_call_trace(DMESG_REUSEPORT);
    assert_eq!(frames.len(), 16, "{:?}", names(&frames));
    let classifier = Classifier::builtin();
    assert_eq!(classifier.paths(&frames).to_string(), "tcp");
    assert_eq!(context_of(&frames), Context::Task);
}

#[test]
fn unreliable_log_frames_are_left_out() {
    let log = "\
[    1.000000] Call Trace:
[    1.000000]  <IRQ>
[    1.000000]  dump_stack_lvl+0x44/0x5c
[    1.000000]  warn_alloc+0x151/0x170
[    1.000000]  ? bond_start_xmit+0x10/0x80 [bonding]
[    1.000000]  __alloc_pages+0x305/0x330
[    1.000000]  xennet_alloc_rx_buffers+0x50/0x200 [xen_netfront]
[    1.000000]  xennet_poll+0x300/0x900 [xen_netfront]
[    1.000000]  __napi_poll+0x28/0x160
[    1.000000]  net_rx_action+0x29e/0x350
[    1.000000]  __do_softirq+0xc5/0x2c8
[    1.000000]  </IRQ>
";
    let frames = parse_call_trace(log);
    assert_eq!(frames.len(), 8);
    assert_eq!(frames[3].module, Some("xen_netfront"));
    let classifier = Classifier::builtin();
    assert_eq!(classifier.paths(&frames).to_string(), "xennet+net-rx");
    assert_eq!(context_of(&frames), Context::Softirq);
}

// ---------------------------------------------------------------------------
// Label matching and order.
// ---------------------------------------------------------------------------

fn frame(function: &str) -> Frame<'_> {
    Frame {
        function,
        module: None,
    }
}

fn in_module<'a>(function: &'a str, module: &'a str) -> Frame<'a> {
    Frame {
        function,
        module: Some(module),
    }
}

#[test]
fn builtin_labels_in_documented_order() {
    let classifier = Classifier::builtin();
    let labels: Vec<&str> = classifier.known_labels().collect();
    assert_eq!(
        labels,
        [
            "xennet",
            "virtio_net",
            "veth",
            "loopback",
            "mlx5",
            "ixgbe",
            "i40e",
            "ena",
            "bnxt",
            "e1000e",
            "igb",
            "hv_netvsc",
            "gve",
            "vmxnet3",
            "wifi",
            "usbnet",
            "bonding",
            "bridge",
            "vlan",
            "netfilter",
            "net-rx",
            "net-tx",
            "neigh",
            "tcp",
            "udp",
        ]
    );
}

#[test]
fn labels_print_in_fixed_order_whatever_the_frame_order() {
    let classifier = Classifier::builtin();
    // Outermost to innermost reversed on purpose: protocol frames innermost.
    let stack = [
        frame("udp_sendmsg"),
        frame("tcp_v4_rcv"),
        frame("arp_process"),
        frame("__dev_queue_xmit"),
        frame("__netif_receive_skb_core.constprop.0"),
        in_module("nft_do_chain", "nf_tables"),
        in_module("bond_3ad_xmit_xor", "bonding"),
        in_module("xennet_start_xmit", "xen_netfront"),
        in_module("veth_xmit", "veth"),
    ];
    assert_eq!(
        classifier.paths(&stack).to_string(),
        "xennet+veth+bonding+netfilter+net-rx+net-tx+neigh+tcp+udp"
    );
    // A bond transmit under TCP.
    let stack = [
        frame("__alloc_pages"),
        frame("skb_segment"),
        frame("__dev_queue_xmit"),
        in_module("bond_start_xmit", "bonding"),
        frame("dev_hard_start_xmit"),
        frame("__tcp_transmit_skb"),
    ];
    assert_eq!(classifier.paths(&stack).to_string(), "bonding+net-tx+tcp");
}

#[test]
fn each_label_once() {
    let classifier = Classifier::builtin();
    let stack = [
        frame("tcp_v4_rcv"),
        frame("tcp_v4_do_rcv"),
        in_module("tcp_packet", "nf_conntrack"),
    ];
    let paths = classifier.paths(&stack);
    assert_eq!(paths.to_string(), "netfilter+tcp");
    assert_eq!(paths.labels().collect::<Vec<_>>(), ["netfilter", "tcp"]);
    assert!(paths.contains("tcp"));
    assert!(!paths.contains("tc"));
    assert!(paths.is_network());
}

#[test]
fn no_network_frames_print_none() {
    let classifier = Classifier::builtin();
    // A memcg charge failure: fd table expansion.
    let stack = [
        frame("__alloc_pages"),
        frame("__kmalloc_large_node"),
        frame("__kvmalloc_node"),
        frame("alloc_fdtable"),
        frame("expand_files"),
        frame("do_dup2"),
        frame("do_syscall_64"),
    ];
    let paths = classifier.paths(&stack);
    assert_eq!(paths.to_string(), "none");
    assert!(!paths.is_network());
    assert_eq!(paths.labels().count(), 0);
    assert_eq!(paths, PathLabels::none());
    assert_eq!(classifier.paths(&[]).to_string(), "none");
}

#[test]
fn drivers_by_module_and_by_prefix() {
    let classifier = Classifier::builtin();
    let cases: &[(Frame<'_>, &str)] = &[
        (in_module("mlx5e_post_rx_wqes", "mlx5_core"), "mlx5"),
        (frame("mlx5e_napi_poll"), "mlx5"),
        (in_module("ixgbe_alloc_rx_buffers", "ixgbe"), "ixgbe"),
        (in_module("i40e_alloc_rx_buffers", "i40e"), "i40e"),
        (in_module("ena_refill_rx_bufs", "ena"), "ena"),
        (in_module("bnxt_alloc_rx_data", "bnxt_en"), "bnxt"),
        (in_module("e1000_alloc_rx_buffers", "e1000e"), "e1000e"),
        (in_module("igb_alloc_rx_buffers", "igb"), "igb"),
        (in_module("start_xmit", "virtio_net"), "virtio_net"),
        (frame("try_fill_recv"), "virtio_net"),
        (frame("loopback_xmit"), "loopback"),
        (in_module("veth_xmit", "veth"), "veth"),
        (in_module("netvsc_send", "hv_netvsc"), "hv_netvsc"),
        (in_module("br_handle_frame", "bridge"), "bridge"),
        (in_module("vlan_dev_hard_start_xmit", "8021q"), "vlan"),
        (in_module("nf_conntrack_in", "nf_conntrack"), "netfilter"),
        (in_module("ipt_do_table", "ip_tables"), "netfilter"),
        (frame("nf_hook_slow"), "netfilter"),
        (in_module("fq_codel_enqueue", "sch_fq_codel"), "net-tx"),
        (frame("__qdisc_run"), "net-tx"),
        (frame("napi_gro_receive"), "net-rx"),
        (frame("tcp4_gro_receive"), "net-rx+tcp"),
        (frame("__napi_alloc_skb"), "net-rx"),
        (frame("ndisc_send_ns"), "neigh"),
        (frame("__udp4_lib_rcv"), "udp"),
        (frame("inet_csk_accept"), "tcp"),
    ];
    for (f, expected) in cases {
        assert_eq!(
            classifier.paths(std::slice::from_ref(f)).to_string(),
            *expected,
            "{f:?}"
        );
    }
}

#[test]
fn lookalike_names_are_not_network() {
    let classifier = Classifier::builtin();
    for f in [
        // USB Type-C port controller, not TCP.
        frame("tcpci_irq"),
        frame("tcpm_pd_event_handler"),
        // 3.x VFS big-reader lock, not the bridge.
        frame("br_read_lock"),
        // e1000e's e1000_* names are shared with the old e1000 driver.
        in_module("e1000_clean_rx_irq", "e1000"),
        // NFS is not netfilter.
        frame("nfs_readpage"),
        // Prefixes match at the start only.
        frame("do_neigh_thing"),
        frame("mytcp_"),
        in_module("foo", "xen_netfront_extra"),
    ] {
        assert_eq!(classifier.paths(&[f]).to_string(), "none", "{f:?}");
    }
}

#[test]
fn only_the_interrupt_frames_count() {
    let classifier = Classifier::builtin();
    // xen-netfront's interrupt handler refilling RX buffers on top of a TCP
    // send: the send is merely what the interrupt interrupted.
    let stack = [
        frame("__alloc_pages"),
        in_module("xennet_alloc_rx_buffers", "xen_netfront"),
        in_module("xennet_interrupt", "xen_netfront"),
        frame("__handle_irq_event_percpu"),
        frame("handle_irq_event"),
        frame("handle_edge_irq"),
        frame("__xen_evtchn_do_upcall"),
        frame("tcp_sendmsg_locked"),
        frame("tcp_sendmsg"),
    ];
    assert_eq!(context_of(&stack), Context::Hardirq);
    assert_eq!(classifier.paths(&stack).to_string(), "xennet");
    // The same frames in a task: everything counts.
    let task = [frame("__alloc_pages"), frame("tcp_sendmsg")];
    assert_eq!(classifier.paths(&task).to_string(), "tcp");
}

// ---------------------------------------------------------------------------
// Rule files.
// ---------------------------------------------------------------------------

#[test]
fn builtin_table_parses() {
    let mut set = RuleSet::default();
    set.add_text(BUILTIN_RULES).expect("built-in rules");
    assert!(set.rules.len() > 50);
}

#[test]
fn user_rules_add_a_label_and_extend_one() {
    let user = "\
# our tunnels and an in-house TCP offload
wireguard   driver    module   wireguard   # the device
wireguard   driver    prefix   wg_
team        upper     module   team

tcp         protocol  prefix   acme_tcp_
";
    let classifier = Classifier::with_user_rules(user).expect("valid user rules");
    let stack = [
        in_module("wg_packet_encrypt_worker", "wireguard"),
        in_module("team_xmit", "team"),
        frame("acme_tcp_offload"),
        in_module("bond_start_xmit", "bonding"),
        in_module("xennet_start_xmit", "xen_netfront"),
    ];
    // New labels go after the built-in labels of their group.
    assert_eq!(
        classifier.paths(&stack).to_string(),
        "xennet+wireguard+bonding+team+tcp"
    );
    // The built-in classifier knows none of them.
    assert_eq!(
        Classifier::builtin().paths(&stack).to_string(),
        "xennet+bonding"
    );
}

#[test]
fn empty_user_file_is_the_builtin_table() {
    let classifier = Classifier::with_user_rules("# nothing\n\n").expect("empty file");
    assert!(
        classifier
            .known_labels()
            .eq(Classifier::builtin().known_labels())
    );
}

fn user_error(text: &str) -> RuleError {
    Classifier::with_user_rules(text).expect_err("bad rules must fail")
}

#[test]
fn bad_user_rules_name_the_line_and_the_problem() {
    let good = "wireguard driver module wireguard\n# comment\n\n";
    let cases: &[(&str, usize, &str)] = &[
        ("tcp protocol regex tcp_.*", 4, "unknown kind `regex`"),
        ("tcp protocol", 4, "missing the kind"),
        ("tcp", 4, "missing the group"),
        ("tcp transport prefix tcp_", 4, "unknown group `transport`"),
        ("tcp protocol prefix", 4, "the `prefix` rule has no pattern"),
        ("tcp protocol prefix   # patterns go here", 4, "no pattern"),
        (
            "tcp driver prefix tcp_",
            4,
            "belongs to group protocol, not driver",
        ),
        ("none generic exact foo", 4, "bad label `none`"),
        ("a+b generic exact foo", 4, "bad label `a+b`"),
        ("xyz generic prefix tcp_*", 4, "no wildcards"),
        ("xyz generic module nf-conntrack", 4, "never `-`"),
        ("xyz generic exact foo.part.0", 4, "compiler suffixes"),
        ("xyz generic exact foo/bar", 4, "only ASCII letters"),
    ];
    for (bad, line, message) in cases {
        let err = user_error(&format!("{good}{bad}\nudp protocol prefix ok_\n"));
        assert_eq!(err.line(), *line, "{bad}: {err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("line {line}: ")), "{text}");
        assert!(text.contains(message), "{bad}: `{text}` lacks `{message}`");
    }
    // The first line is line 1.
    assert_eq!(user_error("tcp protocol bogus x").line(), 1);
    assert!(matches!(
        user_error("tcp protocol bogus x"),
        RuleError::UnknownKind { line: 1, .. }
    ));
    assert!(matches!(
        user_error("\n\ntcp"),
        RuleError::MissingField {
            line: 3,
            field: "group"
        }
    ));
}

#[test]
fn too_many_labels_is_an_error() {
    use std::fmt::Write as _;
    let builtin = Classifier::builtin().known_labels().count();
    let mut text = String::new();
    for i in 0..=(rules::MAX_LABELS - builtin) {
        writeln!(text, "extra{i} driver exact fn{i}").expect("write to a String");
    }
    let err = user_error(&text);
    assert_eq!(err.line(), rules::MAX_LABELS - builtin + 1);
    assert!(matches!(err, RuleError::TooManyLabels { .. }));
    // One fewer fits, and the last label still gets its bit.
    let fits = text.split_once('\n').map_or("", |(_, rest)| rest);
    let classifier = Classifier::with_user_rules(fits).expect("exactly the maximum");
    let last = rules::MAX_LABELS - builtin;
    let function = format!("fn{last}");
    let label = format!("extra{last}");
    assert!(classifier.paths(&[frame(&function)]).contains(&label));
}

#[test]
fn wireless_and_usb_network_drivers_have_labels() {
    let c = Classifier::builtin();
    assert!(c.paths(&[frame("ieee80211_rx_napi")]).contains("wifi"));
    assert!(
        c.paths(&[in_module("ath10k_htt_rx_ring_fill_n", "ath10k_core")])
            .contains("wifi")
    );
    assert!(
        c.paths(&[in_module("mt76_dma_rx_fill", "mt76")])
            .contains("wifi")
    );
    assert!(
        c.paths(&[frame("usbnet_bh"), frame("rx_submit")])
            .contains("usbnet")
    );
    assert!(
        c.paths(&[in_module("rx_submit", "usbnet")])
            .contains("usbnet")
    );
    // Hyper-V's RNDIS filter is not a USB adapter, nor rtl8150's module wifi.
    let p = c.paths(&[frame("rndis_filter_receive")]);
    assert!(p.contains("hv_netvsc") && !p.contains("usbnet"));
    // 2.6 kernels' connection tracking before it became nf_conntrack.
    assert!(
        c.paths(&[in_module("alloc_hashtable", "ip_conntrack")])
            .contains("netfilter")
    );
    let p = c.paths(&[in_module("read_bulk_callback", "rtl8150")]);
    assert!(p.contains("usbnet") && !p.contains("wifi"));
}
