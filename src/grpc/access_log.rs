//! One log line per call (target `authd::access`), and the request id that ties a call's
//! lines, audit events and answer together.
//!
//! Every call runs in an `rpc` span holding its method and request id, so each line logged
//! while it runs carries both. The request id is the caller's `x-request-id` when it is a
//! sane one (at most [`REQUEST_ID_MAX_BYTES`] of letters, digits and `-_.:/+=@`), else a
//! fresh one; either way it is sent back as `x-request-id`. The address is the client's
//! as [`TrustedProxies`] resolves it, which the rate limits and the audit trail use too
//! (see [`CallInfo`]).
//!
//! When traces are exported, the span is the call's server span, a child of the caller's
//! (`telemetry::traces`).
//!
//! ValidateToken, Health and Envoy's Check are the hot path: their successful calls are
//! logged at DEBUG, and their spans are DEBUG spans; everything else at INFO, and failures
//! of the server's own (INTERNAL, UNAVAILABLE, UNKNOWN, DATA_LOSS) at WARN.

use std::{
    collections::HashSet,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::{
    Code,
    body::Body,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::BoxError;
use tracing::{Instrument as _, Level, Span, field::Empty};

use super::{
    observe::{code_name, observed},
    proxies::TrustedProxies,
};
use crate::telemetry::traces;

/// The longest `x-request-id` taken from a caller.
pub const REQUEST_ID_MAX_BYTES: usize = 128;

/// What the access layer learned about a call, in its request's extensions.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub request_id: RequestId,
    /// The client's address, behind trusted proxies; `None` when not over TCP.
    pub client: Option<IpAddr>,
}

/// A call's request id: printable ASCII, safe in a header, a log line and a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The caller's id when it is a sane one, else a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        headers
            .get("x-request-id")
            .filter(|id| is_sane(id.as_bytes()))
            .map_or_else(Self::generate, |id| Self(id.clone()))
    }

    /// 32 hex digits: this process's random prefix, then a counter. Unique across
    /// replicas and restarts without a random draw per call.
    fn generate() -> Self {
        static PREFIX: LazyLock<u64> = LazyLock::new(|| {
            let mut bytes = [0; 8];
            // Without randomness the time still tells processes apart.
            getrandom::fill(&mut bytes).unwrap_or_else(|_| {
                bytes = (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64)
                    .to_le_bytes();
            });
            u64::from_le_bytes(bytes)
        });
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}{n:016x}", *PREFIX);
        // Hex digits are always a valid header value.
        Self(HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0")))
    }

    pub fn as_str(&self) -> &str {
        // Only sane (ASCII) ids are ever made.
        self.0.to_str().unwrap_or_default()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_sane(id: &[u8]) -> bool {
    (1..=REQUEST_ID_MAX_BYTES).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// Puts every call in its span, resolves its client and request id, and logs it.
#[derive(Debug, Clone)]
pub struct AccessLogLayer {
    proxies: Arc<TrustedProxies>,
    methods: Arc<HashSet<String>>,
}

impl AccessLogLayer {
    /// `methods`: the paths served (`/package.Service/Method`); a span names any other
    /// path `unknown`.
    pub fn new(proxies: TrustedProxies, methods: HashSet<String>) -> Self {
        Self {
            proxies: Arc::new(proxies),
            methods: Arc::new(methods),
        }
    }
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            proxies: Arc::clone(&self.proxies),
            methods: Arc::clone(&self.methods),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
    proxies: Arc<TrustedProxies>,
    methods: Arc<HashSet<String>>,
}

impl<S, B> tower::Service<Request<B>> for AccessLog<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let peer = peer_ip(&request);
        let client = peer.map(|peer| self.proxies.client(peer, request.headers()));
        let request_id = RequestId::of(request.headers());
        let path = request.uri().path().to_owned();
        // The span names a path not served `unknown`: no caller picks what a trace
        // records. The access line still gives the path.
        let known = self.methods.contains(&path);
        let method = if known { path.as_str() } else { "unknown" };
        // A hot call's span is a DEBUG one: at INFO it costs nothing (a span per call at
        // INFO cost a quarter of ValidateToken's throughput; BENCHMARKS.md).
        let span = if is_hot(&path) {
            tracing::debug_span!(
                "rpc",
                method,
                request_id = %request_id,
                otel.name = Empty,
                otel.kind = Empty,
            )
        } else {
            tracing::info_span!(
                "rpc",
                method,
                request_id = %request_id,
                otel.name = Empty,
                otel.kind = Empty,
            )
        };
        if traces::exporting() {
            let served = known.then_some(path.as_str());
            traces::server_call(&span, served, request.headers(), client);
        }
        request.extensions_mut().insert(CallInfo {
            request_id: request_id.clone(),
            client,
        });
        let answer = span.in_scope(|| self.inner.call(request));
        let finished = Finished {
            span: span.clone(),
            request_id: request_id.clone(),
            path,
            client,
            peer,
            started,
        };
        Box::pin(async move {
            let mut response = observed(answer, move |code| finished.log(code))
                .instrument(span)
                .await?;
            response.headers_mut().insert("x-request-id", request_id.0);
            Ok(response)
        })
    }
}

