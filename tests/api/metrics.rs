//! `/metrics` on AUTHD_METRICS_LISTEN, scraped after known calls and read with a
//! Prometheus exposition-format parser.

use http::{Method, StatusCode};
use prometheus_parse::{Sample, Scrape, Value};
use tonic::Code;

use crate::{
    gateway::Http,
    helpers::{PASSWORD, TestApp, TestDb, assert_code},
};

async fn scrape(app: &TestApp) -> Scrape {
    let port = app.metrics_addr.expect("metrics are on").port();
    let (status, headers, body) = Http::to(port)
        .send(Method::GET, "/metrics", &[], bytes::Bytes::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("exposition format")
}

/// The one sample of `metric` whose labels include all of `labels`.
fn sample<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    let mut found = scrape.samples.iter().filter(|sample| {
        sample.metric == metric
            && labels
                .iter()
                .all(|(name, value)| sample.labels.get(name) == Some(*value))
    });
    let first = found.next();
    assert!(
        found.next().is_none(),
        "several {metric} samples match {labels:?}"
    );
    first
}

fn count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, metric, labels).map(|sample| &sample.value) {
        None => 0.0,
        Some(Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value)) => *value,
        Some(Value::Histogram(buckets)) => buckets.last().map_or(0.0, |bucket| bucket.count),
        Some(other) => panic!("{metric}: unexpected {other:?}"),
    }
}

fn method(name: &str) -> [(&'static str, &str); 3] {
    [
        ("grpc_type", "unary"),
        ("grpc_service", "auth.v1.AuthService"),
        ("grpc_method", name),
    ]
}

fn with_code<'a>(
    labels: [(&'static str, &'a str); 3],
    code: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut labels = labels.to_vec();
    labels.push(("grpc_code", code));
    labels
}

#[tokio::test]
async fn metrics_count_every_call_by_service_method_and_code_as_go_grpc_prometheus_does() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.metrics_listen = Some("127.0.0.1:0".parse().unwrap()))
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    app.login(&email, PASSWORD).await.unwrap();
    assert_code(
        app.login(&email, "not the password at all").await,
        Code::Unauthenticated,
    );
    for _ in 0..3 {
        assert!(app.validate(&tokens.access_token).await.unwrap().active);
    }
    assert_code(app.get_me(None).await, Code::Unauthenticated);
    app.get_me(Some(&tokens.access_token)).await.unwrap();

    let scrape = scrape(&app).await;
    let started = |name| count(&scrape, "grpc_server_started_total", &method(name));
    let handled = |name, code| {
        count(
            &scrape,
            "grpc_server_handled_total",
            &with_code(method(name), code),
        )
    };
    assert_eq!(started("Register"), 1.0);
    assert_eq!(handled("Register", "OK"), 1.0);
    assert_eq!(started("Login"), 2.0);
    assert_eq!(handled("Login", "OK"), 1.0);
    assert_eq!(handled("Login", "Unauthenticated"), 1.0);
    assert_eq!(handled("ValidateToken", "OK"), 3.0);
    assert_eq!(handled("GetMe", "Unauthenticated"), 1.0);
    assert_eq!(handled("GetMe", "OK"), 1.0);
    // Every handled call is timed, in go-grpc-prometheus's buckets.
    let histogram = sample(
        &scrape,
        "grpc_server_handling_seconds",
        &method("ValidateToken"),
    )
    .expect("the handling-time histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}")
    };
    let bounds: Vec<f64> = buckets.iter().map(|bucket| bucket.less_than).collect();
    assert_eq!(
        bounds,
        [
            0.005,
            0.01,
            0.025,
            0.05,
            0.1,
            0.25,
            0.5,
            1.0,
            2.5,
            5.0,
            10.0,
            f64::INFINITY
        ]
    );
    assert_eq!(buckets.last().unwrap().count, 3.0);

    // authd's own.
    assert_eq!(
        count(&scrape, "authd_logins_total", &[("outcome", "success")]),
        1.0
    );
    assert_eq!(
        count(
            &scrape,
            "authd_logins_total",
            &[("outcome", "bad_credentials")]
        ),
        1.0
    );
    // Three validations and one GetMe of one token: one signature check, the rest cached.
    assert_eq!(
        count(&scrape, "authd_validate_cache_misses_total", &[]),
        1.0
    );
    assert_eq!(count(&scrape, "authd_validate_cache_hits_total", &[]), 3.0);
    assert_eq!(count(&scrape, "authd_password_hashes_in_flight", &[]), 0.0);
    let key_age = count(&scrape, "authd_signing_key_age_seconds", &[]);
    assert!((0.0..60.0).contains(&key_age), "{key_age}");
    let sync_age = count(&scrape, "authd_revocation_sync_age_seconds", &[]);
    assert!((0.0..5.0).contains(&sync_age), "{sync_age}");
    app.stop().await;
}
