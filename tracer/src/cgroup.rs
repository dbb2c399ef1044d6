//! cgroup attribution: which cgroup a failure is written with, on cgroup v2,
//! v1 and hybrid hosts, and id -> path resolution.
//!
//! - cgroup v2 (the memory controller in the unified hierarchy):
//!   `bpf_get_current_cgroup_id()`, the id of the task's unified cgroup, which
//!   is the inode number of its directory in the cgroup2 mount.
//! - cgroup v1 memory controller (v1-only and hybrid hosts): the unified id
//!   names the root there, a silent wrong answer. The kernel program instead
//!   follows `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id` with
//!   `bpf_probe_read_kernel`, at offsets read here from the running kernel's
//!   BTF; that id is the inode number of the memory cgroup's directory in the
//!   v1 memory mount.
//! - v1 without kernel BTF: the memory line of `/proc/<pid>/cgroup`, read at
//!   the first sight of each process (a process gone by then: empty).
//! - neither mounted: empty.
//!
//! Resolution walks the mount once and again on a miss (rate-limited), with
//! a cache.

use std::{
    collections::HashMap,
    fmt, fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::kbtf::KernelBtf;

/// Byte offsets, in the running kernel, of the pointer chain from a task to
/// the kernfs id of its memory cgroup (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemcgChain {
    /// `task_struct.cgroups`.
    pub task_cgroups: u32,
    /// `css_set.subsys[memory_cgrp_id]`.
    pub cset_memcg: u32,
    /// `cgroup_subsys_state.cgroup`.
    pub css_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (a 64-bit id since 5.5).
    pub kn_id: u32,
}

impl MemcgChain {
    /// The offsets from a kernel's BTF.
    ///
    /// # Errors
    /// When a struct or member is missing, or `kernfs_node.id` is not a
    /// 64-bit integer (kernels before 5.5).
    pub fn from_btf(btf: &KernelBtf) -> Result<Self, String> {
        let m = |s: &str, f: &str| btf.member(s, f).map_err(|e| e.to_string());
        let (task_cgroups, _) = m("task_struct", "cgroups")?;
        let (subsys, _) = m("css_set", "subsys")?;
        let memcg = btf
            .enum_value("memory_cgrp_id")
            .map_err(|e| format!("{e} (kernel without CONFIG_MEMCG)"))?;
        let memcg = u32::try_from(memcg).map_err(|_| format!("memory_cgrp_id = {memcg}"))?;
        let (css_cgroup, _) = m("cgroup_subsys_state", "cgroup")?;
        let (cgroup_kn, _) = m("cgroup", "kn")?;
        let (kn_id, id_type) = m("kernfs_node", "id")?;
        if btf.int_size(id_type) != Some(8) {
            return Err("kernfs_node.id is not a 64-bit integer (kernel before 5.5)".into());
        }
        Ok(Self {
            task_cgroups,
            cset_memcg: subsys + 8 * memcg,
            css_cgroup,
            cgroup_kn,
            kn_id,
        })
    }
}

/// Where the `cgroup` of a failure comes from on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSource {
    /// cgroup v2: the unified id, resolved in the cgroup2 mount at `root`.
    Unified { root: PathBuf },
    /// cgroup v1 memory controller, read by the kernel program.
    MemcgKernel { root: PathBuf, chain: MemcgChain },
    /// cgroup v1 memory controller, read from `/proc/<pid>/cgroup` (why the
    /// kernel cannot: no BTF, ...).
    MemcgProc { root: PathBuf, why: String },
    /// No cgroup2 and no v1 memory controller mounted: always empty.
    Unknown,
}

impl CgroupSource {
    /// Decide from the mounts and the kernel's BTF.
    #[must_use]
    pub fn detect() -> Self {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::decide(&info, || {
            KernelBtf::from_sys_fs()
                .map_err(|e| e.to_string())
                .and_then(|b| MemcgChain::from_btf(&b))
        })
    }

    /// Decide from `mountinfo` text and a way to get the kernel's offsets.
    pub fn decide(mountinfo: &str, chain: impl FnOnce() -> Result<MemcgChain, String>) -> Self {
        if let Some(root) = v1_memory_root(mountinfo) {
            return match chain() {
                Ok(chain) => Self::MemcgKernel { root, chain },
                Err(why) => Self::MemcgProc { root, why },
            };
        }
        match cgroup2_root_in(mountinfo) {
            Some(root) => Self::Unified { root },
            None => Self::Unknown,
        }
    }

    /// The kernel's offsets when the kernel program reads the memory cgroup.
    #[must_use]
    pub fn chain(&self) -> Option<MemcgChain> {
        match self {
            Self::MemcgKernel { chain, .. } => Some(*chain),
            _ => None,
        }
    }

