//! Interval files of `pagefail record`: naming, atomic writing, retrying
//! while the directory cannot be written, and retention.
//!
//! Each interval writes three files named by the UTC start of its window:
//! `pagefail-20261122T034500Z.csv` (the CSV summary contract; header only
//! when the interval had no failure) and `pagefail-20261122T034500Z.totals.csv`
//! (allocation and failure totals per order, lost records, `warn_alloc`
//! entries; [`crate::export::totals`]), and
//! `pagefail-20261122T034500Z.summary.json` (the run summary of the
//! interval: failures per order, by cause and by outcome, lost, unseen,
//! `warn_alloc`, drops; see `export::RunSummary`). Every interval writes all
//! three, so a gap in the files means pagefail was not running, not that
//! nothing failed. Names sort in time order; a
//! restart within the same second gets a `-1`, `-2` suffix rather than
//! overwriting.

use std::{
    collections::VecDeque,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context as _, bail};

use crate::export;

/// Prefix of every interval file.
pub const PREFIX: &str = "pagefail-";

/// What to keep in the output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// Every interval.
    All,
    /// The newest N intervals.
    Count(usize),
    /// The newest intervals whose files add up to at most this many bytes.
    Bytes(u64),
}

/// Intervals waiting to be written at most; older ones are dropped (and counted).
const MAX_PENDING: usize = 10_000;

struct Pending {
    stem: String,
    /// The stem its files were given at the first attempt: a retry after a
    /// partial write finishes the same interval, never writes it twice.
    chosen: Option<String>,
    rows: Vec<u8>,
    /// `None` once written.
    totals: Option<Vec<u8>>,
    /// Memory snapshots of the interval, if any were taken.
    memory: Option<Vec<u8>>,
    /// The interval's run summary (JSON), if given.
    summary: Option<Vec<u8>>,
    /// A write of it failed once already: it waited in memory.
    held: bool,
}

/// The suffixes of an interval's files.
const SUFFIXES: [&str; 4] = [".csv", ".totals.csv", ".memory.csv", ".summary.json"];

/// Writes interval files into one directory.
pub struct Recorder {
    dir: PathBuf,
    retain: Retain,
    pending: VecDeque<Pending>,
    /// Intervals dropped because too many waited for a writable directory.
    pub dropped: u64,
    /// Intervals written.
    pub written: u64,
    /// Intervals that waited in memory because a write failed (written
    /// later, still pending, or dropped).
    pub held_back: u64,
    /// Failed flushes, by cause: ENOSPC/EDQUOT, ENOMEM/EAGAIN, anything else
    /// (directory gone, permissions).
    pub no_space: u64,
    pub no_memory: u64,
    pub other_errors: u64,
}

/// The name stem of a window starting at `t`: `pagefail-YYYYMMDDTHHMMSSZ`.
#[must_use]
pub fn stem(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string(); // 2026-11-22T03:45:00Z
    format!("{PREFIX}{}", s.replace(['-', ':'], ""))
}

/// Create `dir` and its missing parents with mode 0750 when it is not
/// there; whether it was created.
fn create_missing_dir(dir: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::DirBuilderExt as _;
    if fs::symlink_metadata(dir).is_ok() {
        return Ok(false);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| {
            format!(
                "output directory {} is not there and cannot be created: create it (mkdir -p) \
                 or choose another with --output",
                dir.display()
            )
        })?;
    Ok(true)
}

/// Remove temporary files of interval writes cut short by a crash or kill
/// (`.pagefail-*.tmp.<pid>`, see `export::write_atomically`).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{PREFIX}")) && name.contains(".csv.tmp.") {
            let _ = fs::remove_file(e.path());
        }
    }
}

