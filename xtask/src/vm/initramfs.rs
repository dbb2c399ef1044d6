//! Guest initramfs: a file tree collected in memory, written as a `newc` cpio.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::kernel::Kernel;
use crate::arch::Arch;

/// The static busybox the guest's userland is made of.
pub const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// A guest root file system under construction. Paths are absolute guest paths.
#[derive(Debug, Clone)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

impl Initramfs {
    /// A tree with busybox at `/bin/busybox` and `/bin/sh`, `/dev/console`,
    /// `/dev/null` and empty `/proc`, `/sys`, `/tmp`, `/run`.
    pub fn new() -> Result<Self> {
        let mut me = Self::bare();
        for d in ["/sbin", "/usr/bin"] {
            me.add_dir(d);
        }
        let busybox = Path::new(BUSYBOX);
        ensure!(
            busybox.is_file(),
            "{BUSYBOX} not found: apt-get install busybox-static"
        );
        let data = fs::read(busybox).with_context(|| format!("reading {BUSYBOX}"))?;
        ensure!(
            !is_dynamic(busybox)?,
            "{BUSYBOX} is dynamically linked: apt-get install busybox-static"
        );
        me.add_file("/bin/busybox", data, 0o755);
        me.add_symlink("/bin/sh", "busybox");
        Ok(me)
    }

    /// [`Initramfs::new`] for a guest of `arch`: another architecture's
    /// busybox comes from its Debian package ([`userland`]).
    pub fn for_arch(arch: Arch) -> Result<Self> {
        if arch == Arch::Amd64 {
            return Self::new();
        }
        let mut me = Self::bare();
        for d in ["/sbin", "/usr/bin"] {
            me.add_dir(d);
        }
        let busybox = userland(arch)?.join("bin/busybox");
        let data = fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
        ensure!(
            crate::elf::linking(&data).is_some_and(crate::elf::Linking::is_static)
                && crate::elf::machine(&data) == Some(arch.elf_machine()),
            "{} is not a static {arch} executable",
            busybox.display()
        );
        me.add_file("/bin/busybox", data, 0o755);
        me.add_symlink("/bin/sh", "busybox");
        Ok(me)
    }

    /// Copy an executable of the extracted tree `root` (another
    /// architecture's packages, see [`userland`]) to `guest`, with its
    /// dynamic loader and the shared libraries it needs, found in `root`'s
    /// library directories and placed at the same paths in the guest.
    pub fn add_foreign_binary(&mut self, root: &Path, rel: &str, guest: &str) -> Result<()> {
        // Links resolve inside the tree: `sbin/ip -> /bin/ip` is the tree's.
        let host = resolve_in(root, rel)?;
        self.add_host_file(&host, guest)?;
        let mut todo = vec![host];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(file) = todo.pop() {
            let data = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (interp, needed) = crate::elf::dynamic_needs(&data)
                .with_context(|| format!("{} is not an ELF64 file", file.display()))?;
            let mut wanted: Vec<String> = interp.into_iter().collect();
            for name in needed {
                let found = LIB_DIRS
                    .iter()
                    .map(|d| format!("{d}/{name}"))
                    .find(|p| root.join(p.trim_start_matches('/')).exists())
                    .with_context(|| {
                        format!(
                            "{} needs {name}, which no library directory of {} holds",
                            file.display(),
                            root.display()
                        )
                    })?;
                wanted.push(found);
            }
            for g in wanted {
                if !seen.insert(g.clone()) {
                    continue;
                }
                // Links resolve inside the tree (merged /usr, versioned names).
                let h = resolve_in(root, &g)?;
                self.add_host_file(&h, &g)?;
                todo.push(h);
            }
        }
        Ok(())
    }

