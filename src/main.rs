use std::{io::IsTerminal as _, process::ExitCode};

use authd::{
    cli::Cli,
    telemetry::{self, LogFormat},
};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::init(
        cli.log_filter(),
        cli.log_format,
        std::io::stderr().is_terminal(),
        std::io::stderr,
        cli.otlp_endpoint(),
    ) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let log_format = cli.log_format;
    let result = cli.run().await;
    telemetry.shutdown().await;
    match result {
        Ok(code) => code,
        // Reported once: as a log line where logs are collected as JSON, as plain text
        // for a person at a terminal.
        Err(err) => {
            match log_format {
                LogFormat::Json => tracing::error!(error = %format!("{err:#}"), "authd failed"),
                LogFormat::Pretty => eprintln!("error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
