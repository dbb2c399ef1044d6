//! `pagefail`: trace failed (above all atomic) page allocations on Linux.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use tracer::{
    cli::{check, common::is_broken_pipe, docs, logs, record, report, watch},
    session,
};

/// Trace failed page allocations: who failed, where, what, and why.
///
/// Examples:
///   sudo pagefail watch                        # live, atomic failures, Ctrl-C to stop
///   sudo pagefail watch --all --duration 5 --csv out.csv
///   pagefail logs /var/log/kern.log --csv failures.csv
///   sudo pagefail check --from failures.csv
///   pagefail report host1.csv host2.csv --by host,path
#[derive(Debug, Parser)]
#[command(
    name = "pagefail",
    version,
    about,
    long_about,
    verbatim_doc_comment,
    arg_required_else_help = true
)]
struct Cli {
    /// More detail on stderr (attach style, fallbacks); repeat for debug logs.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Watch(watch::WatchArgs),
    Record(record::RecordArgs),
    Report(report::ReportArgs),
    Check(check::CheckArgs),
    Logs(logs::LogsArgs),
    /// Shell completions (for packagers).
    #[command(hide = true)]
    Completions(docs::CompletionsArgs),
    /// Man pages (for packagers).
    #[command(hide = true)]
    Man(docs::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let result = match cli.command {
        Command::Watch(args) => session::block_on(watch::run(args, cli.verbose)),
        Command::Record(args) => session::block_on(record::run(args, cli.verbose)),
        Command::Report(args) => report::run(&args),
        Command::Check(args) => check::run(&args, cli.verbose),
        Command::Logs(args) => logs::run(&args),
        Command::Completions(args) => {
            docs::completions(Cli::command(), &args, &mut std::io::stdout().lock())
        }
        Command::Man(args) => docs::man(&Cli::command(), &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `pagefail ... | head`: the reader is gone, which is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            tracer::note!("pagefail: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::Cli;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_keeps_example_lines() {
        for sub in ["watch", "record", "report", "check"] {
            let mut cmd = Cli::command();
            let help = cmd
                .find_subcommand_mut(sub)
                .map(|c| c.render_long_help().to_string())
                .unwrap_or_default();
            assert!(
                help.contains(&format!("\n  sudo pagefail {sub}"))
                    || help.contains(&format!("\n  pagefail {sub}")),
                "{sub}: example lines joined or missing:\n{help}"
            );
        }
    }

    #[test]
    fn every_subcommand_parses_its_defaults() {
        for args in [&["pagefail", "watch"][..], &["pagefail", "report", "a.csv"]] {
            let cli = Cli::try_parse_from(args.iter()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let _ = format!("{cli:?}");
        }
        assert!(Cli::try_parse_from(["pagefail", "watch", "--by", "zone"]).is_err());
        assert!(Cli::try_parse_from(["pagefail", "report", "--by", "zone", "a.csv"]).is_err());
        assert!(Cli::try_parse_from(["pagefail", "watch", "--min-order", "99"]).is_err());
    }
}