    /// A tree with nothing but `/dev/console`, `/dev/null` and empty
    /// `/proc`, `/sys`, `/dev`, `/tmp`, `/run`: no shell, no busybox. Its
    /// `/init` must be a static executable.
    pub fn bare() -> Self {
        let mut me = Self {
            nodes: BTreeMap::new(),
        };
        for d in ["/proc", "/sys", "/dev", "/tmp", "/run"] {
            me.add_dir(d);
        }
        me.add_node(
            "/dev/console",
            Node::CharDev {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        );
        me.add_node(
            "/dev/null",
            Node::CharDev {
                major: 1,
                minor: 3,
                mode: 0o666,
            },
        );
        me
    }

    fn add_node(&mut self, path: &str, node: Node) {
        let path = normalize(path);
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent {
            let s = p.to_string_lossy().into_owned();
            if s == "/" || s.is_empty() {
                break;
            }
            self.nodes.entry(s).or_insert(Node::Dir);
            parent = p.parent();
        }
        self.nodes.insert(path, node);
    }

    /// Add an empty directory (and its parents).
    pub fn add_dir(&mut self, path: &str) {
        self.add_node(path, Node::Dir);
    }

    /// Add a file with the given contents and permission bits.
    pub fn add_file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add_node(path, Node::File { data, mode });
    }

    /// Add a symbolic link.
    pub fn add_symlink(&mut self, path: &str, target: &str) {
        self.add_node(path, Node::Symlink(target.to_owned()));
    }

    /// Set `/init`, the script the kernel runs (`rdinit=/init`). It should start
    /// with `#!/bin/sh` and end by powering off (`poweroff -f`).
    pub fn set_init(&mut self, script: &str) {
        self.add_file("/init", script.as_bytes().to_vec(), 0o755);
    }

    /// Copy a host file to `guest` (contents of the link target for symlinks).
    pub fn add_host_file(&mut self, host: &Path, guest: &str) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = fs::metadata(host)?.permissions();
        self.add_file(
            guest,
            data,
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
        );
        Ok(())
    }

    /// Copy a host executable to `guest`, with the shared libraries and the
    /// dynamic loader `ldd` reports, each at its host path.
    pub fn add_binary(&mut self, host: &Path, guest: &str) -> Result<()> {
        self.add_host_file(host, guest)?;
        for lib in shared_libraries(host)? {
            let g = lib.to_string_lossy().into_owned();
            if !self.nodes.contains_key(&g) {
                self.add_host_file(&lib, &g)?;
            }
        }
        Ok(())
    }

    /// Copy kernel modules and everything they depend on (per `modules.dep`)
    /// into `/lib/modules/<release>/`, decompressing `.ko.xz`. Returns the guest
    /// paths in a valid load order (dependencies first), for `insmod`.
    /// `names` are module names as `modprobe` takes them (`bonding`, `veth`).
    pub fn add_modules(&mut self, kernel: &Kernel, names: &[&str]) -> Result<Vec<String>> {
        let deps_file = kernel.modules_dir.join("modules.dep");
        let text = fs::read_to_string(&deps_file)
            .with_context(|| format!("reading {}", deps_file.display()))?;
        let deps = parse_modules_dep(&text);
        let by_name: HashMap<String, &String> =
            deps.keys().map(|path| (module_name(path), path)).collect();
        let mut order: Vec<String> = Vec::new();
        for name in names {
            let key = name.replace('-', "_");
            let path = by_name.get(&key).with_context(|| {
                format!(
                    "module {name} is not in {} (built in, or misspelt?)",
                    deps_file.display()
                )
            })?;
            visit(path, &deps, &mut order, 0)?;
        }
        let mut guest_paths = Vec::new();
        let mut guest_dep = String::new();
        for rel in &order {
            let host = kernel.modules_dir.join(rel);
            let data = if Path::new(rel).extension().is_some_and(|e| e == "xz") {
                let out = Command::new("xz")
                    .arg("-dc")
                    .arg(&host)
                    .output()
                    .context("running xz: apt-get install xz-utils")?;
                ensure!(out.status.success(), "xz -dc {} failed", host.display());
                out.stdout
            } else {
                fs::read(&host).with_context(|| format!("reading {}", host.display()))?
            };
            let plain = plain_name(rel);
            let guest = format!("/lib/modules/{}/{plain}", kernel.release);
            self.add_file(&guest, data, 0o644);
            let line_deps: Vec<String> = deps[rel].iter().map(|d| plain_name(d)).collect();
            guest_dep.push_str(&format!("{plain}: {}\n", line_deps.join(" ")));
            guest_paths.push(guest);
        }
        // A modules.dep for busybox modprobe, covering the modules copied.
        self.add_file(
            &format!("/lib/modules/{}/modules.dep", kernel.release),
            guest_dep.into_bytes(),
            0o644,
        );
        Ok(guest_paths)
    }

    /// Write the tree as an uncompressed `newc` cpio archive.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut out = Vec::new();
        for (ino, (name, node)) in self.nodes.iter().enumerate() {
            let name = name.trim_start_matches('/');
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir => (0o040_755, &[], (0, 0)),
                Node::File { data, mode } => (0o100_000 | mode, data, (0, 0)),
                Node::Symlink(t) => (0o120_777, t.as_bytes(), (0, 0)),
                Node::CharDev { major, minor, mode } => (0o020_000 | mode, &[], (*major, *minor)),
            };
            let ino = u32::try_from(ino + 1).context("too many initramfs entries")?;
            push_entry(&mut out, ino, name, mode, data, rdev)?;
        }
        push_entry(&mut out, 0, "TRAILER!!!", 0, &[], (0, 0))?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(path, out).with_context(|| format!("writing {}", path.display()))
    }
}

