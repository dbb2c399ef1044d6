//! Load the kernel program, attach it, read its counters.

pub mod caps;
pub mod drops;
mod info;
pub mod layout;
pub mod support;

use std::{fs, os::fd::AsFd as _, path::Path, time::Instant};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
    programs::{
        BtfTracePoint, KProbe, RawTracePoint, TracePoint, kprobe::KProbeLinkId,
        raw_trace_point::RawTracePointLinkId, tp_btf::BtfTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use thiserror::Error;
use tracer_common::{
    CpuState, LostCount, LostKey, MAP_EVENTS, MAP_FAILS, MAP_LOST, MAP_LOST_STACKS, MAP_STATE,
    MAP_STATS, NEST_SLOTS, ORDER_SLOTS, PAIR_BTF_TP, PAIR_RAW_TP, PROG_CLASSIC_TP, PROG_RAW_TP,
    PROG_WARN_ALLOC, PROG_WARN_FAIL, PROGS_BTF_TP, PROGS_RAW_TP, global, stat,
};

pub use self::{
    drops::{DropCounts, DropProbe},
    support::{AttachStyle, KernelFeatures},
};
use self::{layout::RecordLayout, support::attach_plan};
use crate::{drops::reasons::DropReasons, gfp::GfpTable};

/// The kernel program, built by `build.rs` and embedded in the binary.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pagefail-ebpf"));

/// What can go wrong setting up the tracer. Messages say what to do.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("{0}")]
    Capabilities(String),
    #[error(
        "kernel {release} has no BPF ring buffer (needs Linux 5.8 or later): use \
         `pagefail logs` to read the failures the kernel printed"
    )]
    NoRingBuf { release: String },
    #[error(
        "tracefs is not mounted and could not be mounted ({reason}): run \
         `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NoTracefs { reason: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode the gfp table of {path}: {source}")]
    Gfp {
        path: String,
        #[source]
        source: crate::gfp::GfpError,
    },
    #[error("cannot read the mm_page_alloc record layout: {0}")]
    Layout(#[from] layout::LayoutError),
    #[error("{0}")]
    Config(String),
    #[error("loading the kernel program failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("no attach style worked on kernel {release}: {tried}")]
    Attach { release: String, tried: String },
    #[error("reading kernel map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Kernel-side filters and sizes.
#[derive(Debug, Clone)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent options, one per command-line flag"
)]
pub struct ProbeConfig {
    pub min_order: u32,
    pub atomic_only: bool,
    /// Thread-group id (userspace pid) to keep, if any.
    pub tgid: Option<u32>,
    /// Thread id to keep, if any.
    pub tid: Option<u32>,
    /// Ring buffer size in bytes (a power of two, multiple of the page size);
    /// `None`: chosen from the CPU count.
    pub ring_bytes: Option<u32>,
    /// Attach style forced by the caller (else the support table decides).
    pub force_style: Option<AttachStyle>,
    /// Attach the `warn_alloc` kprobe where the kernel has kprobes.
    pub warn_alloc: bool,
    /// Wake the reader only when an eighth of the ring buffer is waiting;
    /// the reader must then also drain on a timer (as `Session` does).
    pub batch_wakeups: bool,
    /// Keep capabilities once attached (a [`crate::session::Session`]
    /// drops them all by default).
    pub keep_caps: bool,
    /// Attach the main program alone, without the nesting programs around it
    /// (raw and BTF tracepoints): cheaper per allocation, and the allocation
    /// events the kernel then keeps from it are counted
    /// ([`Counters::unseen`]) instead of handled.
    pub lean: bool,
    /// Which `skb:kfree_skb` drop reasons to count (kernel 5.17+).
    pub drops: DropReasons,
    /// Without `lean`: attach the four-program chain (enter, main, nested,
    /// exit; the default, exact in every VM-tier run) instead of the marked
    /// pair (main, helper; see tracer-ebpf; `PAGEFAIL_CHAIN=pair`). The pair
    /// costs two program dispatches per allocation instead of four, but a
    /// loaded 6.12 run counted 2 of 92,410 failures short and 3 under
    /// another gfp: it stays opt-in until that is understood.
    pub four_programs: bool,
    /// Failure-only mode: no tracepoint program, only a kprobe on
    /// `warn_alloc`, which every slow-path failure enters (NOWARN ones too):
    /// successful allocations cost nothing. It cannot see failures that
    /// never reach the slow path's end (memory-cgroup charge failures,
    /// lock-free tries) and counts no successful allocations. Needs kprobes.
    pub failures_only: bool,
    /// Observed fallbacks (`--observe-fallbacks`): after each delivered
    /// failure the kernel program awaits the same thread's first smaller
    /// success on the CPU this long and sends its stack (see
    /// [`crate::verdict::observed`]). `Duration::ZERO`: off. Needs the
    /// tracepoint (not `failures_only`).
    pub follow_window: std::time::Duration,
}

