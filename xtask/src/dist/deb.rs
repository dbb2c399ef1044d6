//! The `.deb`: its control file corrected, and a real install and removal
//! with dpkg into a scratch root.
//!
//! cargo-deb 3.8 writes a `Depends:` line even when there is nothing to
//! depend on (`depends = ""`, or `$auto` on a static binary): an empty field,
//! which Debian policy does not allow, and cannot ship an empty directory.
//! [`fix_control`] drops empty fields, adds the state directory
//! `/var/lib/pagefail` (mode 0750) and rebuilds the package with
//! `dpkg-deb`, keeping cargo-deb's file timestamps.
//!
//! [`verify`] installs the package with the real `dpkg` into a fresh root
//! (`--root`, its own admin directory and log, `--force-script-chrootless`),
//! runs the installed `pagefail --version`, removes the package and checks
//! every file it installed is gone. The host's dpkg database and files are
//! never written; the host's view of the package is compared before and
//! after to prove it.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::UNIX_EPOCH,
};

use anyhow::{Context as _, bail, ensure};

use crate::run;

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `dpkg-deb -f` of the package: its control fields.
    pub control: String,
    /// What the installed `pagefail --version` printed.
    pub installed_version: String,
    /// Files (not directories) dpkg installed, then removed.
    pub files: usize,
}

/// A control file without its empty fields (a `Name:` line with nothing
/// after the colon and no continuation lines), and the names dropped.
pub fn drop_empty_fields(control: &str) -> (String, Vec<String>) {
    let lines: Vec<&str> = control.lines().collect();
    let mut out = String::new();
    let mut dropped = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let continued = lines
            .get(i + 1)
            .is_some_and(|next| next.starts_with([' ', '\t']));
        if !line.starts_with([' ', '\t'])
            && let Some((name, value)) = line.split_once(':')
            && value.trim().is_empty()
            && !continued
        {
            dropped.push(name.to_owned());
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, dropped)
}

fn output(mut cmd: Command) -> anyhow::Result<Output> {
    cmd.output().with_context(|| {
        format!(
            "cannot run {cmd:?} (dpkg and dpkg-deb are in the dpkg package: apt-get install dpkg)"
        )
    })
}