/// One entry of a `newc` cpio archive, as [`read_cpio`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// The path inside the archive, without a leading `/`.
    pub name: String,
    /// File type and permission bits (`0o100_755` for an executable file).
    pub mode: u32,
    pub data: Vec<u8>,
}

impl CpioEntry {
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & 0o170_000 == 0o100_000
    }

    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170_000 == 0o120_000
    }
}

/// Read back a `newc` cpio archive (what [`Initramfs::write`] writes, or any
/// other), up to its `TRAILER!!!` entry.
///
/// # Errors
/// When the archive is truncated or an entry is not `newc`.
pub fn read_cpio(archive: &[u8]) -> Result<Vec<CpioEntry>> {
    const HEADER: usize = 110;
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut entries = Vec::new();
    let mut pos = 0;
    // Every entry takes at least a header, so this ends within len/110 rounds.
    while pos < archive.len() {
        let header = archive
            .get(pos..pos + HEADER)
            .with_context(|| format!("truncated cpio header at byte {pos}"))?;
        ensure!(
            header.starts_with(b"070701"),
            "not a newc cpio entry at byte {pos}"
        );
        let field = |i: usize| -> Result<usize> {
            let hex = std::str::from_utf8(&header[6 + i * 8..14 + i * 8])
                .context("a cpio header field is not text")?;
            usize::from_str_radix(hex, 16)
                .with_context(|| format!("cpio header field {hex:?} is not hex"))
        };
        let mode = u32::try_from(field(1)?).context("cpio mode out of range")?;
        let size = field(6)?;
        let namesize = field(11)?;
        let name_start = pos + HEADER;
        let name = archive
            .get(name_start..name_start + namesize.saturating_sub(1))
            .with_context(|| format!("truncated cpio name at byte {name_start}"))?;
        let name = String::from_utf8_lossy(name).into_owned();
        let data_start = align(name_start + namesize);
        let data = archive
            .get(data_start..data_start + size)
            .with_context(|| format!("truncated data of {name} in the cpio archive"))?;
        if name == "TRAILER!!!" {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            name,
            mode,
            data: data.to_vec(),
        });
        pos = align(data_start + size);
    }
    bail!("the cpio archive has no TRAILER!!! entry")
}