/// The environment variable that picks the nesting programs: `four`
/// (default) or `pair` (see [`ProbeConfig::four_programs`]).
pub const CHAIN_ENV: &str = "PAGEFAIL_CHAIN";

/// Whether `PAGEFAIL_CHAIN` asks for the four-program chain.
///
/// # Errors
/// When the variable holds neither `pair` nor `four`.
pub fn four_programs_from_env() -> Result<bool, String> {
    match std::env::var(CHAIN_ENV).as_deref() {
        Err(_) | Ok("" | "four") => Ok(true),
        Ok("pair") => Ok(false),
        Ok(other) => Err(format!("{CHAIN_ENV}={other}: expected `pair` or `four`")),
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            min_order: 0,
            atomic_only: true,
            tgid: None,
            tid: None,
            ring_bytes: None,
            force_style: None,
            warn_alloc: true,
            batch_wakeups: false,
            keep_caps: false,
            lean: false,
            drops: DropReasons::Memory,
            four_programs: true,
            failures_only: false,
            follow_window: std::time::Duration::ZERO,
        }
    }
}

/// Whether the `warn_alloc` kprobe is attached, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarnAllocProbe {
    Attached,
    Unavailable(String),
    Disabled,
}

#[derive(Debug)]
enum Link {
    /// Program name (main or nested copy) and link.
    Raw(&'static str, RawTracePointLinkId),
    Btf(&'static str, BtfTracePointLinkId),
    Classic(TracePointLinkId),
    /// Program name (`warn_alloc` marker or failure-only program) and link.
    Kprobe(&'static str, KProbeLinkId),
}

/// Totals from the kernel's per-CPU counters, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful allocations by order slot.
    pub allocs: Vec<u64>,
    /// Failed allocations by order slot, before any filter.
    pub fails: Vec<u64>,
    /// Failures that passed the filters (delivered + lost).
    pub matched: u64,
    /// Failures that passed the filters but found the ring buffer full.
    pub lost: u64,
    /// Of the lost, those counted in the kernel's table by row key
    /// ([`Tracer::lost_table`]): their counts reach the rows.
    pub lost_kept: u64,
    /// Of the lost, those the kernel's table had no room for: counted only
    /// here.
    pub lost_unkept: u64,
    /// `warn_alloc` entries (kprobe).
    pub warn_alloc: u64,
    /// Follow records (`--observe-fallbacks`) that found the ring buffer full.
    pub follow_lost: u64,
    /// Allocation events (successes and failures alike) that fired while the
    /// program that should count them was already running on the same CPU,
    /// which newer kernels skip (the program's `recursion_misses`). With the
    /// lean attach: exactly the events not seen. With the full attach: the
    /// skips of the nested program, which sees what the main program was kept
    /// from; an upper bound of the events not seen (normally 0). `None` where
    /// the kernel does not count them for the style (classic tracepoint).
    pub unseen: Option<u64>,
}

impl Counters {
    /// The change from `earlier` to `self`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let sub = |a: &[u64], b: &[u64]| -> Vec<u64> {
            a.iter()
                .enumerate()
                .map(|(i, x)| x.saturating_sub(b.get(i).copied().unwrap_or(0)))
                .collect()
        };
        Self {
            allocs: sub(&self.allocs, &earlier.allocs),
            fails: sub(&self.fails, &earlier.fails),
            matched: self.matched.saturating_sub(earlier.matched),
            lost: self.lost.saturating_sub(earlier.lost),
            lost_kept: self.lost_kept.saturating_sub(earlier.lost_kept),
            lost_unkept: self.lost_unkept.saturating_sub(earlier.lost_unkept),
            warn_alloc: self.warn_alloc.saturating_sub(earlier.warn_alloc),
            follow_lost: self.follow_lost.saturating_sub(earlier.follow_lost),
            unseen: self
                .unseen
                .zip(earlier.unseen)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// The loaded and attached tracer.
pub struct Tracer {
    ebpf: Ebpf,
    links: Vec<Link>,
    /// Only the main program is attached (see [`ProbeConfig::lean`]).
    pub lean: bool,
    /// The four-program chain is attached instead of the marked pair.
    pub four_programs: bool,
    /// Failure-only mode: the `warn_alloc` kprobe alone, no tracepoint
    /// ([`ProbeConfig::failures_only`]); `style` means nothing then.
    pub failures_only: bool,
    /// Follow records are sent ([`ProbeConfig::follow_window`]).
    follow_window: std::time::Duration,
    /// The style that attached.
    pub style: AttachStyle,
    /// Styles tried before it, with the reason each failed.
    pub fallbacks: Vec<(AttachStyle, String)>,
    pub warn_alloc: WarnAllocProbe,
    /// The `skb:kfree_skb` drop counter.
    pub drops: DropProbe,
    pub features: KernelFeatures,
    /// The running kernel's gfp names.
    pub gfp: GfpTable,
    /// Time from the start of [`Tracer::attach`] to the program being attached.
    pub attach_time: std::time::Duration,
    /// Where failures' cgroups come from on this host.
    pub cgroups: crate::cgroup::CgroupSource,
}

fn read_file(path: &Path) -> Result<String, ProbeError> {
    fs::read_to_string(path).map_err(|source| ProbeError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Check what loading needs (capabilities, ring buffer, memlock), mount
/// tracefs if needed, and read the two tables the kernel program needs from
/// the `kmem/mm_page_alloc` format file: the gfp flag names and the record
/// layout.
fn read_tables(features: &mut KernelFeatures) -> Result<(GfpTable, RecordLayout), ProbeError> {
    caps::check_bpf_capabilities(features).map_err(ProbeError::Capabilities)?;
    if !features.has_ringbuf() {
        return Err(ProbeError::NoRingBuf {
            release: features.release.clone(),
        });
    }
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Memlock,
        rustix::process::Rlimit {
            current: None,
            maximum: None,
        },
    );
    let tracefs = ensure_tracefs()?;
    features.tracefs = Some(tracefs.clone());
    let format_path = Path::new(&tracefs).join("events/kmem/mm_page_alloc/format");
    let format = read_file(&format_path)?;
    let gfp = GfpTable::from_format(&format).map_err(|source| ProbeError::Gfp {
        path: format_path.display().to_string(),
        source,
    })?;
    let layout = RecordLayout::from_format(&format)?;
    Ok((gfp, layout))
}

/// Load the kernel program with its globals set: the filters, the gfp
/// masks of the atomic rule, the record layout, the ring buffer size.
/// Load the object with its read-only globals; `memcg`: the kernel's
/// offsets to the task's cgroup v1 memory cgroup, where that is the
/// attribution (see [`crate::cgroup`]).
fn load(
    cfg: &ProbeConfig,
    gfp: &GfpTable,
    layout: &RecordLayout,
    drop_mask: &[u64; tracer_common::DROP_MASK_WORDS],
    memcg: Option<crate::cgroup::MemcgChain>,
) -> Result<Ebpf, ProbeError> {
    let cpus = aya::util::online_cpus().map_or(1, |c| c.len());
    let ring_bytes = cfg.ring_bytes.unwrap_or_else(|| default_ring_bytes(cpus));
    let atomic_only = u32::from(cfg.atomic_only);
    let tgid = cfg.tgid.unwrap_or(0);
    let tid = cfg.tid.unwrap_or(0);
    let high = gfp.high_mask();
    let reclaim = gfp.direct_reclaim_mask();
    let page_is_pfn = u32::from(layout.page_is_pfn);
    let wakeup_bytes = if cfg.batch_wakeups {
        u64::from(ring_bytes / 8)
    } else {
        0
    };
    let memcg_on = u32::from(memcg.is_some());
    let follow_window_ns = if cfg.failures_only {
        0
    } else {
        u64::try_from(cfg.follow_window.as_nanos()).unwrap_or(u64::MAX)
    };
    let chain = memcg.unwrap_or(crate::cgroup::MemcgChain {
        task_cgroups: 0,
        cset_memcg: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kn_id: 0,
    });
    // `EbpfLoader::new` parses the kernel's BTF (about 35 ms here, most
    // of the attach time) even though nothing here needs it: the object
    // has no CO-RE relocations, and the BTF tracepoint style reads the
    // BTF itself. aya 0.14 offers no loader without that parse.
    let mut loader = EbpfLoader::new();
    loader
        .btf(None)
        .override_global(global::MIN_ORDER, &cfg.min_order, true)
        .override_global(global::ATOMIC_ONLY, &atomic_only, true)
        .override_global(global::TGID, &tgid, true)
        .override_global(global::PID, &tid, true)
        .override_global(global::WAKEUP_BYTES, &wakeup_bytes, true)
        .override_global(global::GFP_HIGH_MASK, &high, true)
        .override_global(global::GFP_DIRECT_RECLAIM_MASK, &reclaim, true)
        .override_global(global::TP_OFF_PAGE, &layout.page_offset, true)
        .override_global(global::TP_PAGE_IS_PFN, &page_is_pfn, true)
        .override_global(global::TP_OFF_ORDER, &layout.order_offset, true)
        .override_global(global::TP_OFF_GFP, &layout.gfp_offset, true)
        .override_global(global::TP_GFP_SIZE, &layout.gfp_size, true)
        .override_global(global::TP_OFF_MIGRATETYPE, &layout.migratetype_offset, true)
        .override_global(global::CG_MEMCG, &memcg_on, true)
        .override_global(global::FOLLOW_WINDOW_NS, &follow_window_ns, true)
        .override_global(global::CG_OFF_TASK_CGROUPS, &chain.task_cgroups, true)
        .override_global(global::CG_OFF_CSET_MEMCG, &chain.cset_memcg, true)
        .override_global(global::CG_OFF_CSS_CGROUP, &chain.css_cgroup, true)
        .override_global(global::CG_OFF_CGROUP_KN, &chain.cgroup_kn, true)
        .override_global(global::CG_OFF_KN_ID, &chain.kn_id, true)
        .override_global(global::DROP_MASK, drop_mask, true)
        .map_max_entries(MAP_EVENTS, ring_bytes);
    if *drop_mask == [0; tracer_common::DROP_MASK_WORDS] {
        // Not counting drops: keep the attribution maps minimal.
        loader
            .map_max_entries(tracer_common::MAP_DROP_SITES, 1)
            .map_max_entries(tracer_common::MAP_DROP_STACKS, 1);
    }
    loader.load(EBPF_OBJECT).map_err(ProbeError::Load)
}

/// The attach style that worked, its links, and why the styles before it
/// failed.
type Attached = (AttachStyle, Vec<Link>, Vec<(AttachStyle, String)>);

/// Attach the programs in the first style of the plan that works
/// (`raw_tp`, `tp_btf`, classic tracepoint; see [`support::attach_plan`]).
fn attach_first_style(
    ebpf: &mut Ebpf,
    features: &KernelFeatures,
    cfg: &ProbeConfig,
) -> Result<Attached, ProbeError> {
    if cfg.failures_only {
        return attach_failures_only(ebpf, features);
    }
    let mut fallbacks = Vec::new();
    let mut btf = None;
    for style in attach_plan(features, cfg.force_style) {
        match attach_style(ebpf, style, &mut btf, chain_of(cfg)) {
            Ok(links) => return Ok((style, links, fallbacks)),
            Err(e) => fallbacks.push((style, e)),
        }
    }
    let tried = if fallbacks.is_empty() {
        "no style applies (see `pagefail check`)".to_owned()
    } else {
        fallbacks
            .iter()
            .map(|(s, e)| format!("{s}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Err(ProbeError::Attach {
        release: features.release.clone(),
        tried,
    })
}

/// Failure-only mode: the `warn_alloc` kprobe that records failures, no
/// tracepoint program (the style returned is a placeholder, never shown).
fn attach_failures_only(
    ebpf: &mut Ebpf,
    features: &KernelFeatures,
) -> Result<Attached, ProbeError> {
    if !features.kprobes {
        return Err(ProbeError::Config(failures_only_unavailable(
            &features.release,
        )));
    }
    let link = attach_kprobe(ebpf, PROG_WARN_FAIL).map_err(|e| ProbeError::Attach {
        release: features.release.clone(),
        tried: format!("failure-only mode, kprobe on warn_alloc: {e}"),
    })?;
    Ok((AttachStyle::Raw, vec![link], Vec::new()))
}

/// Attach the `warn_alloc` kprobe when asked and the kernel has kprobes;
/// why not otherwise.
fn attach_warn_alloc(
    ebpf: &mut Ebpf,
    features: &KernelFeatures,
    cfg: &ProbeConfig,
    links: &mut Vec<Link>,
) -> WarnAllocProbe {
    if cfg.failures_only {
        // The failure program itself runs inside warn_alloc.
        return WarnAllocProbe::Attached;
    }
    if !cfg.warn_alloc {
        return WarnAllocProbe::Disabled;
    }
    if !features.kprobes {
        return WarnAllocProbe::Unavailable(format!(
            "kernel {} has no kprobes (CONFIG_KPROBES)",
            features.release
        ));
    }
    match attach_kprobe(ebpf, PROG_WARN_ALLOC) {
        Ok(l) => {
            links.push(l);
            WarnAllocProbe::Attached
        }
        Err(e) => WarnAllocProbe::Unavailable(e),
    }
}

/// Make sure tracefs is mounted (mount it when it is not), and return its path.
///
/// # Errors
/// When it is not mounted and mounting fails.
pub fn ensure_tracefs() -> Result<String, ProbeError> {
    if let Some(t) = support::find_tracefs() {
        return Ok(t);
    }
    let target = "/sys/kernel/tracing";
    rustix::mount::mount(
        "nodev",
        target,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| ProbeError::NoTracefs {
        reason: e.to_string(),
    })?;
    support::find_tracefs().ok_or_else(|| ProbeError::NoTracefs {
        reason: format!("{target}/events missing after mount"),
    })
}

/// Ring buffer size for `cpus` CPUs: 1 MiB per CPU, at least 2 MiB, at most 64 MiB.
#[must_use]
pub fn default_ring_bytes(cpus: usize) -> u32 {
    let per_cpu: u64 = 1 << 20;
    let want = (per_cpu * cpus as u64).clamp(2 << 20, 64 << 20);
    u32::try_from(want.next_power_of_two()).unwrap_or(64 << 20)
}

impl Tracer {
    /// Check privileges, read the kernel's tables, load the program and attach it.
    ///
    /// # Errors
    /// See [`ProbeError`]; each says what to do.
    pub fn attach(cfg: &ProbeConfig) -> Result<Self, ProbeError> {
        let start = Instant::now();
        let mut features = KernelFeatures::detect();
        let (gfp, layout) = read_tables(&mut features)?;
        let drop_table = drops::reason_table(features.tracefs.as_deref().unwrap_or_default());
        let drop_mask = drop_table
            .as_ref()
            .map(|t| crate::drops::reasons::mask(t, cfg.drops))
            .unwrap_or_default();
        let cgroups = crate::cgroup::CgroupSource::detect();
        let checked = start.elapsed();
        let mut ebpf = load(cfg, &gfp, &layout, &drop_mask, cgroups.chain())?;
        let loaded = start.elapsed();
        let (style, mut links, fallbacks) = attach_first_style(&mut ebpf, &features, cfg)?;
        let attach_time = start.elapsed();
        log::debug!(
            "attach timing: checks and tables {checked:?}, object and maps {:?}, \
             programs loaded and attached {:?}",
            loaded.saturating_sub(checked),
            attach_time.saturating_sub(loaded)
        );
        let warn_alloc = attach_warn_alloc(&mut ebpf, &features, cfg, &mut links);
        let drops = drops::attach(&mut ebpf, cfg.drops, drop_table);
        Ok(Self {
            ebpf,
            links,
            lean: cfg.lean,
            four_programs: cfg.four_programs && !cfg.lean,
            failures_only: cfg.failures_only,
            follow_window: if cfg.failures_only {
                std::time::Duration::ZERO
            } else {
                cfg.follow_window
            },
            style,
            fallbacks,
            warn_alloc,
            drops,
            features,
            gfp,
            attach_time,
            cgroups,
        })
    }

    /// Whether the kernel program sends follow records (`--observe-fallbacks`).
    #[must_use]
    pub fn follows_fallbacks(&self) -> bool {
        !self.follow_window.is_zero()
    }

    /// Take the ring buffer of failure records (once).
    ///
    /// # Errors
    /// When it was taken already.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.ebpf.take_map(MAP_EVENTS).ok_or(ProbeError::Map {
            name: MAP_EVENTS,
            source: aya::maps::MapError::InvalidName {
                name: MAP_EVENTS.to_owned(),
            },
        })?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: MAP_EVENTS,
            source,
        })
    }

