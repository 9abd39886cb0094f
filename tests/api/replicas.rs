//! Several authd processes on one database, as when it scales out: what one replica
//! does, the others honour.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use authd::proto::auth::v1::{
    InactiveReason, LogoutRequest, RefreshRequest, RegisterRequest, ValidateTokenRequest,
    auth_service_client::AuthServiceClient,
};
use tonic::transport::Channel;

use sea_orm::{ConnectionTrait as _, DbBackend, Statement};

use crate::helpers::{
    AuthdProcess, PASSWORD, TestDb, authd_bin, connect_authd, free_port, spawn_app, start_authd,
};

/// The revocation sync interval both replicas run with: the default, stated.
const SYNC: Duration = Duration::from_secs(1);

/// Replicas A and B as processes on `db`, with `env`, and a client of each. One after the
/// other: the first one migrates the database.
async fn two_replicas(
    db: &TestDb,
    env: &[(&str, &str)],
) -> (
    AuthdProcess,
    AuthServiceClient<Channel>,
    AuthdProcess,
    AuthServiceClient<Channel>,
) {
    let port_a = free_port();
    let a = start_authd(db, port_a, env);
    let client_a = AuthServiceClient::new(connect_authd(port_a).await);
    let port_b = free_port();
    let b = start_authd(db, port_b, env);
    let client_b = AuthServiceClient::new(connect_authd(port_b).await);
    (a, client_a, b, client_b)
}

