//! The parser scored on a corpus of real pastes (tests/fixtures/logs/corpus):
//! every failure of `index.csv`, every field. Prints the score per field and
//! fails when any field of any failure is wrong or missing, or when the
//! parser reports a failure the index does not have.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use super::{analyze::Analyzer, *};

/// One expected failure, as the index says.
#[derive(Debug)]
struct Expected {
    file: String,
    kind: String,
    comm: String,
    pid: String,
    order: String,
    gfp: String,
    kernel: String,
    context: String,
    path: String,
    cache: String,
}

/// One failure as the parser sees it, in the index's spelling.
#[derive(Debug, Clone)]
struct Found {
    /// Line of the header (or `SLUB:` line): the order failures start in.
    line: u64,
    kind: &'static str,
    comm: String,
    pid: String,
    order: String,
    gfp: String,
    kernel: String,
    context: String,
    path: String,
    cache: String,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/logs/corpus")
}

fn index() -> Vec<Expected> {
    let text = std::fs::read_to_string(corpus_dir().join("index.csv")).expect("index.csv");
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty());
    let header = lines.next().expect("header");
    assert_eq!(
        header,
        "file,kind,comm,pid,order,gfp,kernel,arch,context,path,cache,url,date"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert!(f.len() >= 13, "short index row: {l}");
            Expected {
                file: f[0].to_owned(),
                kind: f[1].to_owned(),
                comm: f[2].to_owned(),
                pid: f[3].to_owned(),
                order: f[4].to_owned(),
                gfp: f[5].to_owned(),
                kernel: f[6].to_owned(),
                context: f[8].to_owned(),
                path: f[9].to_owned(),
                cache: f[10].to_owned(),
            }
        })
        .collect()
}

fn parse_file(name: &str, analyzer: &mut Analyzer) -> Vec<Found> {
    let bytes = std::fs::read(corpus_dir().join(name)).expect("fixture");
    let mut p = Parser::new(2026);
    let mut out = Vec::new();
    p.parse_reader(&bytes[..], &mut |ev| match ev {
        Event::Report(r) => {
            let a = analyzer.analyze(&r);
            out.push(Found {
                line: r.line,
                kind: "page",
                comm: r.comm.clone(),
                pid: r.pid.map(|p| p.to_string()).unwrap_or_default(),
                order: r.order.to_string(),
                gfp: format!("{:#x}", r.gfp),
                kernel: r.kernel.clone().unwrap_or_default(),
                context: a.context.to_string(),
                path: a.path,
                cache: String::new(),
            });
        }
        Event::Slab(s) => out.push(Found {
            line: s.line,
            kind: "slab",
            comm: String::new(),
            pid: String::new(),
            order: s.order.map(|o| o.to_string()).unwrap_or_default(),
            gfp: format!("{:#x}", s.gfp),
            kernel: String::new(),
            context: String::new(),
            path: String::new(),
            cache: s.cache.clone().unwrap_or_default(),
        }),
        Event::Suppressed { .. } => {}
    })
    .expect("read");
    out.sort_by_key(|f| f.line);
    out
}

/// The fields scored, by kind.
const PAGE_FIELDS: [&str; 7] = ["comm", "pid", "order", "gfp", "kernel", "context", "path"];
const SLAB_FIELDS: [&str; 3] = ["cache", "gfp", "order"];

fn field<'a>(name: &str, e: &'a Expected, f: &'a Found) -> (&'a str, &'a str) {
    match name {
        "comm" => (&e.comm, &f.comm),
        "pid" => (&e.pid, &f.pid),
        "order" => (&e.order, &f.order),
        "gfp" => (&e.gfp, &f.gfp),
        "kernel" => (&e.kernel, &f.kernel),
        "context" => (&e.context, &f.context),
        "path" => (&e.path, &f.path),
        "cache" => (&e.cache, &f.cache),
        _ => unreachable!(),
    }
}

#[derive(Default)]
struct Score {
    right: u32,
    total: u32,
}

#[test]
fn corpus_score() {
    let expected = index();
    let mut analyzer = Analyzer::new(None);
    let mut files: Vec<&str> = expected.iter().map(|e| e.file.as_str()).collect();
    files.dedup();
    // Every fixture is in the index and every index file exists.
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(|d| d.ok()?.file_name().into_string().ok())
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = files.iter().map(|&f| f.to_owned()).collect();
    listed.sort();
    listed.dedup();
    assert_eq!(on_disk, listed, "fixtures and index disagree");

    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    let mut wrong = String::new();
    let mut extra = 0u32;
    for file in listed {
        let want: Vec<&Expected> = expected.iter().filter(|e| e.file == file).collect();
        let got = parse_file(&file, &mut analyzer);
        for kind in ["page", "slab"] {
            let want: Vec<&&Expected> = want.iter().filter(|e| e.kind == kind).collect();
            let got: Vec<&Found> = got.iter().filter(|f| f.kind == kind).collect();
            extra += u32::try_from(got.len().saturating_sub(want.len())).unwrap_or(u32::MAX);
            let fields: &[&str] = if kind == "page" {
                &PAGE_FIELDS
            } else {
                &SLAB_FIELDS
            };
            for (i, e) in want.iter().enumerate() {
                let found = scores.entry(format!("{kind}:found")).or_default();
                found.total += 1;
                let Some(f) = got.get(i) else {
                    let _ = writeln!(wrong, "{file} #{i} {kind}: not found");
                    for name in fields {
                        scores.entry(format!("{kind}:{name}")).or_default().total += 1;
                    }
                    continue;
                };
                found.right += 1;
                for name in fields {
                    let (want, have) = field(name, e, f);
                    let s = scores.entry(format!("{kind}:{name}")).or_default();
                    if *name == "context" && want == "-" {
                        continue;
                    }
                    s.total += 1;
                    if want == have {
                        s.right += 1;
                    } else {
                        let _ = writeln!(
                            wrong,
                            "{file} #{i} {kind} {name}: want {want:?}, got {have:?}"
                        );
                    }
                }
            }
        }
    }
    let mut table = String::new();
    let mut perfect = true;
    for (name, s) in &scores {
        perfect &= s.right == s.total;
        let _ = writeln!(table, "{name:<14} {:>3}/{:<3}", s.right, s.total);
    }
    let _ = writeln!(table, "extra failures reported: {extra}");
    println!("corpus score:\n{table}");
    if !wrong.is_empty() {
        println!("wrong:\n{wrong}");
    }
    assert!(
        perfect && extra == 0,
        "corpus score below 100%:\n{table}{wrong}"
    );
}