fn normalize(path: &str) -> String {
    let p = path.trim_end_matches('/');
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

fn push_entry(
    out: &mut Vec<u8>,
    ino: u32,
    name: &str,
    mode: u32,
    data: &[u8],
    (rmaj, rmin): (u32, u32),
) -> Result<()> {
    let size = u32::try_from(data.len()).context("file too large for cpio")?;
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
         {dmaj:08x}{dmin:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        dmaj = 0,
        dmin = 0,
        namesize = name.len() + 1,
        check = 0,
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
    Ok(())
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// `kernel/net/tls/tls.ko.xz` -> `tls`, `kernel/.../nf-nat.ko` -> `nf_nat`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The module path with any compression suffix removed.
fn plain_name(path: &str) -> String {
    ["xz", "zst", "gz"]
        .iter()
        .find_map(|ext| path.strip_suffix(&format!(".{ext}")))
        .unwrap_or(path)
        .to_owned()
}

fn parse_modules_dep(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((
                m.trim().to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect()
}

/// Depth-first: dependencies before the module. modules.dep lists a module's
/// full dependency closure with the deepest last, so they are visited in reverse.
fn visit(
    path: &String,
    deps: &HashMap<String, Vec<String>>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if depth > 64 {
        bail!("module dependency loop at {path}");
    }
    if order.contains(path) {
        return Ok(());
    }
    for d in deps.get(path).into_iter().flatten().rev() {
        visit(d, deps, order, depth + 1)?;
    }
    if !order.contains(path) {
        order.push(path.clone());
    }
    Ok(())
}

/// Where another architecture's shared libraries are looked up (Debian's
/// multiarch directories, then the classic ones).
const LIB_DIRS: &[&str] = &[
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib",
    "/usr/lib",
];

/// `guest` (an absolute path) inside `root`, following symbolic links
/// within `root` (an absolute target is taken relative to `root`).
fn resolve_in(root: &Path, guest: &str) -> Result<PathBuf> {
    let mut path = guest.trim_start_matches('/').to_owned();
    for _ in 0..40 {
        // Resolve each leading component, so `/lib` -> `usr/lib` works too.
        let mut cur = PathBuf::new();
        let mut changed = false;
        for comp in Path::new(&path).components() {
            cur.push(comp);
            let full = root.join(&cur);
            if let Ok(target) = fs::read_link(&full) {
                let t = target.to_string_lossy().into_owned();
                let rest = Path::new(&path).strip_prefix(&cur).unwrap_or(Path::new(""));
                let base = if t.starts_with('/') {
                    PathBuf::from(t.trim_start_matches('/'))
                } else {
                    cur.parent().unwrap_or(Path::new("")).join(&t)
                };
                path = lexical(&base.join(rest));
                changed = true;
                break;
            }
        }
        if !changed {
            let full = root.join(&path);
            ensure!(
                full.is_file(),
                "{guest} is not a file in {}",
                root.display()
            );
            return Ok(full);
        }
    }
    bail!("{guest}: too many symbolic links in {}", root.display())
}

/// A relative path with `.` and `..` components folded away.
fn lexical(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// Debian packages extracted for `arch` guests under
/// `target/vm/userland-<arch>/root` (once): `busybox-static`, and `iproute2`
/// with every package it depends on (for bonding and netns, which
/// busybox's `ip` lacks). Fetched with `apt-get download` through a private
/// package list of the host's suite and `arch`; nothing is installed.
pub fn userland(arch: Arch) -> Result<PathBuf> {
    let base = super::vm_dir().join(format!("userland-{}", arch.deb()));
    let root = base.join("root");
    let done = base.join("complete");
    if done.is_file() {
        return Ok(root);
    }
    let suite = crate::cross::host_suite();
    let opts = crate::cross::apt_options(&suite, arch)?;
    crate::cross::apt_update(&opts, &format!("Debian {suite} {arch}"))?;
    // The whole closure (a few MB): libraries are not all named lib*
    // (zlib1g), and only what `ip` needs goes into a guest.
    let mut packages = crate::cross::depends_closure(&opts, "iproute2")?;
    packages.push("busybox-static".to_owned());
    let debs = base.join("debs");
    let _ = fs::remove_dir_all(&debs);
    let _ = fs::remove_dir_all(&root);
    let got = crate::cross::download(&opts, &packages, &debs)?;
    crate::cross::extract(&got, &root)?;
    ensure!(
        root.join("bin/busybox").is_file() && resolve_in(&root, "/sbin/ip").is_ok(),
        "the {arch} packages left no bin/busybox or sbin/ip in {}",
        root.display()
    );
    fs::write(&done, packages.join("\n"))?;
    let _ = fs::remove_dir_all(&debs);
    Ok(root)
}

fn is_dynamic(bin: &Path) -> Result<bool> {
    Ok(!shared_libraries(bin)?.is_empty())
}

/// The shared libraries `ldd` resolves for a binary (empty for static ones).
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd (part of libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!(
                "{}: shared library missing on the host: {line}",
                bin.display()
            );
        }
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_extracted_tree() {
        let root = std::env::temp_dir().join(format!("pagefail-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("sbin")).unwrap();
        fs::create_dir_all(root.join("lib/aarch64-linux-gnu")).unwrap();
        fs::write(root.join("bin/ip"), b"tree's ip").unwrap();
        fs::write(root.join("lib/aarch64-linux-gnu/libx.so.1.2"), b"lib").unwrap();
        // Absolute (as Debian ships sbin/ip) and relative links, with `..`.
        std::os::unix::fs::symlink("/bin/ip", root.join("sbin/ip")).unwrap();
        std::os::unix::fs::symlink("libx.so.1.2", root.join("lib/aarch64-linux-gnu/libx.so.1"))
            .unwrap();
        std::os::unix::fs::symlink("../lib/aarch64-linux-gnu/libx.so.1", root.join("bin/libx"))
            .unwrap();
        assert_eq!(resolve_in(&root, "/sbin/ip").unwrap(), root.join("bin/ip"));
        assert_eq!(
            resolve_in(&root, "/bin/libx").unwrap(),
            root.join("lib/aarch64-linux-gnu/libx.so.1.2")
        );
        assert!(resolve_in(&root, "/bin/missing").is_err());
        std::os::unix::fs::symlink("loop", root.join("bin/loop")).unwrap();
        assert!(resolve_in(&root, "/bin/loop").is_err());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn dependencies_load_first() {
        let deps = parse_modules_dep(
            "kernel/drivers/net/bonding/bonding.ko.xz: kernel/net/tls/tls.ko.xz\n\
             kernel/net/tls/tls.ko.xz:\nkernel/a.ko: kernel/b.ko kernel/c.ko\n\
             kernel/b.ko: kernel/c.ko\nkernel/c.ko:\n",
        );
        let mut order = Vec::new();
        visit(
            &"kernel/drivers/net/bonding/bonding.ko.xz".to_owned(),
            &deps,
            &mut order,
            0,
        )
        .unwrap();
        visit(&"kernel/a.ko".to_owned(), &deps, &mut order, 0).unwrap();
        assert_eq!(
            order,
            [
                "kernel/net/tls/tls.ko.xz",
                "kernel/drivers/net/bonding/bonding.ko.xz",
                "kernel/c.ko",
                "kernel/b.ko",
                "kernel/a.ko"
            ]
        );
        assert_eq!(module_name("kernel/net/tls/tls.ko.xz"), "tls");
        assert_eq!(
            plain_name("kernel/net/tls/tls.ko.xz"),
            "kernel/net/tls/tls.ko"
        );
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut t = Initramfs {
            nodes: BTreeMap::new(),
        };
        t.add_file("/a/b", b"hello".to_vec(), 0o644);
        let dir = std::env::temp_dir().join(format!("pagefail-cpio-{}", std::process::id()));
        let path = dir.join("t.cpio");
        t.write(&path).unwrap();
        let bytes = fs::read(&path).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        // Directory /a is emitted before /a/b.
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.find("a\0").unwrap() < text.find("a/b\0").unwrap());
        assert!(text.contains("TRAILER!!!"));
        // Read back: the same entries, the file's contents intact.
        let entries = read_cpio(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "a/b"]);
        assert!(entries[1].is_file() && !entries[0].is_file());
        assert_eq!(entries[1].data, b"hello");
        assert_eq!(entries[1].mode, 0o100_644);
        assert!(read_cpio(&bytes[..bytes.len() - 8]).is_err());
        assert!(read_cpio(b"not a cpio").is_err());
    }
}
