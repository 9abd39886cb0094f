//! Logging set-up: one subscriber, filtered by AUTHD_LOG, human-readable or JSON lines.
//!
//! Secrets never reach a log line because they never reach a field: passwords, tokens and
//! keys are `secrecy` types with redacted Debug, and the ORM's statement logging (which
//! would print bound values) is switched off where the pool is built (`store::connect`).

use clap::ValueEnum;
use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. `filter` uses `tracing_subscriber::EnvFilter` syntax
/// ("info", "authd=debug,sqlx=warn"); `ansi` colours pretty lines for a terminal. Fails if a
/// subscriber is already installed.
pub fn init<W>(filter: &str, format: LogFormat, ansi: bool, writer: W) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("AUTHD_LOG: expected a log filter such as \"info\": {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Pretty => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
