use std::process::ExitCode;

use clap::Parser;
use vespa_agent::{cli, exit, logging, trust};

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    logging::init(args.verbosity());
    // Before the runtime starts any thread: it sets the environment for a moment.
    trust::init();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            eprintln!("vespa-agent: error: {e:#}");
            ExitCode::from(exit::code_for(&e))
        }
    }
}
