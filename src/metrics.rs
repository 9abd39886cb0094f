//! Prometheus metrics on AUTHD_METRICS_LISTEN: the gRPC server series as
//! go-grpc-prometheus names them, recorded for every service by one tower layer
//! ([`GrpcMetricsLayer`]), and authd's own, read from the server's state at each scrape
//! ([`Gauges`]).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder as _};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tokio::{net::TcpListener, sync::watch};
use tonic::{Code, body::Body};

use tower::BoxError;

use crate::grpc::observe::{code_name, observed};

/// go-grpc-prometheus's buckets (Prometheus' defaults), in seconds.
const HANDLING_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The series, shared by the layer and the scrape endpoint.
pub struct Metrics {
    recorder: PrometheusRecorder,
    /// Every method served, by path: a path outside it (a scanner's guess) is counted
    /// under `unknown`, so nobody can grow the series without bound.
    methods: HashMap<String, Arc<MethodSeries>>,
    unknown: Arc<MethodSeries>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("methods", &self.methods.len())
            .finish_non_exhaustive()
    }
}

const METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

impl Metrics {
    /// Series for these methods: `(/package.Service/Method, grpc_type)`.
    pub fn new(methods: impl IntoIterator<Item = (String, &'static str)>) -> anyhow::Result<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("grpc_server_handling_seconds".into()),
                &HANDLING_BUCKETS,
            )
            .context("histogram buckets")?
            .build_recorder();
        let series = |kind, service: &str, method: &str| {
            Arc::new(MethodSeries::new(&recorder, kind, service, method))
        };
        let methods = methods
            .into_iter()
            .filter_map(|(path, kind)| {
                let (service, method) = path.trim_start_matches('/').split_once('/')?;
                let series = series(kind, service, method);
                Some((path, series))
            })
            .collect();
        let unknown = series("unary", "unknown", "unknown");
        Ok(Self {
            recorder,
            methods,
            unknown,
        })
    }

    fn method(&self, path: &str) -> Arc<MethodSeries> {
        Arc::clone(self.methods.get(path).unwrap_or(&self.unknown))
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// The exposition text, with the readings taken now.
    fn render(&self, gauges: &dyn Gauges) -> String {
        for reading in gauges.read() {
            let key = Key::from_name(reading.name);
            match reading.value {
                Value::Gauge(value) => {
                    self.recorder.register_gauge(&key, &METADATA).set(value);
                    (self.recorder).describe_gauge(reading.name.into(), None, reading.help.into());
                }
                Value::Total(value) => {
                    self.recorder
                        .register_counter(&key, &METADATA)
                        .absolute(value);
                    (self.recorder).describe_counter(
                        reading.name.into(),
                        None,
                        reading.help.into(),
                    );
                }
            }
        }
        self.recorder.handle().render()
    }
}

/// authd's own series that are read from its state at a scrape, not counted by the layer.
pub trait Gauges: Send + Sync {
    fn read(&self) -> Vec<Reading>;
}

/// One series read at a scrape.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub name: &'static str,
    pub help: &'static str,
    pub value: Value,
}

#[derive(Debug, Clone, Copy)]
pub enum Value {
    Gauge(f64),
    /// A count since start, kept elsewhere.
    Total(u64),
}

/// One method's series, registered once.
struct MethodSeries {
    started: Counter,
    handling: Histogram,
    /// By gRPC code, registered on first use.
    handled: [OnceLock<Counter>; 17],
    labels: [Label; 3],
    /// Login outcomes, for `/auth.v1.AuthService/Login` only.
    is_login: bool,
}

impl MethodSeries {
    fn new(recorder: &PrometheusRecorder, kind: &'static str, service: &str, method: &str) -> Self {
        let labels = [
            Label::new("grpc_type", kind),
            Label::new("grpc_service", service.to_owned()),
            Label::new("grpc_method", method.to_owned()),
        ];
        let key = |name| Key::from_parts(name, labels.to_vec());
        Self {
            started: recorder.register_counter(&key("grpc_server_started_total"), &METADATA),
            handling: recorder.register_histogram(&key("grpc_server_handling_seconds"), &METADATA),
            handled: std::array::from_fn(|_| OnceLock::new()),
            is_login: service == "auth.v1.AuthService" && method == "Login",
            labels,
        }
    }

    fn finish(&self, metrics: &Metrics, code: Code, elapsed: Duration) {
        let index = code as usize;
        self.handled[index]
            .get_or_init(|| {
                let mut labels = self.labels.to_vec();
                labels.push(Label::new("grpc_code", code_name(code)));
                metrics.counter("grpc_server_handled_total", labels)
            })
            .increment(1);
        self.handling.record(elapsed.as_secs_f64());
        if self.is_login {
            let outcome = match code {
                Code::Ok => "success",
                Code::Unauthenticated => "bad_credentials",
                Code::PermissionDenied => "deactivated",
                Code::ResourceExhausted => "throttled",
                Code::InvalidArgument => "invalid",
                _ => "error",
            };
            metrics
                .counter("authd_logins_total", vec![Label::new("outcome", outcome)])
                .increment(1);
        }
    }
}

/// Records every call of every service: started when it arrives, handled with its code
/// when its status is known (in the headers of a trailers-only answer, else in the
/// trailers), and how long that took.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer(Arc<Metrics>);

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self(metrics)
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<Request<B>> for GrpcMetrics<S>
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let series = self.metrics.method(request.uri().path());
        series.started.increment(1);
        let metrics = Arc::clone(&self.metrics);
        let started = Instant::now();
        Box::pin(observed(self.inner.call(request), move |code| {
            series.finish(&metrics, code, started.elapsed());
        }))
    }
}

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    gauges: Arc<dyn Gauges>,
    mut stop: watch::Receiver<bool>,
) {
    // Histogram samples wait in a queue until a scrape or this folds them into buckets:
    // without a scrape, the queue would grow with every call.
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        let stream = tokio::select! {
            _ = upkeep.tick() => {
                metrics.recorder.handle().run_upkeep();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let (metrics, gauges) = (Arc::clone(&metrics), Arc::clone(&gauges));
        tokio::spawn(async move {
            let scrape = service_fn(move |request: Request<hyper::body::Incoming>| {
                let answer = if request.uri().path() == "/metrics" {
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(metrics.render(gauges.as_ref()))))
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
                };
                async move { Ok::<_, Infallible>(answer.unwrap_or_default()) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), scrape);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "metrics connection ended");
            }
        });
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: dropped here, before any other await.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Binds AUTHD_METRICS_LISTEN.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("AUTHD_METRICS_LISTEN: cannot listen on {address}"))
}
