//! Man pages and shell completions generated from the command-line
//! definition (hidden subcommands `pagefail man` and `pagefail completions`,
//! used by `cargo xtask dist`), so they never drift from `--help`.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Args;
use clap_complete::Shell;

/// Print shell completions for pagefail.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Print pagefail's man page, or write a page per subcommand.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `pagefail.1` and `pagefail-<subcommand>.1` into this directory
    /// instead of printing `pagefail.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Write completions of `cmd` for `shell` to `out`.
///
/// # Errors
/// Writing `out`.
pub fn completions(
    mut cmd: clap::Command,
    args: &CompletionsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let name = cmd.get_name().to_owned();
    // Into memory first: clap_complete panics when its writer fails
    // (`pagefail completions bash | head`).
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut buf);
    out.write_all(&buf)
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// The man pages of `cmd` and its visible subcommands: (file name, text).
///
/// # Errors
/// Rendering errors (I/O into memory: none in practice).
pub fn man_pages(cmd: &clap::Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut pages = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    pages.push((format!("{}.1", cmd.get_name()), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        let mut buf = Vec::new();
        let sub = sub.clone().display_name(name.clone()).bin_name(format!(
            "{} {}",
            cmd.get_name(),
            sub.get_name()
        ));
        clap_mangen::Man::new(sub).render(&mut buf)?;
        pages.push((format!("{name}.1"), buf));
    }
    Ok(pages)
}

/// Run `pagefail man`.
///
/// # Errors
/// Writing the pages.
pub fn man(cmd: &clap::Command, args: &ManArgs) -> anyhow::Result<()> {
    let pages = man_pages(cmd)?;
    match &args.dir {
        None => {
            let mut out = io::stdout().lock();
            out.write_all(&pages[0].1)
                .and_then(|()| out.flush())
                .context("cannot write to standard output")
        }
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, text) in &pages {
                write_page(&dir.join(name), text)?;
            }
            Ok(())
        }
    }
}

/// Man pages are public (0644 less the umask), unlike pagefail's reports.
fn write_page(path: &Path, text: &[u8]) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("pagefail")
            .about("trace")
            .subcommand(
                clap::Command::new("watch")
                    .about("live")
                    .arg(clap::arg!(--"min-order" <N>)),
            )
            .subcommand(clap::Command::new("man").hide(true))
    }

    #[test]
    fn a_page_per_visible_subcommand() {
        let pages = man_pages(&cmd()).unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pagefail.1", "pagefail-watch.1"]);
        let watch = String::from_utf8(pages[1].1.clone()).unwrap();
        assert!(watch.contains(".TH pagefail-watch"), "{watch}");
        assert!(
            watch.contains("pagefail\\-watch \\- live"),
            "NAME line: {watch}"
        );
        assert!(
            watch.contains("\\fBpagefail watch\\fR"),
            "SYNOPSIS: {watch}"
        );
        assert!(watch.contains("min\\-order"), "{watch}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut out = Vec::new();
        completions(cmd(), &CompletionsArgs { shell: Shell::Bash }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("_pagefail()"), "{text}");
        assert!(text.contains("--min-order"), "{text}");
    }
}
