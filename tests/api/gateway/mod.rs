//! authd behind real gateways and clients, started by the tests: Envoy's gRPC-JSON
//! transcoder, ext_authz and the docker-compose topology with the very configs `deploy/`
//! ships, gRPC-Web from `buf curl` and from a page in headless Chromium. The programs
//! come from AUTHD_TEST_ENVOY, AUTHD_TEST_BUF and AUTHD_TEST_BROWSER or PATH (`.ci/run`
//! installs them, pinned); without one, its tests say they are skipped.

mod ext_authz;
mod grpc_web;
mod topology;
mod transcoder;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::helpers::{TestApp, authd_bin, free_port};

/// An outside program the gateway tests drive: the path in `variable`, else `name` on
/// PATH; `None` (with a note on stderr, the test is skipped) when there is neither. CI sets
/// the variables, so there a missing tool fails instead.
pub fn tool(variable: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{variable}={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        eprintln!("skipped: no {name} (set {variable} or put it on PATH; .ci/run installs it)");
    }
    found
}

pub fn envoy_binary() -> Option<PathBuf> {
    tool("AUTHD_TEST_ENVOY", "envoy")
}

/// `authd descriptor`'s output, in a file.
pub fn descriptor_file() -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".binpb")
        .tempfile()
        .unwrap();
    let output = authd_bin()
        .arg("descriptor")
        .stdout(file.reopen().unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "authd descriptor: {output:?}");
    // The same set with --output, as an image without a shell writes it.
    let copy = tempfile::NamedTempFile::new().unwrap();
    let written = authd_bin()
        .arg("descriptor")
        .arg("--output")
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "authd descriptor --output: {written:?}"
    );
    let (printed, copied) = (
        std::fs::read(file.path()).unwrap(),
        std::fs::read(copy.path()).unwrap(),
    );
    assert!(!printed.is_empty() && printed == copied);
    file
}

/// A running Envoy, killed when dropped.
pub struct Envoy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy with `deploy/envoy/{config}` listening on 127.0.0.1 at a free port,
    /// each `(from, to)` replaced; every `from` must occur in the file, so a config that
    /// drifts from its tests fails them.
    pub async fn start(binary: &Path, config: &str, replacements: &[(&str, String)]) -> Self {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/envoy")
            .join(config);
        let mut text = std::fs::read_to_string(&source).expect("the Envoy config");
        let port = free_port();
        let listener = [
            ("address: 0.0.0.0", "address: 127.0.0.1".to_owned()),
            ("port_value: 8080", format!("port_value: {port}")),
        ];
        for (from, to) in listener.iter().chain(replacements) {
            assert!(
                text.contains(from),
                "{} no longer contains {from:?}",
                source.display()
            );
            text = text.replace(from, to);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(config);
        std::fs::write(&path, text).unwrap();
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let out = std::fs::File::create(dir.path().join("envoy.out")).unwrap();
        let child = Command::new(binary)
            .arg("--config-path")
            .arg(&path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warning",
                // Access logs reach the file within 50 ms, not Envoy's default 10 s.
                "--file-flush-interval-msec",
                "50",
            ])
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("starting Envoy");
        let mut envoy = Self { child, port, dir };
        envoy.wait_until_listening().await;
        envoy
    }

    /// Envoy with `transcoder.yaml` in front of `app`, fed the descriptor set that
    /// `authd descriptor` prints.
    pub async fn transcoder(binary: &Path, app: &TestApp) -> Self {
        let descriptor = descriptor_file();
        let envoy = Self::start(
            binary,
            "transcoder.yaml",
            &[
                ("address: authd", "address: 127.0.0.1".into()),
                (
                    "port_value: 50051",
                    format!("port_value: {}", app.addr.port()),
                ),
                (
                    "/etc/envoy/authd.pb",
                    descriptor.path().display().to_string(),
                ),
            ],
        )
        .await;
        // Envoy reads the descriptor at start; keep the file until it has.
        drop(descriptor);
        envoy
    }

    async fn wait_until_listening(&mut self) {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Envoy exited ({status}):\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Envoy never listened:\n{}", self.log());
    }

    /// What Envoy wrote to stderr, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// What Envoy wrote to stdout: its access log, where a config has one.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.out")).unwrap_or_default()
    }

    /// A plain HTTP/1.1 client of this Envoy.
    pub fn http(&self) -> Http {
        Http::to(self.port)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service behind Envoy: answers every request with the headers it received, as a
/// JSON object, and counts the requests that reached it.
pub struct Echo {
    pub port: u16,
    served: Arc<AtomicUsize>,
}

impl Echo {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0; 4096];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&request);
                    let headers: BTreeMap<String, String> = text
                        .lines()
                        .skip(1)
                        .filter_map(|line| line.split_once(':'))
                        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
                        .collect();
                    let body = serde_json::to_string(&headers).unwrap();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                });
            }
        });
        Self { port, served }
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 JSON client, as a REST caller is.
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// An HTTP answer: status, headers and the body as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl Http {
    /// A client of `http://127.0.0.1:{port}`.
    pub fn to(port: u16) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Sends `body` as it is; the answer's status, headers and body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .expect("an HTTP answer");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, bytes)
    }

    /// Sends `body` as JSON and reads the answer as JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut headers = headers.to_vec();
        let body = match body {
            Some(json) => {
                headers.push(("content-type", "application/json"));
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let (status, headers, bytes) = self.send(method, path, &headers, body).await;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                panic!("not JSON ({err}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Answer {
            status,
            headers,
            json,
        }
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Answer {
        self.call(Method::POST, path, headers, Some(body)).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.call(Method::GET, path, headers, None).await
    }
}