fn checked_stdout(cmd: Command) -> anyhow::Result<String> {
    let desc = format!("{cmd:?}");
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "{desc} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The control fields of a package, as `dpkg-deb -f` prints them.
pub fn control_fields(deb: &Path) -> anyhow::Result<String> {
    let mut c = Command::new("dpkg-deb");
    c.arg("-f").arg(deb);
    checked_stdout(c)
}

/// The directory `record` writes to in the packaged unit, owned by the
/// package (mode 0750: interval files name processes and cgroups).
pub const STATE_DIR: &str = "var/lib/pagefail";

/// Drop the empty fields of `deb`'s control file and add [`STATE_DIR`],
/// rebuilding it in place with `dpkg-deb` (through `work`, removed after).
/// Returns the fields dropped.
///
/// # Errors
/// When dpkg-deb is missing or fails.
pub fn fix_control(deb: &Path, work: &Path) -> anyhow::Result<Vec<String>> {
    let (_, dropped) = drop_empty_fields(&control_fields(deb)?);
    let _ = fs::remove_dir_all(work);
    let mut c = Command::new("dpkg-deb");
    c.arg("-R").arg(deb).arg(work);
    run(c)?;
    let control_path = work.join("DEBIAN/control");
    let text = fs::read_to_string(&control_path)
        .with_context(|| format!("reading {}", control_path.display()))?;
    let (fixed, _) = drop_empty_fields(&text);
    fs::write(&control_path, fixed)
        .with_context(|| format!("writing {}", control_path.display()))?;
    let state = work.join(STATE_DIR);
    fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    fs::set_permissions(&state, fs::Permissions::from_mode(0o750))
        .with_context(|| format!("chmod {}", state.display()))?;
    // Keep cargo-deb's timestamps: every file in the package carries its
    // one date, which SOURCE_DATE_EPOCH makes dpkg-deb use for the rest.
    let epoch = fs::metadata(work.join("usr/bin/pagefail"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let rebuilt = work.with_extension("deb");
    let mut c = Command::new("dpkg-deb");
    c.args(["--root-owner-group", "-Zxz", "--build"])
        .arg(work)
        .arg(&rebuilt);
    if let Some(e) = epoch {
        c.env("SOURCE_DATE_EPOCH", e.to_string());
    }
    run(c)?;
    fs::rename(&rebuilt, deb)
        .with_context(|| format!("replacing {} with {}", deb.display(), rebuilt.display()))?;
    let _ = fs::remove_dir_all(work);
    if !dropped.is_empty() {
        eprintln!(
            "xtask: {}: dropped the empty control field(s) {} that cargo-deb wrote",
            deb.display(),
            dropped.join(", ")
        );
    }
    Ok(dropped)
}

/// `dpkg` working only inside `root`: its own admin directory and log;
/// maintainer scripts (there are none) would run outside a chroot.
fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        .args(["--force-not-root", "--force-script-chrootless"]);
    c
}

/// `${Status}` of `package` in an admin directory (`None`: the host's),
/// or the error dpkg-query printed when it does not know the package.
fn status(admindir: Option<&Path>, package: &str) -> anyhow::Result<String> {
    let mut c = Command::new("dpkg-query");
    if let Some(a) = admindir {
        c.arg(format!("--admindir={}", a.display()));
    }
    c.args(["-W", "-f=${Status} ${Version}", package]);
    let out = output(c)?;
    Ok(if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        format!("unknown: {}", String::from_utf8_lossy(&out.stderr).trim())
    })
}

/// A fresh dpkg root: an empty status file, `info/` and `updates/`.
fn init_root(root: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(root);
    let admin = root.join("var/lib/dpkg");
    for d in [
        admin.join("info"),
        admin.join("updates"),
        root.join("var/log"),
    ] {
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    for f in ["status", "available"] {
        fs::write(admin.join(f), "")
            .with_context(|| format!("creating {f} in {}", admin.display()))?;
    }
    Ok(())
}

/// Install `deb` into a fresh `root` with dpkg, run the installed binary,
/// remove the package, and check the control fields and that removal
/// leaves none of its files. `version` is the crate version the binary
/// must report.
///
/// # Errors
/// A control file with an empty field or without the expected fields, an
/// install or removal dpkg refuses, a binary that does not run, a file left
/// behind, or a change to the host's view of the package.
pub fn verify(
    deb: &Path,
    root: &Path,
    version: &str,
    arch: crate::arch::Arch,
) -> anyhow::Result<Checked> {
    let control = control_fields(deb)?;
    let (_, empty) = drop_empty_fields(&control);
    ensure!(
        empty.is_empty(),
        "{}: empty control field(s) {}",
        deb.display(),
        empty.join(", ")
    );
    let field = |name: &str| {
        control.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::trim)
        })
    };
    let package = field("Package").context("the control file has no Package field")?;
    ensure!(
        field("Architecture") == Some(arch.deb()),
        "Architecture is {:?}, expected {arch}",
        field("Architecture")
    );
    ensure!(
        field("Version").is_some_and(|v| v.starts_with(version)),
        "Version is {:?}, expected {version}-<revision>",
        field("Version")
    );
    ensure!(
        field("Maintainer").is_some_and(|m| m.contains('<') && m.contains('@') && m.ends_with('>')),
        "Maintainer must carry an address (Name <address>), is {:?}",
        field("Maintainer")
    );
    ensure!(
        field("Depends").is_none(),
        "the static binary depends on nothing, but the package has Depends: {:?}",
        field("Depends")
    );

    let host_before = status(None, package)?;
    init_root(root)?;
    let admin = root.join("var/lib/dpkg");
    let mut c = dpkg(root);
    if arch != crate::arch::Arch::Amd64 {
        // The scratch root's dpkg is the host's (amd64): it installs another
        // architecture's package only when told to.
        c.arg("--force-architecture");
    }
    c.arg("-i").arg(deb);
    run(c).context("dpkg refused to install the package into the scratch root")?;
    let installed = status(Some(&admin), package)?;
    ensure!(
        installed.starts_with("install ok installed"),
        "after dpkg -i the package's status is {installed:?}"
    );
    let mut c = Command::new("dpkg-query");
    c.arg(format!("--admindir={}", admin.display()))
        .args(["-L", package]);
    let listed = checked_stdout(c)?;
    let files: Vec<PathBuf> = listed
        .lines()
        .map(|l| root.join(l.trim_start_matches('/')))
        .filter(|p| p.is_file())
        .collect();
    let bin = root.join("usr/bin/pagefail");
    ensure!(
        files.contains(&bin),
        "dpkg did not install usr/bin/pagefail (files: {files:?})"
    );
    for shipped in [
        "usr/lib/systemd/system/pagefail.service",
        "usr/share/pagefail/prometheus/pagefail.rules.yml",
        "usr/share/pagefail/grafana/pagefail.json",
    ] {
        ensure!(
            files.contains(&root.join(shipped)),
            "dpkg did not install {shipped}"
        );
    }
    let state = root.join(STATE_DIR);
    let mode = fs::metadata(&state)
        .with_context(|| format!("dpkg did not create /{STATE_DIR}"))?
        .permissions()
        .mode()
        & 0o7777;
    ensure!(
        mode == 0o750,
        "/{STATE_DIR} has mode {mode:o}, expected 750"
    );
    ensure!(
        !root
            .join("etc/systemd/system/multi-user.target.wants/pagefail.service")
            .exists(),
        "the package must not enable the unit"
    );
    let mut c = arch.command(&bin);
    c.arg("--version");
    let installed_version = checked_stdout(c)?.trim().to_owned();
    ensure!(
        installed_version == format!("pagefail {version}"),
        "the installed binary says {installed_version:?}, expected \"pagefail {version}\""
    );

    let mut c = dpkg(root);
    c.args(["-r", package]);
    run(c).context("dpkg refused to remove the package from the scratch root")?;
    let left: Vec<&PathBuf> = files.iter().filter(|p| p.exists()).collect();
    ensure!(left.is_empty(), "dpkg -r left files behind: {left:?}");
    ensure!(
        !state.exists(),
        "dpkg -r left the empty /{STATE_DIR} behind"
    );
    let after = status(Some(&admin), package)?;
    ensure!(
        !after.starts_with("install"),
        "after dpkg -r the package's status is {after:?}"
    );
    let host_after = status(None, package)?;
    ensure!(
        host_before == host_after,
        "the host's dpkg database changed: {host_before:?} -> {host_after:?}"
    );
    let _ = fs::remove_dir_all(root);
    Ok(Checked {
        control,
        installed_version,
        files: files.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_dropped_and_others_kept() {
        let control = "Package: pagefail\nVersion: 0.1.0-1\nInstalled-Size: 6595\nDepends: \n\
                       Description: pagefail: trace\n failed allocations\n .\n more\n";
        let (fixed, dropped) = drop_empty_fields(control);
        assert_eq!(dropped, ["Depends"]);
        assert_eq!(
            fixed,
            "Package: pagefail\nVersion: 0.1.0-1\nInstalled-Size: 6595\n\
             Description: pagefail: trace\n failed allocations\n .\n more\n"
        );
        // A field whose value starts on the next line is not empty.
        let folded = "Package: p\nDescription:\n text\n";
        assert_eq!(drop_empty_fields(folded), (folded.to_owned(), vec![]));
    }
}
