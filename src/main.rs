//! Thin entry point: parse the CLI, run the command, map errors to exit codes.

use clap::Parser;
use marketprism_storage::cli::{self, Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli::dispatch(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be set up (bad config): say it on stderr plainly.
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
