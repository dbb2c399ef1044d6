//! `pagefail`: trace failed (above all atomic) page allocations on Linux.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracer::cli::{check, watch};

/// Trace failed page allocations: who failed, where, what, and why.
///
/// Examples:
///   sudo pagefail watch                        # live, atomic failures, Ctrl-C to stop
///   sudo pagefail watch --all --duration 5 --csv out.csv
#[derive(Debug, Parser)]
#[command(
    name = "pagefail",
    version,
    about,
    long_about,
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
    Check(check::CheckArgs),
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
        Command::Watch(args) => run_async(watch::run(args, cli.verbose)),
        Command::Check(args) => check::run(args, cli.verbose),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pagefail: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}
