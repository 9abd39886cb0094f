use std::{num::NonZeroU32, time::Duration};

use authd::proto::auth::v1::{self as pb, ValidateTokenRequest};
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};
use tonic_types::StatusExt as _;

use crate::helpers::{
    PASSWORD, TestApp, TestDb, assert_code, connect_authd, free_port, spawn_app, start_authd,
    with_bearer,
};

#[tokio::test]
async fn an_oversize_message_is_resource_exhausted_and_others_are_still_served() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;

    let status = assert_code(
        app.register("big@example.com", PASSWORD, &"n".repeat(20_000))
            .await,
        Code::ResourceExhausted,
    );
    assert_code(
        app.validate(&"x".repeat(17_000)).await,
        Code::ResourceExhausted,
    );

    assert_eq!(status.message(), "request message too large");
    assert!(app.validate(&tokens.access_token).await.unwrap().active);
    app.stop().await;
}

#[tokio::test]
async fn oversize_metadata_is_refused_and_others_are_still_served() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let mut request = Request::new(ValidateTokenRequest {
        token: tokens.access_token.clone(),
    });
    request
        .metadata_mut()
        .insert("x-padding", "p".repeat(32 * 1024).parse().unwrap());

    let result = app.client.clone().validate_token(request).await;

    let status = result.expect_err("a 20 KiB header list must be refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(app.validate(&tokens.access_token).await.unwrap().active);
    app.stop().await;
}

#[tokio::test]
async fn register_and_login_are_rate_limited_per_client_address() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.limits.register_per_minute = NonZeroU32::new(3).unwrap();
            config.limits.login_per_minute = NonZeroU32::new(2).unwrap();
        })
        .spawn()
        .await;
    let mut emails = Vec::new();
    for i in 0..3 {
        let email = format!("rate-{i}@example.com");
        app.register(&email, PASSWORD, "Rate").await.unwrap();
        emails.push(email);
    }

    let refused = assert_code(
        app.register("rate-3@example.com", PASSWORD, "Rate").await,
        Code::ResourceExhausted,
    );

    assert!(
        refused
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .is_some_and(|d| !d.is_zero())
    );
    // Login draws from its own bucket.
    app.login(&emails[0], PASSWORD).await.unwrap();
    app.login(&emails[1], PASSWORD).await.unwrap();
    assert_code(
        app.login(&emails[2], PASSWORD).await,
        Code::ResourceExhausted,
    );
    app.stop().await;
}

#[tokio::test]
async fn change_password_and_change_email_draw_from_the_login_budget() {
    // They check a password: a stolen access token must not buy a client more guesses.
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.limits.login_per_minute = NonZeroU32::new(2).unwrap())
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    let bearer = Some(tokens.access_token.as_str());
    let change_password = || {
        let request = pb::ChangePasswordRequest {
            current_password: "a guess".to_owned(),
            new_password: "a brand new passphrase 2026".to_owned(),
        };
        let mut client = app.client.clone();
        async move { client.change_password(with_bearer(request, bearer)).await }
    };
    let change_email = || {
        let request = pb::ChangeEmailRequest {
            new_email: "elsewhere@example.com".to_owned(),
            current_password: "a guess".to_owned(),
        };
        let mut client = app.client.clone();
        async move { client.change_email(with_bearer(request, bearer)).await }
    };
    assert_code(change_password().await, Code::Unauthenticated);
    assert_code(change_email().await, Code::Unauthenticated);
    assert_code(change_password().await, Code::ResourceExhausted);
    assert_code(change_email().await, Code::ResourceExhausted);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_global_concurrency_limit_calls_are_shed_at_once() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.limits.max_concurrent_requests = 1)
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    let results = app.logins_at_once(&email, PASSWORD, 16).await;

    assert!(results.iter().any(Result::is_ok));
    let shed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        !shed.is_empty(),
        "16 logins at once cannot all fit in a limit of 1"
    );
    assert!(
        shed.iter().all(|s| s.code() == Code::ResourceExhausted),
        "{shed:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_call_past_the_request_timeout_is_cancelled_and_others_are_still_served() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.limits.request_timeout = Duration::from_millis(100);
            // A deliberately slow hash: one Register takes far longer than the timeout.
            config.hashing.memory_kib = 262_144;
            config.hashing.iterations = 4;
        })
        .spawn()
        .await;

    assert_code(
        app.register("slow@example.com", PASSWORD, "Slow").await,
        Code::Cancelled,
    );

    assert_code(app.validate("").await, Code::InvalidArgument);
    app.stop().await;
}

/// A raw HTTP/2 connection to the server, for what a gRPC client never does on its own.
async fn raw_h2(
    app: &crate::helpers::TestApp,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    h2::client::Connection<tokio::net::TcpStream>,
) {
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    h2::client::handshake(tcp).await.unwrap()
}