/// The TCP peer's address, over TLS or not.
fn peer_ip<B>(request: &Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })
        .and_then(TcpConnectInfo::remote_addr)
        .map(|addr| addr.ip().to_canonical())
}

/// What the line of a finished call says.
struct Finished {
    span: Span,
    /// Also on the line itself: a hot call's span is off at INFO.
    request_id: RequestId,
    path: String,
    client: Option<IpAddr>,
    peer: Option<IpAddr>,
    started: Instant,
}

impl Finished {
    fn log(self, code: Code) {
        if traces::exporting() {
            traces::call_finished(&self.span, code);
        }
        let latency_ms = duration_ms(self.started.elapsed());
        let (service, method) = self
            .path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", &self.path));
        // The proxy the call came through, when it did.
        let via = self.peer.filter(|peer| Some(*peer) != self.client);
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "authd::access",
                    parent: &self.span,
                    $level,
                    service,
                    method,
                    code = code_name(code),
                    latency_ms,
                    peer = self.client.map(tracing::field::display),
                    via = via.map(tracing::field::display),
                    request_id = self.request_id.as_str(),
                    "call"
                )
            };
        }
        match level(&self.path, code) {
            Level::DEBUG => line!(Level::DEBUG),
            Level::WARN => line!(Level::WARN),
            _ => line!(Level::INFO),
        }
    }
}

/// The calls made far more often than the others, answered from memory.
fn is_hot(path: &str) -> bool {
    matches!(
        path,
        "/auth.v1.AuthService/ValidateToken"
            | "/grpc.health.v1.Health/Check"
            | "/envoy.service.auth.v3.Authorization/Check"
    )
}

fn level(path: &str, code: Code) -> Level {
    match code {
        Code::Ok if is_hot(path) => Level::DEBUG,
        Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss => Level::WARN,
        _ => Level::INFO,
    }
}

/// Milliseconds with microsecond precision.
fn duration_ms(elapsed: Duration) -> f64 {
    (elapsed.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(id: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_bytes(id).unwrap());
        headers
    }

    #[test]
    fn a_sane_request_id_is_kept() {
        let id = RequestId::of(&with_id(b"req-42_a.b:c/d+e=f@g"));
        assert_eq!(id.as_str(), "req-42_a.b:c/d+e=f@g");
    }

    #[test]
    fn an_insane_or_missing_request_id_is_replaced() {
        let long = vec![b'a'; REQUEST_ID_MAX_BYTES + 1];
        for bad in [
            &b"has space"[..],
            b"new\tline",
            b"quote\"",
            b"",
            &long,
            b"\xc3\xa9",
        ] {
            let id = RequestId::of(&with_id(bad));
            assert_ne!(id.as_str().as_bytes(), bad);
            assert_eq!(id.as_str().len(), 32, "{id}");
        }
        let first = RequestId::of(&HeaderMap::new());
        let second = RequestId::of(&HeaderMap::new());
        assert_ne!(first, second);
        assert!(first.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        let longest = vec![b'a'; REQUEST_ID_MAX_BYTES];
        assert_eq!(
            RequestId::of(&with_id(&longest)).as_str().len(),
            REQUEST_ID_MAX_BYTES
        );
    }

    #[test]
    fn only_the_hot_paths_succeed_quietly() {
        let validate = "/auth.v1.AuthService/ValidateToken";
        assert_eq!(level(validate, Code::Ok), Level::DEBUG);
        assert_eq!(level(validate, Code::Unauthenticated), Level::INFO);
        assert_eq!(level(validate, Code::Unavailable), Level::WARN);
        assert_eq!(level("/auth.v1.AuthService/Login", Code::Ok), Level::INFO);
    }
}
