//! Traces: a real authd process exports its spans over OTLP/gRPC to a receiver in this
//! test (the collector's trace service), which checks one call's spans, their parent and
//! their attributes.

use std::time::Duration;

use authd::proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::helpers::{PASSWORD, TestDb, connect_authd, free_port, start_authd};

/// What a collector received: each span with its resource's attributes.
struct Exported {
    resource: Vec<KeyValue>,
    span: Span,
}

/// The collector's trace service, handing every span it receives to the test.
struct Receiver(mpsc::UnboundedSender<Exported>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for batch in request.into_inner().resource_spans {
            let resource = batch.resource.map(|r| r.attributes).unwrap_or_default();
            for scope in batch.scope_spans {
                for span in scope.spans {
                    let _ = self.0.send(Exported {
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A receiver on 127.0.0.1: its endpoint URL and what it receives.
async fn collector() -> (String, mpsc::UnboundedReceiver<Exported>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (spans, received) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(spans)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (endpoint, received)
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string<'a>(attributes: &'a [KeyValue], key: &str) -> &'a str {
    match attribute(attributes, key) {
        Some(Value::StringValue(value)) => value,
        other => panic!("{key}: expected a string, got {other:?}"),
    }
}

fn int(attributes: &[KeyValue], key: &str) -> i64 {
    match attribute(attributes, key) {
        Some(Value::IntValue(value)) => *value,
        other => panic!("{key}: expected an integer, got {other:?}"),
    }
}

/// A W3C traceparent for a sampled call from `parent` in trace `trace`.
fn traceparent(trace: [u8; 16], parent: [u8; 8]) -> String {
    format!("00-{}-{}-01", hex(&trace), hex(&parent))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_trace<T>(message: T, trace: [u8; 16], parent: [u8; 8]) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent(trace, parent).parse().unwrap());
    request
}

/// The server span of the call made in `trace`.
fn server_span(spans: &[Exported], trace: [u8; 16]) -> &Exported {
    let mut found = spans
        .iter()
        .filter(|e| e.span.trace_id == trace && e.span.kind() == SpanKind::Server);
    let span = found.next().expect("the call's server span");
    assert!(found.next().is_none(), "one server span per call");
    span
}

#[tokio::test]
async fn a_call_is_traced_under_its_callers_span_with_no_secret_in_any_attribute() {
    let (endpoint, mut received) = collector().await;
    let db = TestDb::fresh().await;
    let port = free_port();
    // Never exported on a timer: what arrives was sent by the flush at shutdown.
    let server = start_authd(
        &db,
        port,
        &[
            ("AUTHD_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
            ("AUTHD_SHUTDOWN_DRAIN", "0s"),
            // Every log line on: the driver's own spans sit around each statement.
            ("AUTHD_LOG", "trace"),
        ],
    );
    let mut client = AuthServiceClient::new(connect_authd(port).await);

    let email = format!("traced-{}@example.com", uuid::Uuid::now_v7().simple());
    let (register_trace, caller_span) = ([0x11; 16], [0x22; 8]);
    let mut register = with_trace(
        pb::RegisterRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            name: "Traced".into(),
        },
        register_trace,
        caller_span,
    );
    register
        .metadata_mut()
        .insert("x-request-id", "trace-test-1".parse().unwrap());
    let tokens = client
        .register(register)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let refused_trace = [0x33; 16];
    let refused = client
        .login(with_trace(
            pb::LoginRequest {
                email: email.clone(),
                password: "not the password at all".into(),
            },
            refused_trace,
            caller_span,
        ))
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    let validate_trace = [0x44; 16];
    let validated = client
        .validate_token(with_trace(
            pb::ValidateTokenRequest {
                token: tokens.access_token.clone(),
            },
            validate_trace,
            caller_span,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(validated.active);
    let unsampled_trace = [0x55; 16];
    let mut unsampled = Request::new(pb::ValidateTokenRequest {
        token: tokens.access_token.clone(),
    });
    let flags_off = format!("00-{}-{}-00", hex(&unsampled_trace), hex(&caller_span));
    unsampled
        .metadata_mut()
        .insert("traceparent", flags_off.parse().unwrap());
    client.validate_token(unsampled).await.unwrap();
    let unknown_trace = [0x66; 16];
    let mut grpc = tonic::client::Grpc::new(connect_authd(port).await);
    grpc.ready().await.unwrap();
    let unknown = grpc
        .unary::<_, pb::ValidateTokenResponse, _>(
            with_trace(
                pb::ValidateTokenRequest::default(),
                unknown_trace,
                caller_span,
            ),
            http::uri::PathAndQuery::from_static("/auth.v1.AuthService/NoSuchMethod"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::Unimplemented);

    let exited = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    let mut spans = Vec::new();
    while let Ok(Some(exported)) =
        tokio::time::timeout(Duration::from_millis(500), received.recv()).await
    {
        spans.push(exported);
    }

    // The call's server span, a child of the caller's.
    let register = server_span(&spans, register_trace);
    assert_eq!(register.span.name, "auth.v1.AuthService/Register");
    assert_eq!(register.span.parent_span_id, caller_span);
    let attributes = &register.span.attributes;
    assert_eq!(string(attributes, "rpc.system"), "grpc");
    assert_eq!(string(attributes, "rpc.service"), "auth.v1.AuthService");
    assert_eq!(string(attributes, "rpc.method"), "Register");
    assert_eq!(int(attributes, "rpc.grpc.status_code"), 0);
    assert_eq!(string(attributes, "client.address"), "127.0.0.1");
    assert_eq!(string(attributes, "request_id"), "trace-test-1");
    assert_eq!(string(&register.resource, "service.name"), "authd");

    // Its children: the wait for a hash thread, the hash, the statements.
    let children: Vec<&Span> = spans
        .iter()
        .map(|e| &e.span)
        .filter(|s| s.trace_id == register_trace && s.parent_span_id == register.span.span_id)
        .collect();
    let named = |name: &str| {
        children
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span among {children:#?}"))
    };
    let wait = named("password_hash.wait");
    let hash = named("password_hash");
    assert!(wait.end_time_unix_nano <= hash.start_time_unix_nano);
    assert!(hash.start_time_unix_nano < hash.end_time_unix_nano);
    let system = match db.url.split(':').next().unwrap() {
        "sqlite" => "sqlite",
        "postgres" | "postgresql" => "postgresql",
        _ => "mysql",
    };
    let statements: Vec<&&Span> = children
        .iter()
        .filter(|s| s.kind() == SpanKind::Client)
        .collect();
    assert!(
        statements.iter().any(|s| s.name == "INSERT"),
        "{statements:#?}"
    );
    for statement in &statements {
        assert_eq!(string(&statement.attributes, "db.system.name"), system);
        let sql = string(&statement.attributes, "db.query.text");
        assert!(
            sql.to_ascii_uppercase().starts_with(&statement.name),
            "{sql}"
        );
        assert!(statement.start_time_unix_nano >= register.span.start_time_unix_nano);
        assert!(statement.end_time_unix_nano <= register.span.end_time_unix_nano);
    }

    // A refused login is the caller's error: its code, and no error status.
    let refused = server_span(&spans, refused_trace);
    assert_eq!(refused.span.name, "auth.v1.AuthService/Login");
    assert_eq!(int(&refused.span.attributes, "rpc.grpc.status_code"), 16);
    let status = refused.span.status.clone().unwrap_or_default();
    assert_ne!(status.code(), StatusCode::Error);

    // The hot path is traced as well when a caller's trace asks for it.
    let validate = server_span(&spans, validate_trace);
    assert_eq!(validate.span.name, "auth.v1.AuthService/ValidateToken");
    assert_eq!(validate.span.parent_span_id, caller_span);

    // A caller's trace that is not sampled is not recorded here either.
    assert!(spans.iter().all(|e| e.span.trace_id != unsampled_trace));

    // A path not served is named `unknown` (no caller picks span names), and is an error
    // of the server's kind.
    let unknown = server_span(&spans, unknown_trace);
    assert_eq!(unknown.span.name, "unknown");
    assert!(attribute(&unknown.span.attributes, "rpc.method").is_none());
    assert_eq!(string(&unknown.span.attributes, "method"), "unknown");
    assert!(!format!("{:?}", unknown.span).contains("NoSuchMethod"));
    assert_eq!(int(&unknown.span.attributes, "rpc.grpc.status_code"), 12);
    let status = unknown.span.status.clone().unwrap_or_default();
    assert_eq!(status.code(), StatusCode::Error);

    // A call without a traceparent starts its own trace (the health checks made above).
    assert!(
        spans
            .iter()
            .any(|e| e.span.name == "grpc.health.v1.Health/Check"
                && e.span.parent_span_id.is_empty())
    );

    // Statements outside a call (migrations, the health probe) make no spans.
    assert!(
        spans
            .iter()
            .filter(|e| e.span.kind() == SpanKind::Client)
            .all(|e| !e.span.parent_span_id.is_empty()),
        "a database span without a call"
    );

    // No secret anywhere: not in a name, an attribute, an event or the resource.
    for exported in &spans {
        let printed = format!("{:?} {:?}", exported.span, exported.resource);
        for secret in [
            email.as_str(),
            email.split('@').next().unwrap(),
            PASSWORD,
            "not the password at all",
            &tokens.access_token,
            &tokens.refresh_token,
            "$argon2",
        ] {
            assert!(!printed.contains(secret), "a secret in {printed}");
        }
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_delays_a_stop_by_at_most_the_flush_limit() {
    // Takes connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let db = TestDb::fresh().await;
    let port = free_port();
    let server = start_authd(
        &db,
        port,
        &[
            ("AUTHD_OTLP_ENDPOINT", &endpoint),
            ("AUTHD_SHUTDOWN_DRAIN", "0s"),
        ],
    );
    // Health checks: spans batched for the silent collector.
    connect_authd(port).await;
    let signalled = std::time::Instant::now();
    let exited = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    // The flush waits 1 s at most (the export's own timeout is 10 s), the rest of the
    // stop well under a second with nothing in flight and no drain.
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(3), "stopped in {took:?}");
}
