use super::*;

/// The 6.1 bit values of the flags the rules test.
fn table() -> GfpTable {
    GfpTable::from_entries(
        [
            (0x20, "__GFP_HIGH"),
            (0x400, "__GFP_DIRECT_RECLAIM"),
            (0x800, "__GFP_KSWAPD_RECLAIM"),
            (0x2000, "__GFP_NOWARN"),
            (0x10000, "__GFP_NORETRY"),
            (0x40000, "__GFP_COMP"),
            (0x80000, "__GFP_NOMEMALLOC"),
            (0x400000, "__GFP_ACCOUNT"),
        ]
        .into_iter()
        .map(|(m, n)| (m, n.to_owned()))
        .collect(),
    )
}

const ATOMIC: u64 = 0xa20;
const NOWARN_NORETRY: u64 = 0x2000 | 0x10000;
const KERNEL_ACCOUNT: u64 = 0xcc0 | 0x400000;

fn frames(names: &str) -> Vec<Frame<'_>> {
    names
        .split_whitespace()
        .map(|function| Frame {
            function,
            module: None,
        })
        .collect()
}

fn outcome(stack: &str, gfp: u64, order: u32) -> Outcome {
    let rules = OutcomeRules::builtin();
    let plan = rules.plan(&frames(stack));
    rules.outcome(&plan, &table(), gfp, order)
}

// Stacks as the 6.1 guest recorded them (allocator frames trimmed).
const SLAB_SKB_ACK: &str = "allocate_slab ___slab_alloc __kmem_cache_alloc_node __kmalloc_node_track_caller kmalloc_reserve __alloc_skb __tcp_send_ack.part.0 tcp_v4_do_rcv tcp_v4_rcv";
const SEGMENT: &str = "__kmalloc_large_node __kmalloc_node_track_caller kmalloc_reserve __alloc_skb skb_segment tcp_gso_segment inet_gso_segment";
const CLONE: &str = "allocate_slab ___slab_alloc kmem_cache_alloc sk_prot_alloc sk_clone_lock inet_csk_clone_lock tcp_create_openreq_child tcp_v4_syn_recv_sock";
const NEIGH_HASH: &str = "neigh_hash_alloc ___neigh_create ip_finish_output2 ip_output";
// 6.12: __get_free_pages is get_free_pages_noprof, which symbolize keeps.
const NEIGH_HASH_612: &str =
    "get_free_pages_noprof neigh_hash_alloc ___neigh_create neigh_event_ns";
const NEIGH_SLAB: &str = "allocate_slab ___slab_alloc __kmem_cache_alloc_node __kmalloc neigh_hash_alloc ___neigh_create";
const REUSEPORT: &str = "__kmalloc_large_node __kmalloc __reuseport_alloc reuseport_grow reuseport_add_sock __inet_hash";
const FDTABLE_TRY: &str = "___kmalloc_large_node __kmalloc_large_node_noprof __kvmalloc_node_noprof alloc_fdtable expand_files ksys_dup3";
const FDTABLE_VMALLOC_BULK: &str = "alloc_pages_bulk_noprof __vmalloc_area_node __vmalloc_node_range_noprof __kvmalloc_node_noprof alloc_fdtable expand_files";
const FDTABLE_VMALLOC_PAGE: &str = "__vmalloc_area_node __vmalloc_node_range_noprof __kvmalloc_node_noprof alloc_fdtable expand_files";

#[test]
fn slab_first_try_is_a_fallback_and_its_retry_goes_to_the_caller() {
    // The first try carries the NORETRY slab adds: fallback, whatever the caller.
    assert_eq!(
        outcome(SLAB_SKB_ACK, ATOMIC | NOWARN_NORETRY, 2),
        Outcome::Fallback
    );
    assert_eq!(
        outcome(CLONE, ATOMIC | NOWARN_NORETRY, 3),
        Outcome::Fallback
    );
    // The retry: the ACK is re-sent from the delayed-ACK timer; the clone is lost.
    assert_eq!(outcome(SLAB_SKB_ACK, ATOMIC | 0x2000, 1), Outcome::Fallback);
    assert_eq!(outcome(CLONE, ATOMIC | 0x2000, 1), Outcome::Terminal);
}

#[test]
fn network_sites_of_the_vm_run_get_their_outcome() {
    assert_eq!(outcome(SEGMENT, ATOMIC | 0x2000, 2), Outcome::Terminal);
    assert_eq!(outcome(NEIGH_HASH, ATOMIC, 1), Outcome::Fallback);
    assert_eq!(outcome(NEIGH_HASH_612, ATOMIC, 3), Outcome::Fallback);
    // neigh_hash_alloc through kmalloc: still the hash table that does not grow.
    assert_eq!(outcome(NEIGH_SLAB, ATOMIC, 1), Outcome::Fallback);
    assert_eq!(outcome(REUSEPORT, ATOMIC, 2), Outcome::Terminal);
}

