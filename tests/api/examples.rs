//! The client examples in `examples/` (Rust, Python, Node), each run as its own process
//! against a live authd, as someone integrating would run them: a service that admits a
//! caller only if ValidateToken, asked with the service's API key, accepts their token.

use std::{path::PathBuf, process::Stdio, time::Duration};

use sha2::{Digest as _, Sha256};

use crate::helpers::{TestApp, TestDb, free_port};

const API_KEY: &str = "orders-service-api-key";

/// Each example as a command, when what it runs on is here: the Rust one always (`cargo
/// test` builds it), the Python one with AUTHD_TEST_GRPCIO (a Python with grpcio-tools),
/// the Node one with `node` and its packages (`npm ci` in examples/node). `.ci/run` sets
/// up both.
fn examples() -> Vec<(&'static str, std::process::Command)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    // target/debug/deps/api-* -> target/debug/examples/
    let exe = std::env::current_exe().unwrap();
    let rust = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/orders_service");
    assert!(
        rust.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build --example orders_service`)",
        rust.display()
    );
    found.push(("rust", std::process::Command::new(rust)));
    match std::env::var_os("AUTHD_TEST_GRPCIO") {
        Some(python) => {
            let dir = root.join("examples/python");
            std::fs::create_dir_all(dir.join("gen")).unwrap();
            let generated = std::process::Command::new(&python)
                .args(["-m", "grpc_tools.protoc", "-I"])
                .arg(root.join("proto"))
                .arg(format!("--python_out={}", dir.join("gen").display()))
                .arg(format!("--grpc_python_out={}", dir.join("gen").display()))
                .args([
                    "auth/v1/auth.proto",
                    "google/api/annotations.proto",
                    "google/api/http.proto",
                ])
                .status()
                .unwrap();
            assert!(generated.success(), "grpc_tools.protoc failed");
            let mut command = std::process::Command::new(python);
            command.arg(dir.join("orders_service.py"));
            found.push(("python", command));
        }
        None => eprintln!("skipped the Python example: set AUTHD_TEST_GRPCIO (.ci/run does)"),
    }
    let node = root.join("examples/node");
    let has_node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if has_node && node.join("node_modules/@grpc/grpc-js").exists() {
        let mut command = std::process::Command::new("node");
        command.arg(node.join("orders-service.mjs"));
        found.push(("node", command));
    } else {
        eprintln!(
            "skipped the Node example: needs node and `npm ci` in examples/node (.ci/run does)"
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_example_admits_only_callers_with_a_valid_token() {
    let digest: [u8; 32] = Sha256::digest(API_KEY).into();
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.validate_api_keys = vec![digest])
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    let (_, ended) = app.new_user().await;
    app.logout(&ended.refresh_token, false, None).await.unwrap();

    for (name, mut command) in examples() {
        let port = free_port();
        let child = command
            .env("AUTHD_ADDR", app.addr.to_string())
            .env("AUTHD_API_KEY", API_KEY)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let _service = crate::helpers::AuthdProcess(child);
        let http = crate::gateway::Http::to(port);
        let mut up = false;
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "the {name} example did not start listening");
        let get = |bearer: Option<String>| {
            let http = &http;
            async move {
                let header = bearer.map(|token| format!("Bearer {token}"));
                let headers: Vec<(&str, &str)> = header
                    .as_deref()
                    .map(|value| ("authorization", value))
                    .into_iter()
                    .collect();
                let (status, _, body) = http
                    .send(http::Method::GET, "/orders", &headers, bytes::Bytes::new())
                    .await;
                (
                    status.as_u16(),
                    String::from_utf8_lossy(&body).trim().to_owned(),
                )
            }
        };
        assert_eq!(
            get(Some(tokens.access_token.clone())).await,
            (200, format!("orders of {email} (user)")),
            "{name}"
        );
        assert_eq!(get(None).await.0, 401, "{name}");
        assert_eq!(
            get(Some("not-a-token".to_owned())).await,
            (
                401,
                "token not accepted: INACTIVE_REASON_INVALID".to_owned()
            ),
            "{name}"
        );
        assert_eq!(
            get(Some(ended.access_token.clone())).await,
            (
                401,
                "token not accepted: INACTIVE_REASON_REVOKED".to_owned()
            ),
            "{name}"
        );
    }
    app.stop().await;
}
