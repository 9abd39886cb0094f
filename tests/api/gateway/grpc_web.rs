//! gRPC-Web on authd's own port: `buf curl --protocol grpcweb` over HTTP/1.1, the CORS
//! policy of AUTHD_CORS_ORIGINS, and the page in `examples/web/` (connect-web's gRPC-Web
//! transport, code from protoc-gen-es) run by headless Chromium from another origin.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use super::{Http, descriptor_file, tool};
use tonic::Code;

use crate::helpers::{PASSWORD, TestApp, TestDb, assert_code, spawn_app};

/// `buf curl --protocol grpcweb` (plain http, so HTTP/1.1) of one AuthService method.
async fn buf_curl(
    buf: &Path,
    schema: &Path,
    app: &TestApp,
    method: &str,
    args: &[&str],
    body: Value,
) -> Value {
    let mut command = Command::new(buf);
    command
        .args(["curl", "--protocol", "grpcweb", "--schema"])
        .arg(schema)
        .args(args)
        .arg("--data")
        .arg(body.to_string())
        .arg(format!(
            "http://127.0.0.1:{}/auth.v1.AuthService/{method}",
            app.addr.port()
        ));
    // Off the runtime: the server answering it runs there.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("running buf");
    assert!(
        output.status.success(),
        "buf curl {method}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("buf curl prints JSON")
}

#[tokio::test]
async fn buf_curl_speaks_grpc_web_over_http_1_1_to_the_grpc_port() {
    let Some(buf) = tool("AUTHD_TEST_BUF", "buf") else {
        return;
    };
    let app = spawn_app().await;
    let schema = descriptor_file();
    let email = format!("grpcweb-{}@example.com", uuid::Uuid::now_v7().simple());

    let registered = buf_curl(
        &buf,
        schema.path(),
        &app,
        "Register",
        &[],
        json!({"email": email, "password": PASSWORD, "name": "Web"}),
    )
    .await;
    let access = registered["tokens"]["accessToken"]
        .as_str()
        .expect("an access token");
    let me = buf_curl(
        &buf,
        schema.path(),
        &app,
        "GetMe",
        &["-H", &format!("authorization: Bearer {access}")],
        json!({}),
    )
    .await;
    assert_eq!(me["user"]["email"], email.as_str());
    app.stop().await;
}

#[tokio::test]
async fn cors_headers_answer_only_the_configured_origins() {
    let allowed = "https://app.example.com";
    let app = app_allowing(&[allowed]).await;
    let http = Http::to(app.addr.port());
    let preflight = |origin: &'static str| {
        let http = &http;
        async move {
            http.call(
                Method::OPTIONS,
                "/auth.v1.AuthService/GetMe",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization,content-type,x-grpc-web,grpc-timeout",
                    ),
                ],
                None,
            )
            .await
        }
    };

    let answer = preflight(allowed).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_ascii_lowercase())
    };
    assert_eq!(
        header("access-control-allow-origin").as_deref(),
        Some(allowed)
    );
    let allowed_in = header("access-control-allow-headers").unwrap_or_default();
    for name in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "grpc-timeout",
    ] {
        assert!(
            allowed_in.contains(name),
            "{name} not allowed in: {allowed_in}"
        );
    }
    // What the page may read is said on the answer itself.
    let call = http
        .send(
            Method::POST,
            "/auth.v1.AuthService/GetJwks",
            &[
                ("origin", allowed),
                ("content-type", "application/grpc-web+proto"),
                ("x-grpc-web", "1"),
            ],
            // One empty GetJwksRequest: an uncompressed frame of length 0.
            bytes::Bytes::from_static(&[0, 0, 0, 0, 0]),
        )
        .await;
    assert_eq!(call.0, StatusCode::OK, "{call:?}");
    let exposed = call
        .1
        .get("access-control-expose-headers")
        .map(|value| value.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    assert_eq!(
        call.1
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(allowed)
    );

    let other = preflight("https://evil.example.com").await;
    assert!(
        other.headers.get("access-control-allow-origin").is_none(),
        "another origin allowed: {other:?}"
    );
    app.stop().await;

    // By default no origin is: no CORS header at all.
    let app = spawn_app().await;
    let answer = Http::to(app.addr.port())
        .call(
            Method::OPTIONS,
            "/auth.v1.AuthService/GetMe",
            &[
                ("origin", allowed),
                ("access-control-request-method", "POST"),
            ],
            None,
        )
        .await;
    let cors: Vec<_> = answer
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "CORS headers by default: {cors:?}");
    app.stop().await;
}