    /// Sum the per-CPU counters.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn counters(&self) -> Result<Counters, ProbeError> {
        let read = |name: &'static str, slots: u32| -> Result<Vec<u64>, ProbeError> {
            let map = self.ebpf.map(name).ok_or(ProbeError::Map {
                name,
                source: aya::maps::MapError::InvalidName {
                    name: name.to_owned(),
                },
            })?;
            let arr = PerCpuArray::<_, u64>::try_from(map)
                .map_err(|source| ProbeError::Map { name, source })?;
            (0..slots)
                .map(|i| {
                    arr.get(&i, 0)
                        .map(|v| v.iter().sum())
                        .map_err(|source| ProbeError::Map { name, source })
                })
                .collect()
        };
        let stats = read(MAP_STATS, stat::COUNT)?;
        let state = self.ebpf.map(MAP_STATE).ok_or(ProbeError::Map {
            name: MAP_STATE,
            source: aya::maps::MapError::InvalidName {
                name: MAP_STATE.to_owned(),
            },
        })?;
        let state = PerCpuArray::<_, CpuState>::try_from(state)
            .and_then(|a| a.get(&0, 0))
            .map_err(|source| ProbeError::Map {
                name: MAP_STATE,
                source,
            })?;
        let mut allocs = vec![0u64; ORDER_SLOTS as usize];
        for cpu in state.iter() {
            for (sum, n) in allocs.iter_mut().zip(cpu.allocs) {
                *sum += n;
            }
        }
        Ok(Counters {
            allocs,
            fails: read(MAP_FAILS, ORDER_SLOTS)?,
            matched: stats[stat::MATCHED as usize],
            lost: stats[stat::RINGBUF_LOST as usize],
            lost_kept: stats[stat::LOST_KEPT as usize],
            lost_unkept: stats[stat::LOST_UNKEPT as usize],
            warn_alloc: stats[stat::WARN_ALLOC as usize],
            follow_lost: stats[stat::FOLLOW_LOST as usize],
            unseen: self.unseen(stats[stat::HELPER_HANDLED as usize]),
        })
    }

    /// The kernel's table of lost failures (ring buffer full): every key
    /// with its counts summed over CPUs (cumulative since attach; the
    /// kernel never resets them). First and last times are the earliest and
    /// latest of any CPU.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn lost_table(&self) -> Result<Vec<(LostKey, LostCount)>, ProbeError> {
        let err = |source| ProbeError::Map {
            name: MAP_LOST,
            source,
        };
        let map = self.ebpf.map(MAP_LOST).ok_or_else(|| {
            err(aya::maps::MapError::InvalidName {
                name: MAP_LOST.to_owned(),
            })
        })?;
        let table = PerCpuHashMap::<_, LostKey, LostCount>::try_from(map).map_err(err)?;
        let mut out = Vec::new();
        for item in &table {
            let (key, per_cpu) = match item {
                Ok(kv) => kv,
                // A key removed between listing and reading: none are.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(err(e)),
            };
            let mut sum = LostCount::default();
            for c in per_cpu.iter().filter(|c| c.failures > 0) {
                sum.failures += c.failures;
                sum.warn_alloc += c.warn_alloc;
                if sum.first_ns == 0 || c.first_ns < sum.first_ns {
                    sum.first_ns = c.first_ns;
                }
                sum.last_ns = sum.last_ns.max(c.last_ns);
            }
            out.push((key, sum));
        }
        Ok(out)
    }

    /// The frames (innermost first) of a stack of the lost-failure table;
    /// empty when the id is negative (the kernel kept no stack) or unknown.
    #[must_use]
    pub fn lost_stack(&self, stack_id: i32) -> Vec<u64> {
        let Ok(id) = u32::try_from(stack_id) else {
            return Vec::new();
        };
        self.ebpf
            .map(MAP_LOST_STACKS)
            .and_then(|m| StackTraceMap::try_from(m).ok())
            .and_then(|m| m.get(&id, 0).ok())
            .map(|st| st.frames().iter().map(|f| f.ip).collect())
            .unwrap_or_default()
    }

    fn misses(&self, name: &str) -> Option<u64> {
        let fd = self.ebpf.program(name)?.fd().ok()?;
        info::recursion_misses(fd.as_fd())
    }

    /// [`Counters::unseen`], given the helper's handled count (marked pair).
    fn unseen(&self, helper_handled: u64) -> Option<u64> {
        if self.failures_only {
            return None;
        }
        let (four, pair) = match self.style {
            AttachStyle::Raw => (&PROGS_RAW_TP, &PAIR_RAW_TP),
            AttachStyle::Btf => (&PROGS_BTF_TP, &PAIR_BTF_TP),
            AttachStyle::Classic => return None,
        };
        // The chain is enter, main, nested, exit.
        if self.lean {
            return self.misses(four[1]);
        }
        if self.four_programs {
            return self.misses(four[2]);
        }
        // The pair: events the kernel kept from main that the helper did not
        // handle, exactly while the helper itself was never skipped; each
        // skip of the helper may leave a mark that misleads one later
        // decision (one event missed, and up to NEST_SLOTS - 1 outer events
        // counted twice), so it widens the bound by that much.
        let main = self.misses(pair[0])?;
        let helper = self.misses(pair[1])?;
        Some(main.saturating_sub(helper_handled) + helper * NEST_SLOTS as u64)
    }

    /// Whether the counters can still be read once every capability is
    /// dropped: tried on a thread of its own (capabilities are per thread),
    /// which drops them all and reads the maps.
    #[must_use]
    pub fn counters_readable_without_caps(&self) -> bool {
        std::thread::scope(|scope| {
            scope
                .spawn(|| crate::privilege::drop_all().is_ok() && self.counters().is_ok())
                .join()
                .unwrap_or(false)
        })
    }

    /// Detach every program. Counters and the ring buffer stay readable, so
    /// after a detach and a final drain, delivered + lost = matched exactly.
    pub fn detach(&mut self) {
        self.detach_drops();
        // Reverse attach order: the nesting programs wrap the main one.
        for link in self.links.drain(..).rev() {
            if let Err(e) = detach_link(&mut self.ebpf, link) {
                log::warn!("detaching: {e}");
            }
        }
    }

    /// Each attached program's name and kernel info (its `run_time` and
    /// `run_count` move while BPF statistics are enabled), in attach order.
    #[must_use]
    pub fn program_infos(&self) -> Vec<(&'static str, aya::programs::ProgramInfo)> {
        self.links
            .iter()
            .map(|l| match l {
                Link::Raw(name, _) | Link::Btf(name, _) | Link::Kprobe(name, _) => *name,
                Link::Classic(_) => PROG_CLASSIC_TP,
            })
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some((name, info))
            })
            .collect()
    }

    /// The loaded raw tracepoint program, for `BPF_PROG_TEST_RUN` (tests, benchmarks).
    #[must_use]
    pub fn raw_program(&mut self) -> Option<&mut RawTracePoint> {
        // The main program of the attached chain (the only one loaded).
        let name = if self.lean || self.four_programs {
            PROG_RAW_TP
        } else {
            PAIR_RAW_TP[0]
        };
        prog::<RawTracePoint>(&mut self.ebpf, name).ok()
    }
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    p.try_into()
        .map_err(|_| format!("program {name} has an unexpected type"))
}