    /// Short name for reports: `v2`, `v1-memcg-kernel`, `v1-memcg-proc`, `none`.
    #[must_use]
    pub fn method(&self) -> &'static str {
        match self {
            Self::Unified { .. } => "v2",
            Self::MemcgKernel { .. } => "v1-memcg-kernel",
            Self::MemcgProc { .. } => "v1-memcg-proc",
            Self::Unknown => "none",
        }
    }
}

impl fmt::Display for CgroupSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unified { root } => write!(
                f,
                "cgroup v2: the task's unified cgroup (bpf_get_current_cgroup_id), paths under {}",
                root.display()
            ),
            Self::MemcgKernel { root, .. } => write!(
                f,
                "cgroup v1: the task's memory cgroup, read by the kernel program at offsets \
                 from the kernel's BTF, paths under {}",
                root.display()
            ),
            Self::MemcgProc { root, why } => write!(
                f,
                "cgroup v1: the memory cgroup from /proc/<pid>/cgroup at first sight of each \
                 process (kernel side not possible: {why}; a process gone by then: empty; \
                 rows not grouped by pid take their first process's), paths under {}",
                root.display()
            ),
            Self::Unknown => f.write_str(
                "no cgroup2 and no cgroup v1 memory controller mounted: cgroup left empty",
            ),
        }
    }
}

/// The mount point of the cgroup v1 hierarchy that holds the memory
/// controller, from `mountinfo` text.
#[must_use]
pub fn v1_memory_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        if r.next()? != "cgroup" {
            return None;
        }
        let opts = r.nth(1)?;
        opts.split(',')
            .any(|o| o == "memory")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

fn cgroup2_root_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// The cgroup2 mount point, from `/proc/self/mountinfo`.
#[must_use]
pub fn cgroup2_root() -> Option<PathBuf> {
    cgroup2_root_in(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The memory cgroup path in `/proc/<pid>/cgroup` text (v1 `N:memory:/path`
/// line, controllers possibly co-mounted: `N:cpu,memory:/path`).
#[must_use]
pub fn memory_line(text: &str) -> Option<&str> {
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls.split(',').any(|c| c == "memory").then_some(path)
    })
}

/// How ids are turned into paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The id is a directory inode under the root.
    Inode,
    /// The id is meaningless; read the process's memory cgroup.
    Proc,
    /// Nothing known.
    Empty,
}

/// Entries of the per-process cache before it is cleared (bounded memory).
const PROC_CACHE_MAX: usize = 4096;

/// Resolves cgroup ids to paths relative to the cgroup root.
#[derive(Debug)]
pub struct CgroupResolver {
    mode: Mode,
    root: Option<PathBuf>,
    cache: HashMap<u64, String>,
    by_tgid: HashMap<u32, String>,
    last_walk: Option<Instant>,
}

impl CgroupResolver {
    /// A resolver for this host's source (see [`CgroupSource::detect`]).
    #[must_use]
    pub fn new() -> Self {
        Self::for_source(&CgroupSource::detect())
    }

    /// A resolver for a given source.
    #[must_use]
    pub fn for_source(source: &CgroupSource) -> Self {
        let (mode, root) = match source {
            CgroupSource::Unified { root } | CgroupSource::MemcgKernel { root, .. } => {
                (Mode::Inode, Some(root.clone()))
            }
            CgroupSource::MemcgProc { root, .. } => (Mode::Proc, Some(root.clone())),
            CgroupSource::Unknown => (Mode::Empty, None),
        };
        Self {
            mode,
            root,
            cache: HashMap::new(),
            by_tgid: HashMap::new(),
            last_walk: None,
        }
    }

    /// A resolver of directory inodes over a given root (none: ids stay numeric).
    #[must_use]
    pub fn with_root(root: Option<PathBuf>) -> Self {
        Self {
            mode: Mode::Inode,
            root,
            cache: HashMap::new(),
            by_tgid: HashMap::new(),
            last_walk: None,
        }
    }

    /// The path of the cgroup of a failure with this id by process `tgid`
    /// (`/system.slice/x.service`): the id in decimal when it cannot be found;
    /// empty for 0 (not available) and where nothing is known.
    pub fn resolve(&mut self, id: u64, tgid: u32) -> String {
        match self.mode {
            Mode::Empty => String::new(),
            Mode::Proc => self.of_process(tgid),
            Mode::Inode => self.of_inode(id),
        }
    }

    fn of_process(&mut self, tgid: u32) -> String {
        if let Some(p) = self.by_tgid.get(&tgid) {
            return p.clone();
        }
        let path = fs::read_to_string(format!("/proc/{tgid}/cgroup"))
            .ok()
            .and_then(|t| memory_line(&t).map(str::to_owned))
            .unwrap_or_default();
        if self.by_tgid.len() >= PROC_CACHE_MAX {
            self.by_tgid.clear();
        }
        self.by_tgid.insert(tgid, path.clone());
        path
    }

