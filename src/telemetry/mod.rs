//! Logging and tracing set-up: one subscriber, its log lines filtered by AUTHD_LOG, human-
//! readable or JSON lines, and, when AUTHD_OTLP_ENDPOINT is set, spans exported over OTLP
//! ([`traces`]).
//!
//! Secrets never reach a log line or a span because they never reach a field: passwords,
//! tokens and keys are `secrecy` types with redacted Debug, and the ORM's statement logging
//! (which would print bound values) is switched off where the pool is built
//! (`store::connect`).

pub mod traces;

use std::time::Duration;

use clap::ValueEnum;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::{LevelFilter, filter_fn},
    fmt::MakeWriter,
    layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What was installed; [`Telemetry::shutdown`] sends the spans still batched.
#[derive(Debug)]
#[must_use = "spans still batched are lost unless it is shut down"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still batched, waiting for the collector at most a second: a
    /// process stopping must not hang on it (the drain and the stop take the rest of
    /// `docker stop`'s ten seconds).
    pub async fn shutdown(self) {
        if let Some(provider) = self.traces {
            traces::flush(provider, Duration::from_secs(1)).await;
        }
    }
}

/// Installs the global subscriber. `filter` uses `tracing_subscriber::EnvFilter` syntax
/// ("info", "authd=debug,sqlx=warn"); `ansi` colours pretty lines for a terminal;
/// `otlp_endpoint` turns on span export. Fails if a subscriber is already installed.
pub fn init<W>(
    filter: &str,
    format: LogFormat,
    ansi: bool,
    writer: W,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Telemetry>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("AUTHD_LOG: expected a log filter such as \"info\": {e}"))?;
    let installed = match otlp_endpoint {
        // Without export, the one global filter: a disabled span costs nothing at all.
        None => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer);
            match format {
                LogFormat::Pretty => builder.with_ansi(ansi).try_init(),
                LogFormat::Json => builder.json().flatten_event(true).try_init(),
            }
            .map(|()| Telemetry { traces: None })
        }
        Some(endpoint) => {
            let (provider, tracer) = traces::start(endpoint)?;
            let lines = tracing_subscriber::fmt::layer().with_writer(writer);
            let lines = match format {
                LogFormat::Pretty => lines.with_ansi(ansi).boxed(),
                LogFormat::Json => lines.json().flatten_event(true).boxed(),
            };
            // authd's own spans, named one by one, whatever AUTHD_LOG says, and no events:
            // what is exported is what those spans were made with, and a span added later
            // is exported only once someone has checked its fields.
            let spans = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // Only what the spans were given: no source locations, threads or timings.
                .with_location(false)
                .with_target(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(
                    filter_fn(|metadata| {
                        metadata.is_span()
                            && metadata.target().starts_with("authd::")
                            && traces::EXPORTED_SPANS.contains(&metadata.name())
                    })
                    .with_max_level_hint(LevelFilter::DEBUG),
                );
            tracing_subscriber::registry()
                .with(lines.with_filter(filter))
                .with(spans)
                .try_init()
                .map_err(Into::into)
                .map(|()| Telemetry {
                    traces: Some(provider),
                })
        }
    };
    installed.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
