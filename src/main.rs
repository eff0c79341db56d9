//! Thin entry point: parse the CLI, run the command, map errors to exit codes.
//!
//! The binary holds what the service library does not ship: the command-line interface
//! (`cli`), the synthetic collector traffic (`publish`) and the benchmark (`bench`). The
//! library's modules are re-exported at this crate's root so the three read `crate::config`,
//! `crate::pipeline`, … exactly as library code does.

use clap::Parser;

/// mimalloc: the pipeline allocates a few small strings per message; glibc malloc spent ~15 %
/// of the service's CPU on them (perf, 1M-trade drain), mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cli;
mod publish;

use marketprism_storage::{
    audit, config, decode, embedded, migrate, model, ops, pipeline, quality, redact, schema,
    service, sink, source,
};

use cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Panics print through the same masking as logs and errors (`redact`).
    redact::install_panic_hook();
    let cli = Cli::parse();
    match cli::dispatch(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be set up (bad config): say it on stderr plainly, masked.
            redact::eprint(&format!("error: {e:#}\n"));
            let code = e.downcast_ref::<cli::ExitError>().map_or(1, |x| x.code);
            std::process::ExitCode::from(code)
        }
    }
}