impl Recorder {
    /// A recorder over `dir`. A missing `dir` is created (mode 0750, less
    /// the umask, parents too) and the creation said once on stderr.
    ///
    /// # Errors
    /// When `dir` cannot be created or is not a directory.
    pub fn new(dir: &Path, retain: Retain) -> anyhow::Result<Self> {
        if create_missing_dir(dir)? {
            crate::note!(
                "pagefail: created the output directory {} (mode 0750)",
                dir.display()
            );
        }
        let meta = fs::metadata(dir)
            .with_context(|| format!("cannot read the output directory {}", dir.display()))?;
        if !meta.is_dir() {
            bail!(
                "{} is not a directory: give a directory with --output",
                dir.display()
            );
        }
        remove_stale_temporaries(dir);
        Ok(Self {
            dir: dir.to_path_buf(),
            retain,
            pending: VecDeque::new(),
            dropped: 0,
            written: 0,
            held_back: 0,
            no_space: 0,
            no_memory: 0,
            other_errors: 0,
        })
    }

    /// Queue one interval's files; `memory` (memory snapshots taken during
    /// the interval, CSV) is written as `<stem>.memory.csv` and `summary`
    /// (the run summary, JSON) as `<stem>.summary.json` when present.
    pub fn queue(
        &mut self,
        start: SystemTime,
        rows: Vec<u8>,
        totals: Vec<u8>,
        memory: Option<Vec<u8>>,
        summary: Option<Vec<u8>>,
    ) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.pending.push_back(Pending {
            stem: stem(start),
            chosen: None,
            rows,
            totals: Some(totals),
            memory,
            summary,
            held: false,
        });
    }

    /// Intervals waiting to be written.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn unique_stem(&self, stem: &str) -> String {
        let taken = |s: &str| {
            SUFFIXES
                .iter()
                .any(|x| self.dir.join(format!("{s}{x}")).exists())
        };
        if !taken(stem) {
            return stem.to_owned();
        }
        #[expect(
            clippy::maybe_infinite_iter,
            reason = "ends at the first free name; the directory holds finitely many"
        )]
        let free = (1..)
            .map(|i| format!("{stem}-{i}"))
            .find(|s| !taken(s))
            .unwrap_or_else(|| stem.to_owned());
        free
    }

    /// Write every queued interval, oldest first, then prune. On an error
    /// the unwritten intervals stay queued for the next call (held back in
    /// memory, counted), and the error is counted by its cause.
    ///
    /// # Errors
    /// The first write error (directory gone or unwritable, disk full, no
    /// memory for the page cache).
    pub fn flush(&mut self) -> anyhow::Result<()> {
        let r = self.write_pending();
        if let Err(e) = &r {
            match crate::selfprotect::shortage_of(e) {
                Some(crate::selfprotect::Shortage::Space) => self.no_space += 1,
                Some(crate::selfprotect::Shortage::Memory) => self.no_memory += 1,
                None => self.other_errors += 1,
            }
            for p in &mut self.pending {
                if !p.held {
                    p.held = true;
                    self.held_back += 1;
                }
            }
        }
        r
    }

    fn write_pending(&mut self) -> anyhow::Result<()> {
        while let Some(front) = self.pending.front() {
            let stem = match &front.chosen {
                Some(s) => s.clone(),
                None => self.unique_stem(&front.stem),
            };
            let dir = self.dir.clone();
            let Some(p) = self.pending.front_mut() else {
                break;
            };
            p.chosen = Some(stem.clone());
            // Memory and totals first: a summary file never appears without
            // them. Each part, once written, is not written again.
            if let Some(memory) = &p.memory {
                let path = dir.join(format!("{stem}.memory.csv"));
                export::write_atomically(&path, |w| Ok(w.write_all(memory)?))?;
                p.memory = None;
            }
            if let Some(summary) = &p.summary {
                let path = dir.join(format!("{stem}.summary.json"));
                export::write_atomically(&path, |w| Ok(w.write_all(summary)?))?;
                p.summary = None;
            }
            if let Some(totals) = &p.totals {
                let path = dir.join(format!("{stem}.totals.csv"));
                export::write_atomically(&path, |w| Ok(w.write_all(totals)?))?;
                p.totals = None;
            }
            let rows_path = dir.join(format!("{stem}.csv"));
            export::write_atomically(&rows_path, |w| Ok(w.write_all(&p.rows)?))?;
            self.pending.pop_front();
            self.written += 1;
        }
        self.prune()?;
        Ok(())
    }

    /// The interval stems in the directory, oldest first, with their bytes.
    fn intervals(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut by_stem: std::collections::BTreeMap<String, u64> =
            std::collections::BTreeMap::new();
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name
                .strip_suffix(".totals.csv")
                .or_else(|| name.strip_suffix(".memory.csv"))
                .or_else(|| name.strip_suffix(".summary.json"))
                .or_else(|| name.strip_suffix(".csv"))
                .filter(|s| s.starts_with(PREFIX))
            else {
                continue;
            };
            let len = entry.metadata().map_or(0, |m| m.len());
            *by_stem.entry(stem.to_owned()).or_default() += len;
        }
        Ok(by_stem.into_iter().collect())
    }

    /// Delete the oldest intervals beyond the retention limit. Returns the
    /// stems deleted.
    ///
    /// # Errors
    /// When the directory cannot be listed or a file not removed.
    pub fn prune(&self) -> anyhow::Result<Vec<String>> {
        let intervals = self.intervals()?;
        let keep_from = match self.retain {
            Retain::All => 0,
            Retain::Count(n) => intervals.len().saturating_sub(n),
            Retain::Bytes(max) => {
                let mut total = 0u64;
                let mut keep = intervals.len();
                for (i, (_, len)) in intervals.iter().enumerate().rev() {
                    if total + len > max {
                        break;
                    }
                    total += len;
                    keep = i;
                }
                // Always keep the newest interval, whatever its size.
                keep.min(intervals.len().saturating_sub(1))
            }
        };
        let mut removed = Vec::new();
        for (stem, _) in intervals.into_iter().take(keep_from) {
            for suffix in SUFFIXES {
                let p = self.dir.join(format!("{stem}{suffix}"));
                if p.exists() {
                    fs::remove_file(&p)
                        .with_context(|| format!("cannot remove {}", p.display()))?;
                }
            }
            removed.push(stem);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt as _, time::Duration};

    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pagefail-rec-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + secs)
    }

    #[test]
    fn stale_temporaries_are_removed_on_start() {
        let d = tmp("stale");
        fs::write(d.join(".pagefail-20261122T000000Z.csv.tmp.123"), "half").unwrap();
        fs::write(d.join(".other.tmp.1"), "keep").unwrap();
        Recorder::new(&d, Retain::All).unwrap();
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(".other.tmp.1")]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stems_sort_in_time_order() {
        assert_eq!(stem(SystemTime::UNIX_EPOCH), "pagefail-19700101T000000Z");
        assert!(stem(t(59)) < stem(t(60)));
    }

    #[test]
    fn writes_both_files_and_never_overwrites() {
        let d = tmp("write");
        let mut r = Recorder::new(&d, Retain::All).unwrap();
        r.queue(
            t(0),
            b"rows-a".to_vec(),
            b"totals-a".to_vec(),
            Some(b"mem-a".to_vec()),
            Some(b"{}".to_vec()),
        );
        r.queue(t(0), b"rows-b".to_vec(), b"totals-b".to_vec(), None, None);
        r.flush().unwrap();
        let s = stem(t(0));
        assert_eq!(fs::read(d.join(format!("{s}.csv"))).unwrap(), b"rows-a");
        assert_eq!(
            fs::read(d.join(format!("{s}.memory.csv"))).unwrap(),
            b"mem-a"
        );
        assert!(
            !d.join(format!("{s}-1.memory.csv")).exists(),
            "no snapshots, no file"
        );
        assert_eq!(fs::read(d.join(format!("{s}-1.csv"))).unwrap(), b"rows-b");
        assert_eq!(
            fs::read(d.join(format!("{s}-1.totals.csv"))).unwrap(),
            b"totals-b"
        );
        assert_eq!(r.written, 2);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn retention_by_count_prunes_exactly_the_oldest() {
        let d = tmp("count");
        fs::write(d.join("unrelated.csv"), "x").unwrap();
        let mut r = Recorder::new(&d, Retain::Count(3)).unwrap();
        for i in 0..7 {
            r.queue(t(i * 60), b"r".to_vec(), b"t".to_vec(), None, None);
        }
        r.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = (4..7)
            .flat_map(|i| {
                let s = stem(t(i * 60));
                [format!("{s}.csv"), format!("{s}.totals.csv")]
            })
            .collect();
        want.push("unrelated.csv".into());
        want.sort();
        assert_eq!(names, want);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn retention_by_bytes_keeps_the_newest_that_fit() {
        let d = tmp("bytes");
        let mut r = Recorder::new(&d, Retain::Bytes(25)).unwrap();
        for i in 0..5 {
            r.queue(t(i), vec![b'r'; 6], vec![b't'; 4], None, None); // 10 bytes per interval
        }
        r.flush().unwrap();
        let left = r.intervals().unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(left[0].0, stem(t(3)));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_partly_written_interval_is_finished_under_its_own_name() {
        let d = tmp("partial");
        let mut r = Recorder::new(&d, Retain::All).unwrap();
        r.queue(t(0), b"rows".to_vec(), b"totals".to_vec(), None, None);
        // Every temporary name of the summary file is taken: the totals are
        // written, the summary fails.
        let name = stem(t(0));
        let blockers: Vec<PathBuf> = (0..64)
            .map(|n| d.join(format!(".{name}.csv.tmp.{}.{n}", std::process::id())))
            .collect();
        for b in &blockers {
            fs::create_dir(b).unwrap();
        }
        assert!(r.flush().is_err());
        assert_eq!((r.pending(), r.held_back), (1, 1));
        for b in &blockers {
            fs::remove_dir(b).unwrap();
        }
        r.flush().unwrap();
        let mut names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [format!("{name}.csv"), format!("{name}.totals.csv")]);
        assert_eq!(r.written, 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unwritable_directory_keeps_intervals_queued_until_it_returns() {
        let d = tmp("gone");
        let mut r = Recorder::new(&d, Retain::All).unwrap();
        fs::remove_dir_all(&d).unwrap();
        r.queue(t(0), b"r".to_vec(), b"t".to_vec(), None, None);
        let err = r.flush().unwrap_err();
        assert!(format!("{err:#}").contains("cannot create"), "{err:#}");
        assert_eq!(r.pending(), 1);
        fs::create_dir_all(&d).unwrap();
        r.queue(t(60), b"r".to_vec(), b"t".to_vec(), None, None);
        r.flush().unwrap();
        assert_eq!((r.pending(), r.written), (0, 2));
        // One interval waited in memory; one failed flush, not a shortage.
        assert_eq!(
            (r.held_back, r.other_errors, r.no_space, r.no_memory),
            (1, 1, 0, 0)
        );
        fs::remove_dir_all(&d).unwrap();
        // A missing directory is created again, parents too, mode 0750.
        let nested = d.join("a/b");
        Recorder::new(&nested, Retain::All).unwrap();
        let mode = fs::metadata(&nested).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "mode {mode:o}");
        assert!(fs::metadata(d.join("a")).unwrap().is_dir());
        // A file in the way is refused.
        fs::remove_dir_all(&d).unwrap();
        fs::write(&d, b"x").unwrap();
        let Err(err) = Recorder::new(&d, Retain::All) else {
            panic!("a file in place of the directory was accepted");
        };
        assert!(format!("{err:#}").contains("is not a directory"), "{err:#}");
        fs::remove_file(&d).unwrap();
    }
}