fn grpc_request_to(addr: std::net::SocketAddr) -> http::Request<()> {
    http::Request::post(format!("http://{addr}/auth.v1.AuthService/ValidateToken"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn streams_beyond_the_per_connection_limit_wait_while_other_clients_are_served() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.limits.max_concurrent_streams = 2)
        .spawn()
        .await;
    let (client, connection) = raw_h2(&app).await;
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // Two streams opened and left hanging (no message sent) take up the connection's limit.
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let (_response, body) = client
            .send_request(grpc_request_to(app.addr), false)
            .unwrap();
        hanging.push(body);
    }
    // A third, complete request (an empty ValidateTokenRequest) would be answered at once.
    let (third, mut body) = client
        .send_request(grpc_request_to(app.addr), false)
        .unwrap();
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    tokio::pin!(third);

    let while_full = tokio::time::timeout(Duration::from_millis(500), &mut third).await;

    // Over the limit the stream is refused (REFUSED_STREAM: safe to retry) or, when the
    // client already knows the limit, held back; it is never served.
    match while_full {
        Err(_elapsed) => {}
        Ok(Err(err)) => assert_eq!(err.reason(), Some(h2::Reason::REFUSED_STREAM), "{err:?}"),
        Ok(Ok(response)) => panic!("a stream over the limit was served: {response:?}"),
    }
    assert_code(app.validate("").await, Code::InvalidArgument);
    // Once the hanging streams go away, the connection serves again.
    for mut stream in hanging {
        stream.send_reset(h2::Reason::CANCEL);
    }
    let mut client = client.ready().await.unwrap();
    let (response, mut body) = client
        .send_request(grpc_request_to(app.addr), false)
        .unwrap();
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answered.status(), http::StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_keepalive_pings_is_disconnected() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.limits.keepalive_interval = Duration::from_millis(200);
            config.limits.keepalive_timeout = Duration::from_millis(200);
        })
        .spawn()
        .await;
    let (_client, connection) = raw_h2(&app).await;

    // Not polling the connection means never answering the server's pings.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // The server has given up on it: the connection is already over.
    let ended = tokio::time::timeout(Duration::from_millis(500), connection).await;
    assert!(
        ended.is_ok(),
        "the silent connection must have been closed by the server"
    );
    assert_code(app.validate("").await, Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn health_and_reflection_have_the_same_caps_as_the_auth_service() {
    let app = spawn_app().await;
    let huge = "h".repeat(1 << 20);

    let check = app.health_status(&huge).await;
    let reflect = async |host: String| {
        let request = ServerReflectionRequest {
            host,
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let response = ServerReflectionClient::new(app.channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await?;
        response.into_inner().message().await
    };
    // A streaming call: the reflection service ends the stream on a message it could not
    // decode, so the refusal shows as no answer rather than as a status.
    let reflection = reflect(huge.clone()).await;
    let mut padded = Request::new(HealthCheckRequest {
        service: String::new(),
    });
    padded
        .metadata_mut()
        .insert("x-padding", "p".repeat(32 * 1024).parse().unwrap());
    let metadata = app.health().check(padded).await;

    assert_code(check, Code::ResourceExhausted);
    assert!(
        matches!(&reflection, Ok(None))
            || reflection
                .as_ref()
                .is_err_and(|s| s.code() == Code::ResourceExhausted),
        "a 1 MiB reflection request was answered: {reflection:?}"
    );
    assert!(reflect(String::new()).await.unwrap().is_some());
    assert_code(metadata, Code::ResourceExhausted);
    // The same services still answer ordinary calls.
    assert_eq!(app.health_status("").await.unwrap(), ServingStatus::Serving);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_server_waits_without_spinning_and_serves_again() {
    let db = TestDb::fresh().await;
    let port = free_port();
    let mut authd = start_authd(&db, port, &[]);
    connect_authd(port).await;
    // A few descriptors above what it holds now, then a flood of connections.
    let open = std::fs::read_dir(format!("/proc/{}/fd", authd.pid()))
        .expect("the process's descriptors")
        .count();
    let limit = format!("--nofile={}", open + 8);
    let lowered = std::process::Command::new("prlimit")
        .args([&limit, "--pid", &authd.pid().to_string()])
        .status()
        .expect("prlimit");
    assert!(lowered.success(), "prlimit {limit}");
    let mut flood = Vec::new();
    for _ in 0..64 {
        flood.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("the kernel queues a connection the server cannot take yet"),
        );
    }
    // Every accept now fails at once: retried at once, it would keep a core busy.
    let before = cpu_ticks(authd.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_ticks(authd.pid()) - before;
    assert!(
        authd.is_running(),
        "authd exited when it ran out of descriptors"
    );
    assert!(
        spent < 30,
        "{spent} of 100 clock ticks of CPU in a second with nothing to do but fail to accept"
    );

    // Descriptors come back: the server serves again, without a restart.
    drop(flood);
    let channel = connect_authd(port).await;
    let mut client = pb::auth_service_client::AuthServiceClient::new(channel);
    let registered = client
        .register(pb::RegisterRequest {
            email: "after-the-flood@example.com".to_owned(),
            password: PASSWORD.to_owned(),
            name: "Flood".to_owned(),
        })
        .await;
    assert!(registered.is_ok(), "{registered:?}");
    assert!(authd.is_running());
}

/// CPU time a process has used, user and system, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime: fields 14 and 15 of proc(5), the 12th and 13th after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