#[test]
fn kvmalloc_try_falls_back_and_the_vmalloc_page_is_terminal() {
    assert_eq!(outcome(FDTABLE_TRY, 0x4428c0, 6), Outcome::Fallback);
    assert_eq!(
        outcome(FDTABLE_VMALLOC_BULK, KERNEL_ACCOUNT, 0),
        Outcome::Fallback
    );
    assert_eq!(
        outcome(FDTABLE_VMALLOC_PAGE, KERNEL_ACCOUNT, 0),
        Outcome::Terminal
    );
    // A huge-page vmalloc area is retried with small pages.
    assert_eq!(
        outcome(FDTABLE_VMALLOC_PAGE, KERNEL_ACCOUNT, 9),
        Outcome::Fallback
    );
}

#[test]
fn an_unnamed_frame_or_the_context_entry_ends_the_walk_unknown() {
    assert_eq!(
        outcome("some_driver_refill __alloc_skb", ATOMIC, 1),
        Outcome::Unknown
    );
    assert_eq!(
        outcome("__alloc_skb some_driver_poll", ATOMIC, 1),
        Outcome::Unknown
    );
    // A softirq entry: frames beyond it belong to the interrupted code.
    assert_eq!(
        outcome(
            "__alloc_skb net_rx_action handle_softirqs skb_segment",
            ATOMIC,
            1
        ),
        Outcome::Unknown
    );
    assert_eq!(outcome("", ATOMIC, 1), Outcome::Unknown);
}

#[test]
fn user_rules_come_first_and_can_name_new_sites() {
    let rules = OutcomeRules::with_user_rules(
        "terminal exact some_driver_refill - - our driver drops the frame\n\
         terminal exact neigh_hash_alloc - - we count a small table as lost\n",
    )
    .unwrap();
    let t = table();
    let plan = rules.plan(&frames("__alloc_skb some_driver_refill"));
    assert_eq!(rules.outcome(&plan, &t, ATOMIC, 1), Outcome::Terminal);
    assert_eq!(
        rules.reason(&plan, &t, ATOMIC, 1),
        Some("our driver drops the frame")
    );
    let plan = rules.plan(&frames(NEIGH_HASH));
    assert_eq!(rules.outcome(&plan, &t, ATOMIC, 1), Outcome::Terminal);
    assert!(OutcomeRules::with_user_rules("fallback exact f - -").is_err());
}

#[test]
fn every_builtin_rule_has_kernels_and_a_reason() {
    let rules = rules::parse(BUILTIN_OUTCOMES).unwrap();
    assert!(rules.len() > 50);
    for rule in &rules {
        assert!(!rule.kernels.is_empty(), "{rule:?}");
        assert!(rule.reason.len() > 10, "{rule:?}");
    }
}

#[test]
fn causes_follow_the_evidence() {
    let base = Evidence {
        nolock: false,
        account: false,
        warn_probe: true,
        warn_reached: true,
    };
    let never = || -> Option<bool> { panic!("zone state not needed") };
    assert_eq!(cause(base, never), Cause::Zone);
    assert_eq!(
        cause(
            Evidence {
                nolock: true,
                ..base
            },
            never
        ),
        Cause::Nolock
    );
    let account = Evidence {
        account: true,
        ..base
    };
    assert_eq!(cause(account, never), Cause::Zone);
    assert_eq!(
        cause(
            Evidence {
                warn_reached: false,
                ..account
            },
            never
        ),
        Cause::Memcg
    );
    let blind = Evidence {
        warn_probe: false,
        warn_reached: false,
        ..account
    };
    assert_eq!(cause(blind, || Some(true)), Cause::Memcg);
    assert_eq!(cause(blind, || Some(false)), Cause::Unknown);
    assert_eq!(cause(blind, || None), Cause::Unknown);
}

#[test]
fn lock_free_tries_are_seen_in_the_stack() {
    assert!(is_nolock(&frames(
        "alloc_frozen_pages_nolock_noprof alloc_pages_nolock_noprof bpf_map_alloc_pages"
    )));
    assert!(is_nolock(&frames(
        "try_alloc_pages_noprof bpf_map_alloc_pages"
    )));
    assert!(!is_nolock(&frames(SLAB_SKB_ACK)));
}