/// Which programs go around the main one (see tracer-ebpf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    Lean,
    Pair,
    Four,
}

fn chain_of(cfg: &ProbeConfig) -> Chain {
    if cfg.lean {
        Chain::Lean
    } else if cfg.four_programs {
        Chain::Four
    } else {
        Chain::Pair
    }
}

/// Attach `style`'s programs: for the raw and BTF tracepoints the main
/// program with the programs `chain` puts around it, in order (the kernel
/// calls a tracepoint's programs in attach order).
fn attach_style(
    ebpf: &mut Ebpf,
    style: AttachStyle,
    btf: &mut Option<Btf>,
    chain: Chain,
) -> Result<Vec<Link>, String> {
    let chain = |four: &'static [&'static str; 4],
                 pair: &'static [&'static str; 2]|
     -> &'static [&'static str] {
        match chain {
            Chain::Lean => &four[1..2],
            Chain::Four => four,
            Chain::Pair => pair,
        }
    };
    match style {
        AttachStyle::Raw => {
            let attach = |ebpf: &mut Ebpf, name: &'static str| -> Result<Link, String> {
                let p = prog::<RawTracePoint>(ebpf, name)?;
                p.load().map_err(|e| format!("load {name}: {e}"))?;
                let id = p
                    .attach("mm_page_alloc")
                    .map_err(|e| format!("attach {name}: {e}"))?;
                Ok(Link::Raw(name, id))
            };
            attach_all(ebpf, chain(&PROGS_RAW_TP, &PAIR_RAW_TP), attach)
        }
        AttachStyle::Btf => {
            if btf.is_none() {
                *btf = Some(Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?);
            }
            let btf = btf.as_ref().ok_or("kernel BTF missing")?;
            let attach = |ebpf: &mut Ebpf, name: &'static str| -> Result<Link, String> {
                let p = prog::<BtfTracePoint>(ebpf, name)?;
                p.load("mm_page_alloc", btf)
                    .map_err(|e| format!("load {name}: {e}"))?;
                let id = p.attach().map_err(|e| format!("attach {name}: {e}"))?;
                Ok(Link::Btf(name, id))
            };
            attach_all(ebpf, chain(&PROGS_BTF_TP, &PAIR_BTF_TP), attach)
        }
        AttachStyle::Classic => {
            let p = prog::<TracePoint>(ebpf, PROG_CLASSIC_TP)?;
            p.load().map_err(|e| format!("load: {e}"))?;
            p.attach("kmem", "mm_page_alloc")
                .map(|id| vec![Link::Classic(id)])
                .map_err(|e| format!("attach: {e}"))
        }
    }
}

