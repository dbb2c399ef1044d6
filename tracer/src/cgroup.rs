//! cgroup id -> cgroup path (and container id), for container attribution.
//!
//! `bpf_get_current_cgroup_id()` returns the id of the task's cgroup in the
//! unified (v2) hierarchy, which is the inode number of that cgroup's
//! directory in the cgroup2 filesystem. Resolution walks that mount once and
//! again on a miss (rate-limited), with a cache.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Resolves cgroup ids to paths relative to the cgroup2 root.
#[derive(Debug)]
pub struct CgroupResolver {
    root: Option<PathBuf>,
    cache: HashMap<u64, String>,
    last_walk: Option<Instant>,
}

/// The cgroup2 mount point, from `/proc/self/mountinfo`.
#[must_use]
pub fn cgroup2_root() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

impl CgroupResolver {
    /// A resolver over the system's cgroup2 mount (none: ids stay numeric).
    #[must_use]
    pub fn new() -> Self {
        Self::with_root(cgroup2_root())
    }

    /// A resolver over a given cgroup2 root.
    #[must_use]
    pub fn with_root(root: Option<PathBuf>) -> Self {
        Self {
            root,
            cache: HashMap::new(),
            last_walk: None,
        }
    }

    /// The path of a cgroup id (`/system.slice/x.service`), or the id in
    /// decimal when it cannot be found; empty for 0 (not available).
    pub fn resolve(&mut self, id: u64) -> String {
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
        assert_eq!(r.resolve(ino), "/a/b");
        assert_eq!(r.resolve(0), "");
        assert_eq!(r.resolve(u64::MAX), u64::MAX.to_string());
        fs::remove_dir_all(&root).unwrap();
    }
}