    fn of_inode(&mut self, id: u64) -> String {
        if id == 0 {
            return String::new();
        }
        if let Some(p) = self.cache.get(&id) {
            return p.clone();
        }
        let stale = self
            .last_walk
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if stale && let Some(root) = self.root.clone() {
            self.last_walk = Some(Instant::now());
            walk(&root, &root, &mut self.cache, 0);
        }
        self.cache
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut HashMap<u64, String>, depth: usize) {
    // Bounded: cgroup trees are shallow; stop at a generous depth.
    if depth > 32 {
        return;
    }
    if let Ok(meta) = fs::metadata(dir) {
        let rel = dir.strip_prefix(root).unwrap_or(dir);
        out.insert(meta.ino(), format!("/{}", rel.display()));
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &e.path(), out, depth + 1);
        }
    }
}

/// A container id in a cgroup path: the 64-hex-digit id Docker, containerd
/// and CRI-O put in their cgroup names (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `/docker/<id>`), shortened to 12 digits as `docker ps` shows it.
#[must_use]
pub fn container_id(path: &str) -> Option<&str> {
    path.split(['/', '-', '.', ':'])
        .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|id| &id[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_container_ids() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some("0123456789ab")
        );
        assert_eq!(
            container_id(&format!(
                "/kubepods/burstable/pod1/cri-containerd-{id}.scope"
            )),
            Some("0123456789ab")
        );
        assert_eq!(container_id(&format!("/docker/{id}")), Some("0123456789ab"));
        assert_eq!(container_id("/user.slice/user-0.slice"), None);
    }

    #[test]
    fn resolves_directory_inodes_to_paths() {
        let root = std::env::temp_dir().join(format!("pagefail-cg-{}", std::process::id()));
        let child = root.join("a/b");
        fs::create_dir_all(&child).unwrap();
        let ino = fs::metadata(&child).unwrap().ino();
        let mut r = CgroupResolver::with_root(Some(root.clone()));
        assert_eq!(r.resolve(ino, 1), "/a/b");
        assert_eq!(r.resolve(0, 1), "");
        assert_eq!(r.resolve(u64::MAX, 1), u64::MAX.to_string());
        fs::remove_dir_all(&root).unwrap();
    }

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw shared:10 - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory
";
    const V2: &str = "30 25 0:26 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
    const CHAIN: MemcgChain = MemcgChain {
        task_cgroups: 1,
        cset_memcg: 2,
        css_cgroup: 3,
        cgroup_kn: 4,
        kn_id: 5,
    };

    #[test]
    fn the_memory_controller_decides_the_source() {
        // Hybrid and v1: the v1 memory hierarchy, not the unified one.
        assert_eq!(
            CgroupSource::decide(HYBRID, || Ok(CHAIN)),
            CgroupSource::MemcgKernel {
                root: "/sys/fs/cgroup/memory".into(),
                chain: CHAIN
            }
        );
        let proc = CgroupSource::decide(HYBRID, || Err("no BTF".into()));
        assert_eq!(proc.method(), "v1-memcg-proc");
        assert!(proc.to_string().contains("no BTF"));
        // Pure v2: the unified id, whatever the BTF says.
        assert_eq!(
            CgroupSource::decide(V2, || Ok(CHAIN)),
            CgroupSource::Unified {
                root: "/sys/fs/cgroup".into()
            }
        );
        assert_eq!(
            CgroupSource::decide("", || Ok(CHAIN)),
            CgroupSource::Unknown
        );
        // Nothing known: empty, never `/`.
        let mut r = CgroupResolver::for_source(&CgroupSource::Unknown);
        assert_eq!(r.resolve(1, 1), "");
    }

    #[test]
    fn reads_the_memory_line_of_proc_cgroup() {
        let t = "9:name=systemd:/\n4:memory:/a/b\n0::/\n";
        assert_eq!(memory_line(t), Some("/a/b"));
        assert_eq!(memory_line("3:cpu,memory:/x:y\n"), Some("/x:y"));
        assert_eq!(memory_line("0::/\n"), None);
        // This process, through the resolver, on a v1 host.
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let mut r = CgroupResolver::for_source(&CgroupSource::MemcgProc {
            root: "/sys/fs/cgroup/memory".into(),
            why: String::new(),
        });
        assert_eq!(
            r.resolve(1, std::process::id()),
            memory_line(&own).unwrap_or_default()
        );
        assert_eq!(r.resolve(1, u32::MAX), "");
    }

    #[test]
    fn the_running_kernels_chain_is_found() {
        // This host and every Debian guest kernel have BTF and CONFIG_MEMCG.
        let btf = KernelBtf::from_sys_fs().expect("kernel BTF");
        let c = MemcgChain::from_btf(&btf).unwrap();
        assert!(c.task_cgroups > 0 && c.cset_memcg > 0 && c.cgroup_kn > 0);
    }
}
