use std::{io::IsTerminal as _, process::ExitCode};

use authd::{cli::Cli, telemetry};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = telemetry::init(
        &cli.log,
        cli.log_format,
        std::io::stderr().is_terminal(),
        std::io::stderr,
    ) {
        eprintln!("error: {err:#}");
        return ExitCode::FAILURE;
    }
    match cli.run().await {
        Ok(code) => code,
        // Once, on stderr, whatever the log format: it is the answer to the command.
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