/// Attach `names` in order (the kernel calls a tracepoint's programs in attach
/// order); on a failure, detach what was attached so the next style starts
/// clean.
fn attach_all(
    ebpf: &mut Ebpf,
    names: &[&'static str],
    attach: impl Fn(&mut Ebpf, &'static str) -> Result<Link, String>,
) -> Result<Vec<Link>, String> {
    let mut links = Vec::new();
    for name in names {
        match attach(ebpf, name) {
            Ok(l) => links.push(l),
            Err(e) => {
                for l in links.into_iter().rev() {
                    let _ = detach_link(ebpf, l);
                }
                return Err(e);
            }
        }
    }
    Ok(links)
}

fn detach_link(ebpf: &mut Ebpf, link: Link) -> Result<(), String> {
    match link {
        Link::Raw(name, id) => {
            prog::<RawTracePoint>(ebpf, name).and_then(|p| p.detach(id).map_err(|e| e.to_string()))
        }
        Link::Btf(name, id) => {
            prog::<BtfTracePoint>(ebpf, name).and_then(|p| p.detach(id).map_err(|e| e.to_string()))
        }
        Link::Classic(id) => prog::<TracePoint>(ebpf, PROG_CLASSIC_TP)
            .and_then(|p| p.detach(id).map_err(|e| e.to_string())),
        Link::Kprobe(name, id) => {
            prog::<KProbe>(ebpf, name).and_then(|p| p.detach(id).map_err(|e| e.to_string()))
        }
    }
}

fn attach_kprobe(ebpf: &mut Ebpf, name: &'static str) -> Result<Link, String> {
    let p = prog::<KProbe>(ebpf, name)?;
    p.load().map_err(|e| format!("load: {e}"))?;
    p.attach("warn_alloc", 0)
        .map(|id| Link::Kprobe(name, id))
        .map_err(|e| format!("attach to warn_alloc: {e}"))
}

/// Why failure-only mode cannot run on a kernel without kprobes.
#[must_use]
pub fn failures_only_unavailable(release: &str) -> String {
    format!(
        "--failures-only needs a kprobe on warn_alloc, and kernel {release} has no kprobes \
         (CONFIG_KPROBES): run without --failures-only (the mm_page_alloc tracepoint sees \
         every failure)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_scales_with_cpus_within_bounds() {
        assert_eq!(default_ring_bytes(1), 2 << 20);
        assert_eq!(default_ring_bytes(2), 2 << 20);
        assert_eq!(default_ring_bytes(3), 4 << 20);
        assert_eq!(default_ring_bytes(8), 8 << 20);
        assert_eq!(default_ring_bytes(1000), 64 << 20);
    }

    #[test]
    fn counter_deltas_subtract_per_slot() {
        let a = Counters {
            allocs: vec![10, 5],
            fails: vec![1, 2],
            matched: 3,
            lost: 1,
            lost_kept: 1,
            lost_unkept: 0,
            warn_alloc: 0,
            follow_lost: 0,
            unseen: Some(4),
        };
        let b = Counters {
            allocs: vec![15, 9],
            fails: vec![1, 4],
            matched: 5,
            lost: 1,
            lost_kept: 1,
            lost_unkept: 0,
            warn_alloc: 2,
            follow_lost: 3,
            unseen: Some(7),
        };
        let d = b.since(&a);
        assert_eq!(d.allocs, [5, 4]);
        assert_eq!(d.fails, [0, 2]);
        assert_eq!(
            (d.matched, d.lost, d.warn_alloc, d.follow_lost),
            (2, 0, 2, 3)
        );
        assert_eq!(d.unseen, Some(3));
        // Not counted on one side: unknown, never a made-up difference.
        let unknown = Counters {
            unseen: None,
            ..b.clone()
        };
        assert_eq!(unknown.since(&a).unseen, None);
    }
}
