//! Stand-in entry point for checking `pagefail logs` end to end; the real
//! `main.rs` (all subcommands) replaces it.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pagefail")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Logs(tracer::cli::logs::LogsArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Logs(args) => tracer::cli::logs::run(args),
    };
    if let Err(e) = result {
        eprintln!("pagefail: {e:#}");
        std::process::exit(1);
    }
}