async fn validate(client: &mut AuthServiceClient<Channel>, token: &str) -> (bool, InactiveReason) {
    let response = client
        .validate_token(ValidateTokenRequest {
            token: token.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    (response.active, response.reason())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_replica_is_revoked_on_another_within_the_sync_interval() {
    let db = TestDb::fresh().await;
    let env = [("AUTHD_REVOCATION_SYNC", "1s")];
    let (_a, mut a, _b, mut b) = two_replicas(&db, &env).await;

    let tokens = a
        .register(RegisterRequest {
            email: "replicas@example.com".into(),
            password: PASSWORD.into(),
            name: "Replicas".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    // B verifies A's token from the key in the shared database, and remembers it.
    assert_eq!(
        validate(&mut b, &tokens.access_token).await,
        (true, InactiveReason::Unspecified)
    );

    a.logout(LogoutRequest {
        refresh_token: tokens.refresh_token.clone(),
        all_sessions: false,
    })
    .await
    .unwrap();
    let logged_out = Instant::now();
    // A knows at once; B learns it from its next poll of the database.
    assert_eq!(
        validate(&mut a, &tokens.access_token).await,
        (false, InactiveReason::Revoked)
    );
    let mut seen = validate(&mut b, &tokens.access_token).await;
    while seen.0 && logged_out.elapsed() < SYNC * 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        seen = validate(&mut b, &tokens.access_token).await;
    }
    let took = logged_out.elapsed();
    eprintln!("replica B answered REVOKED {took:?} after the logout on A");
    assert_eq!(seen, (false, InactiveReason::Revoked));
    // One poll interval, plus the poll itself and this test's own polling (10 ms steps
    // on a loaded machine).
    assert!(
        took <= SYNC + Duration::from_millis(500),
        "B took {took:?} to see the revocation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_an_empty_database_all_serve_one_schema_and_one_key_set() {
    let db = TestDb::fresh().await;
    // All at once, as an orchestrator scales out: they race to migrate the empty database
    // and to create the first keys.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _replicas: Vec<_> = ports
        .iter()
        .map(|&port| start_authd(&db, port, &[]))
        .collect();
    let mut clients = Vec::new();
    for &port in &ports {
        clients.push(AuthServiceClient::new(connect_authd(port).await));
    }

    let mut tokens = clients[0]
        .register(RegisterRequest {
            email: "together@example.com".into(),
            password: PASSWORD.into(),
            name: "Together".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    // A retry of a rotation, within the grace window, on every other replica gets the very
    // successor the first one handed out: they all derive successors with one refresh key.
    let first = clients[0]
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    for retry in [1, 2] {
        let again = clients[retry]
            .refresh(RefreshRequest {
                refresh_token: tokens.refresh_token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap();
        assert_eq!(again.refresh_token, first.refresh_token, "replica {retry}");
    }
    tokens = first;
    // Every replica verifies every other's access tokens and rotates every other's
    // refresh tokens: they share the signing keys.
    for next in [1, 2, 0] {
        let client = &mut clients[next];
        assert_eq!(
            validate(client, &tokens.access_token).await,
            (true, InactiveReason::Unspecified)
        );
        tokens = client
            .refresh(RefreshRequest {
                refresh_token: tokens.refresh_token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_work_runs_under_the_migration_lock_one_replica_at_a_time() {
    // What a first start does after migrating (making the signing and refresh keys) runs
    // under the migration lock, so replicas started together cannot each make their own.
    let db = TestDb::fresh().await;
    let config = crate::helpers::test_config(&db)
        .database
        .settings()
        .unwrap();
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut replicas = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (config, spans) = (config.clone(), std::sync::Arc::clone(&spans));
        replicas.spawn(async move {
            let pool = authd::store::connect(&config).await.unwrap();
            authd::store::migrate_then(&pool, &config, async || {
                let started = Instant::now();
                tokio::time::sleep(Duration::from_millis(200)).await;
                spans.lock().unwrap().push((started, Instant::now()));
                Ok(())
            })
            .await
            .unwrap();
            pool.close().await.unwrap();
        });
    }
    replicas.join_all().await;

    let mut spans = spans.lock().unwrap().clone();
    spans.sort();
    assert_eq!(spans.len(), 3);
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two replicas' first-start work overlapped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_committed_late_reaches_every_replica() {
    let db = TestDb::fresh().await;
    // Short syncs, so the reconciling poll (every tenth) comes every two seconds.
    let env = [("AUTHD_REVOCATION_SYNC", "200ms")];
    let (_a, mut a, _b, mut b) = two_replicas(&db, &env).await;
    let email = "late@example.com";
    let tokens = a
        .register(RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            name: "Late".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert!(validate(&mut b, &tokens.access_token).await.0);

    // Another client keeps the deactivation's audit event from being stored, so the
    // revocation, already stamped, commits only after the replicas' polls stopped looking
    // back that far. (SQLite cannot hold a lock past its busy timeout, and holds it from
    // BEGIN, before the stamp: there the wait is shorter.)
    let mut options = sea_orm::ConnectOptions::new(db.url.clone());
    options.max_connections(1);
    let holder = sea_orm::Database::connect(options).await.unwrap();
    let (hold, release, held_for): (&[&str], _, _) = match holder.get_database_backend() {
        DbBackend::Sqlite => (&["BEGIN IMMEDIATE"], "ROLLBACK", Duration::from_secs(3)),
        DbBackend::Postgres => (
            &["BEGIN", "LOCK TABLE audit_events IN EXCLUSIVE MODE"],
            "ROLLBACK",
            Duration::from_secs(13),
        ),
        _ => (
            &["LOCK TABLES audit_events WRITE"],
            "UNLOCK TABLES",
            Duration::from_secs(13),
        ),
    };
    for statement in hold {
        holder.execute_unprepared(statement).await.unwrap();
    }
    let deactivation = std::thread::spawn({
        let url = db.url.clone();
        move || {
            authd_bin()
                .args(["user", "set-active", email, "false"])
                .env("AUTHD_DATABASE_URL", url)
                .env("AUTHD_DB_STATEMENT_TIMEOUT", "60s")
                .output()
                .unwrap()
        }
    });
    tokio::time::sleep(held_for).await;
    holder.execute_unprepared(release).await.unwrap();
    let done = tokio::task::spawn_blocking(move || deactivation.join().unwrap())
        .await
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let committed = Instant::now();

    // Replica B caches the token as verified: only its revocation view can end it.
    loop {
        if validate(&mut b, &tokens.access_token).await == (false, InactiveReason::Revoked) {
            break;
        }
        assert!(
            committed.elapsed() < Duration::from_secs(8),
            "replica B never saw the late revocation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "REVOKED on B {:?} after the late commit",
        committed.elapsed()
    );
    holder.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_that_waited_for_its_session_is_stamped_when_it_got_it() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    // Another client holds the session (SQLite: the whole write lock), as a refresh in
    // flight would, while the logout starts.
    let mut options = sea_orm::ConnectOptions::new(app.db.url.clone());
    options.max_connections(1);
    let holder = sea_orm::Database::connect(options).await.unwrap();
    let sqlite = app.db.is_sqlite();
    let hold = if sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
    holder.execute_unprepared(hold).await.unwrap();
    if !sqlite {
        holder
            .execute_unprepared("SELECT id FROM sessions FOR UPDATE")
            .await
            .unwrap();
    }
    let logout = tokio::spawn({
        let app_client = app.client.clone();
        let refresh_token = tokens.refresh_token.clone();
        async move {
            let request = LogoutRequest {
                refresh_token,
                all_sessions: false,
            };
            app_client.clone().logout(request).await
        }
    });
    let held = Duration::from_secs(3);
    tokio::time::sleep(held).await;
    let released = Utc::now();
    holder.execute_unprepared("ROLLBACK").await.unwrap();
    logout.await.unwrap().unwrap();

    // A token issued by whoever held the session is no younger than the release; the
    // revocation, and so every replica's memory of it, must not be older. (MySQL keeps
    // whole seconds.)
    let row = holder
        .query_one_raw(Statement::from_string(
            holder.get_database_backend(),
            "SELECT revoked_at FROM sessions",
        ))
        .await
        .unwrap()
        .unwrap();
    let revoked_at: DateTime<Utc> = row.try_get("", "revoked_at").unwrap();
    assert!(
        revoked_at >= released - chrono::Duration::seconds(1),
        "revoked_at {revoked_at} is older than the lock it waited for ({released})"
    );
    holder.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_opening_a_new_database_at_once_all_open_and_migrate_it() {
    // On a new SQLite file the first connection switches it to WAL, which SQLite refuses
    // at once to the others opening it meanwhile ("database is locked").
    for round in 0..30 {
        let db = TestDb::fresh().await;
        let config = crate::helpers::test_config(&db)
            .database
            .settings()
            .unwrap();
        let mut pools = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let config = config.clone();
            pools.spawn(async move {
                let pool = authd::store::connect(&config).await?;
                authd::store::migrate(&pool, &config).await?;
                pool.close().await?;
                anyhow::Ok(())
            });
        }
        for opened in pools.join_all().await {
            opened.unwrap_or_else(|err| panic!("round {round}: {err:#}"));
        }
    }
}

/// Logs in on `a`, logs out there, and asks `b` until it says REVOKED: how long after the
/// logout's answer that took (`None`: not within `limit`).
async fn revoked_on_other_replica_after(
    a: &mut AuthServiceClient<Channel>,
    b: &mut AuthServiceClient<Channel>,
    email: &str,
    limit: Duration,
) -> Option<Duration> {
    let tokens = a
        .login(authd::proto::auth::v1::LoginRequest {
            email: email.to_owned(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert!(validate(b, &tokens.access_token).await.0);
    a.logout(LogoutRequest {
        refresh_token: tokens.refresh_token,
        all_sessions: false,
    })
    .await
    .unwrap();
    let logged_out = Instant::now();
    while logged_out.elapsed() < limit {
        if validate(b, &tokens.access_token).await == (false, InactiveReason::Revoked) {
            return Some(logged_out.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// The revocation listeners connected to `db` now.
async fn listeners(db: &TestDb, terminate: bool) -> usize {
    let conn = db.connect().await;
    let sql = if terminate {
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND datname = current_database()"
    } else {
        "SELECT pid FROM pg_stat_activity \
         WHERE application_name = $1 AND datname = current_database()"
    };
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [authd::store::LISTENER_NAME.into()],
        ))
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_revocations_are_pushed_and_none_is_lost_when_the_listener_drops() {
    let db = TestDb::fresh().await;
    if authd::store::Backend::of_url(&db.url) != Some(authd::store::Backend::Postgres) {
        eprintln!("skipped: revocations are pushed on PostgreSQL only");
        return;
    }
    // Polls 3 s apart: five revocations in a row each seen within 500 ms were pushed (by
    // chance of the poll, all five would be about (1/6)^5).
    let env = [("AUTHD_REVOCATION_SYNC", "3s")];
    let (_a, mut a, _b, mut b) = two_replicas(&db, &env).await;
    let email = "pushed@example.com";
    a.register(RegisterRequest {
        email: email.into(),
        password: PASSWORD.into(),
        name: "Pushed".into(),
    })
    .await
    .unwrap();
    let wait_for_listeners = async |wanted: usize| {
        let started = Instant::now();
        while listeners(&db, false).await != wanted {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "listeners never {wanted}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let pushed = Duration::from_millis(500);
    let five_pushed = async |a: &mut _, b: &mut _| {
        for trial in 0..5 {
            let took = revoked_on_other_replica_after(a, b, email, pushed).await;
            assert!(
                took.is_some(),
                "trial {trial}: not pushed (not seen within {pushed:?})"
            );
        }
    };
    wait_for_listeners(2).await;
    five_pushed(&mut a, &mut b).await;

    // The listening connections are killed; a revocation made now is not lost: the poll
    // brings it (the one made on reconnecting, or the next periodic one).
    assert_eq!(listeners(&db, true).await, 2);
    let took = revoked_on_other_replica_after(&mut a, &mut b, email, Duration::from_secs(10)).await;
    assert!(
        took.is_some(),
        "a revocation made while the listener was down was lost"
    );
    eprintln!("revoked on B {took:?} after the logout, listener down");

    // Listening again, revocations are pushed again.
    wait_for_listeners(2).await;
    five_pushed(&mut a, &mut b).await;
}
