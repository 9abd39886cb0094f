//! authd behind real gateways and clients, started by the tests: Envoy's gRPC-JSON
//! transcoder with the very config `deploy/envoy/` ships, gRPC-Web from `buf curl` and
//! from a page in headless Chromium. The programs come from AUTHD_TEST_ENVOY,
//! AUTHD_TEST_BUF and AUTHD_TEST_BROWSER or PATH (`.ci/run` installs them, pinned);
//! without one, its tests say they are skipped.

mod ext_authz;
mod grpc_web;
mod transcoder;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
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
        let child = Command::new(binary)
            .arg("--config-path")
            .arg(&path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warning",
            ])
            .stdout(Stdio::null())
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
