use std::time::Duration;

use authd::proto::auth::v1::{RefreshRequest, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

use crate::helpers::{PASSWORD, TestDb, connect_authd, free_port, start_authd};

/// No retry grace: any second use of a rotated token must fail.
const NO_GRACE: &[(&str, &str)] = &[("AUTHD_REFRESH_REUSE_GRACE", "0s")];

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
    let port = free_port();
    let mut server = start_authd(&db, port, NO_GRACE);
    let mut client = AuthServiceClient::new(connect_authd(port).await);
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
        server.kill();
        let new = in_flight.await.unwrap();

        server = start_authd(&db, port, NO_GRACE);
        client = AuthServiceClient::new(connect_authd(port).await);
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
    server.kill();
    eprintln!("refreshes answered before the kill: {answered}, cut off: {cut_off}");
}
