use std::{
    net::TcpListener,
    process::{Child, Stdio},
    time::Duration,
};

use authd::proto::auth::v1::{RefreshRequest, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{PASSWORD, TestDb, authd_bin};

/// `authd serve` as a real process on its own port.
fn start_authd(db: &TestDb, port: u16) -> Child {
    authd_bin()
        .arg("serve")
        .env("AUTHD_DATABASE_URL", &db.url)
        .env("AUTHD_LISTEN", format!("127.0.0.1:{port}"))
        // No retry grace: any second use of a rotated token must fail.
        .env("AUTHD_REFRESH_REUSE_GRACE", "0s")
        .env("AUTHD_LOGIN_RATE_PER_MINUTE", "100000")
        .env("AUTHD_REGISTER_RATE_PER_MINUTE", "100000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn connect(port: u16) -> Channel {
    for _ in 0..200 {
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            let serving = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving);
            if serving {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("authd did not come up");
}

async fn refresh(client: &mut AuthServiceClient<Channel>, token: &str) -> Option<String> {
    let response = client
        .refresh(RefreshRequest {
            refresh_token: token.to_owned(),
        })
        .await
        .ok()?;
    Some(response.into_inner().tokens?.refresh_token)
}

async fn login(client: &mut AuthServiceClient<Channel>) -> String {
    let request = authd::proto::auth::v1::LoginRequest {
        email: "crash@example.com".into(),
        password: PASSWORD.into(),
    };
    let response = client.login(request).await.unwrap().into_inner();
    response.tokens.unwrap().refresh_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_refresh_the_old_and_new_tokens_are_never_both_valid() {
    let db = TestDb::fresh().await;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = start_authd(&db, port);
    let mut client = AuthServiceClient::new(connect(port).await);
    let registered = client
        .register(authd::proto::auth::v1::RegisterRequest {
            email: "crash@example.com".into(),
            password: PASSWORD.into(),
            name: "Crash".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut current = registered.tokens.unwrap().refresh_token;
    let (mut answered, mut cut_off) = (0, 0);

    for round in 0u64..12 {
        // Kill the process somewhere inside the Refresh: before, during or after its
        // transaction, at a different moment each round.
        let in_flight = {
            let mut client = client.clone();
            let token = current.clone();
            tokio::spawn(async move { refresh(&mut client, &token).await })
        };
        tokio::time::sleep(Duration::from_micros(round * 700)).await;
        server.kill().unwrap();
        server.wait().unwrap();
        let new = in_flight.await.unwrap();

        server = start_authd(&db, port);
        client = AuthServiceClient::new(connect(port).await);
        match new {
            Some(new) => {
                answered += 1;
                // An answered rotation was committed: the new token works, and the old one
                // is spent (presenting it is reuse, which also ends the session).
                let new_works = refresh(&mut client, &new).await;
                let old_works = refresh(&mut client, &current).await;
                assert!(
                    new_works.is_some(),
                    "round {round}: the answered token does not work"
                );
                assert!(old_works.is_none(), "round {round}: old and new both valid");
                current = login(&mut client).await;
            }
            None => {
                cut_off += 1;
                // Either the rotation never committed (the old token still works) or its
                // answer was lost (the client must log in again); never a fork.
                current = match refresh(&mut client, &current).await {
                    Some(next) => next,
                    None => login(&mut client).await,
                };
            }
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    eprintln!("refreshes answered before the kill: {answered}, cut off: {cut_off}");
}
