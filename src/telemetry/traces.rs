//! Traces over OTLP/gRPC, off unless AUTHD_OTLP_ENDPOINT names a collector.
//!
//! authd's own `tracing` spans become OpenTelemetry spans through `tracing-opentelemetry`:
//! the call's span (made a server span here, a child of the caller's W3C `traceparent`),
//! the wait for a hash thread and the hash itself. Database statements are timed by the
//! ORM, after the fact, so their spans are made here with the times it measured.
//!
//! What a span carries is chosen, never copied from a request: the method, the gRPC
//! code, the client's address, the request id and a statement's SQL with its placeholders.
//! Tokens, passwords and emails travel only as request fields and bound values, which no
//! span records. The usual OTEL_* variables tune the rest: OTEL_SERVICE_NAME,
//! OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_EXPORTER_OTLP_*.

use std::{
    net::IpAddr,
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use http::HeaderMap;
use opentelemetry::{
    KeyValue,
    propagation::{Extractor, TextMapPropagator as _},
    trace::{SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _},
};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider},
};
use tonic::{Code, transport::ClientTlsConfig};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` spans exported, each made in one place with fields checked to hold no
/// secret: a call's (`grpc::access_log`), and the hash wait and the hash
/// (`auth::hasher`).
pub(super) const EXPORTED_SPANS: [&str; 3] = ["rpc", "password_hash.wait", "password_hash"];

/// The tracer spans are exported with; set once, when exporting starts.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are exported. The access layer and the store do their part only then, so
/// that authd without a collector pays nothing for traces.
pub fn exporting() -> bool {
    TRACER.get().is_some()
}

/// An endpoint AUTHD_OTLP_ENDPOINT accepts: an http:// or https:// URL.
pub fn parse_endpoint(value: &str) -> Result<String, String> {
    let expected = "expected the http:// or https:// URL of an OTLP/gRPC collector, such as \
                    http://localhost:4317";
    match value.split_once("://") {
        None => Err(format!("{expected}; this has no scheme")),
        Some((scheme, _)) if !matches!(scheme, "http" | "https") => {
            Err(format!("{expected}; got scheme \"{scheme}\""))
        }
        Some(_) => match url::Url::parse(value) {
            // It would be logged as the exporter's endpoint.
            Ok(url) if !url.username().is_empty() || url.password().is_some() => Err(format!(
                "{expected}; without credentials (send them as OTEL_EXPORTER_OTLP_HEADERS)"
            )),
            Ok(url) if url.host().is_some() => Ok(value.to_owned()),
            Ok(_) => Err(format!("{expected}; this has no host")),
            Err(err) => Err(format!("{expected} ({err})")),
        },
    }
}

/// The span exporter and its batching for `endpoint`, which becomes the process's tracer.
/// Must run on the Tokio runtime: the exporter's channel lives there.
pub(super) fn start(endpoint: &str) -> anyhow::Result<(SdkTracerProvider, SdkTracer)> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if endpoint.starts_with("https:") {
        // The system's roots (SSL_CERT_FILE names others): a collector's certificate is
        // a public or a company CA's, not authd's own.
        exporter = exporter.with_tls_config(ClientTlsConfig::new().with_native_roots());
    }
    let exporter = exporter
        .build()
        .context("AUTHD_OTLP_ENDPOINT: starting the span exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    let tracer = provider.tracer("authd");
    // A second start (only tests could) keeps the first tracer: both export alike.
    let _ = TRACER.set(tracer.clone());
    Ok((provider, tracer))
}

/// service.name "authd" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name it.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&"service.name".into())
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let resource = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        resource.build()
    } else {
        resource.with_service_name("authd").build()
    }
}

/// Sends what is still batched, for at most `limit`: the process is about to exit.
pub(super) async fn flush(provider: SdkTracerProvider, limit: Duration) {
    // Blocks until the exporter's thread is done, which needs the runtime's other threads.
    let _ = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(limit)).await;
}

/// Makes `span` the server span of a gRPC call to `method` (its path; `None` for one not
/// served, named `unknown`), a child of the caller's span when `headers` carry a W3C
/// `traceparent`. The span must declare the fields `otel.name` and `otel.kind`, and not
/// have been entered yet.
pub fn server_call(span: &Span, method: Option<&str>, headers: &HeaderMap, client: Option<IpAddr>) {
    span.record("otel.kind", "server");
    span.set_attribute("rpc.system", "grpc");
    match method.map(|path| path.trim_start_matches('/')) {
        Some(full_method) => {
            let (service, method) = full_method.split_once('/').unwrap_or((full_method, ""));
            span.record("otel.name", full_method);
            span.set_attribute("rpc.service", service.to_owned());
            span.set_attribute("rpc.method", method.to_owned());
        }
        None => {
            span.record("otel.name", "unknown");
        }
    }
    if let Some(client) = client {
        span.set_attribute("client.address", client.to_string());
    }
    let caller = TraceContextPropagator::new().extract(&Headers(headers));
    if caller.span().span_context().is_valid() {
        // Only fails if the span is not exported, and then there is no trace to join.
        let _ = span.set_parent(caller);
    }
}

/// Records how a call ended on its server span: the gRPC code, and an error status for the
/// codes that mean the server failed (the OpenTelemetry conventions for gRPC servers).
pub fn call_finished(span: &Span, code: Code) {
    span.set_attribute("rpc.grpc.status_code", i64::from(code as i32));
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.set_status(Status::error(code.description()));
    }
}

/// A span for one database statement that ran `elapsed` until now, a child of the current
/// exported span. Statements outside a call (migrations, background tasks) or in a call
/// not sampled make none.
pub fn database_statement(system: &'static str, sql: &str, elapsed: Duration, failed: bool) {
    let Some(tracer) = TRACER.get() else { return };
    // OpenTelemetry's current context, not tracing's current span: the driver's own
    // spans (at TRACE) sit between the call's span and the statement, and export nothing.
    let parent = opentelemetry::Context::current();
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let operation = sql
        .split_whitespace()
        .next()
        .map_or_else(|| "query".to_owned(), str::to_ascii_uppercase);
    let ended = SystemTime::now();
    let mut span = tracer
        .span_builder(operation.clone())
        .with_kind(SpanKind::Client)
        .with_start_time(ended.checked_sub(elapsed).unwrap_or(ended))
        .with_attributes([
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", operation),
            // Values are bound apart from the text, never written into it.
            KeyValue::new("db.query.text", sql.to_owned()),
        ])
        .start_with_context(tracer, &parent);
    if failed {
        opentelemetry::trace::Span::set_status(&mut span, Status::error("statement failed"));
    }
    opentelemetry::trace::Span::end_with_timestamp(&mut span, ended);
}

/// Request headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_endpoints() {
        assert!(parse_endpoint("http://localhost:4317").is_ok());
        assert!(parse_endpoint("https://otel.example.com").is_ok());
        let wrong_scheme = parse_endpoint("grpc://localhost:4317").unwrap_err();
        assert!(
            wrong_scheme.contains("got scheme \"grpc\""),
            "{wrong_scheme}"
        );
        let no_scheme = parse_endpoint("localhost:4317").unwrap_err();
        assert!(no_scheme.ends_with("this has no scheme"), "{no_scheme}");
        let credentials = parse_endpoint("https://user:secret@otel.example.com").unwrap_err();
        assert!(!credentials.contains("secret"), "{credentials}");
        assert!(
            credentials.contains("OTEL_EXPORTER_OTLP_HEADERS"),
            "{credentials}"
        );
        let no_host = parse_endpoint("http://:4317").unwrap_err();
        assert!(no_host.contains("http://localhost:4317 ("), "{no_host}");
    }
}