/// Chromium and the built page, or `None` (skipped) where neither was asked for.
fn browser_and_page() -> Option<(PathBuf, PathBuf)> {
    let browser = tool("AUTHD_TEST_BROWSER", "chromium")?;
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/web");
    if !page.join("dist/app.js").is_file() {
        let build = "build it: cd examples/web && npm ci && npm run build";
        assert!(
            std::env::var_os("AUTHD_TEST_BROWSER").is_none(),
            "examples/web is not built; {build}"
        );
        eprintln!("skipped: examples/web is not built ({build})");
        return None;
    }
    Some((browser, page))
}

/// The page's origin: serves the files under `root` over HTTP/1.1 on a port of its own,
/// and takes the outcome the page posts to `/outcome`.
struct PageServer {
    port: u16,
    outcome: mpsc::Receiver<Value>,
}

impl PageServer {
    async fn start(root: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (report, outcome) = mpsc::channel(1);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_one(stream, root.clone(), report.clone()));
            }
        });
        Self { port, outcome }
    }
}

async fn serve_one(mut stream: TcpStream, root: PathBuf, report: mpsc::Sender<Value>) {
    let mut request = Vec::new();
    let mut buffer = [0; 8192];
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let path = target
        .split('?')
        .next()
        .unwrap_or("/")
        .trim_start_matches('/');
    let (status, kind, body) = if method == "POST" && path == "outcome" {
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0);
        while request.len() < head_end + length {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => request.extend_from_slice(&buffer[..read]),
            }
        }
        let outcome = serde_json::from_slice(&request[head_end..head_end + length])
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request).into_owned()));
        let _ = report.send(outcome).await;
        ("204 No Content", "text/plain", Vec::new())
    } else {
        let kind = if path.ends_with(".js") {
            "text/javascript"
        } else {
            "text/html"
        };
        match (!path.contains("..")).then(|| std::fs::read(root.join(path))) {
            Some(Ok(body)) => ("200 OK", kind, body),
            _ => ("404 Not Found", kind, Vec::new()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
}

/// Loads the page in headless Chromium against `app` and returns the outcome it reports.
async fn run_page(browser: &Path, page: &mut PageServer, app: &TestApp, email: &str) -> Value {
    let profile = tempfile::tempdir().unwrap();
    let url = format!(
        "http://127.0.0.1:{}/index.html?authd=http://127.0.0.1:{}&email={email}&report=1",
        page.port,
        app.addr.port()
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut chromium = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("starting the browser");
    let outcome = tokio::time::timeout(Duration::from_secs(60), page.outcome.recv()).await;
    let _ = chromium.kill();
    let _ = chromium.wait();
    match outcome {
        Ok(Some(outcome)) => outcome,
        _ => panic!(
            "the page reported nothing within 60 s; the browser said:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        ),
    }
}

/// authd allowing `origins` to call over gRPC-Web.
async fn app_allowing(origins: &[&str]) -> TestApp {
    let origins = origins
        .iter()
        .map(|origin| origin.parse().unwrap())
        .collect();
    TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.cors_origins = origins)
        .spawn()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_of_an_allowed_origin_registers_logs_in_and_reads_the_account() {
    let Some((browser, page)) = browser_and_page() else {
        return;
    };
    let mut page = PageServer::start(page).await;
    let app = app_allowing(&[&format!("http://127.0.0.1:{}", page.port)]).await;
    let email = format!("browser-{}@example.com", uuid::Uuid::now_v7().simple());

    let outcome = run_page(&browser, &mut page, &app, &email).await;
    assert_eq!(
        outcome,
        json!({"ok": true, "email": email, "name": "Web User"})
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_refuses_a_page_of_an_origin_not_listed() {
    let Some((browser, page)) = browser_and_page() else {
        return;
    };
    let mut page = PageServer::start(page).await;
    let app = app_allowing(&["https://app.example.com"]).await;
    let email = format!("browser-{}@example.com", uuid::Uuid::now_v7().simple());

    let outcome = run_page(&browser, &mut page, &app, &email).await;
    assert_eq!(outcome["ok"], false, "{outcome}");
    // Refused at the preflight: the Register never reached authd.
    assert_code(app.login(&email, PASSWORD).await, Code::Unauthenticated);
    app.stop().await;
}
