//! Faults injected while clients write (see `workload`): the authd process killed with
//! SIGKILL at random moments, and the database's connections killed under it. After each,
//! every acknowledged write is in the database and nothing cut off is half-applied; the
//! counts are printed (`cargo test faults -- --nocapture`).

use std::time::Duration;

use authd::proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use migration::MigratorTrait as _;
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};

use crate::{
    helpers::{
        PASSWORD, TestApp, TestDb, connect_authd, free_port, spawn_app, start_authd, testing_sqlite,
    },
    workload::{Journal, OnFailure, Options, Rpc, Workload},
};

/// Moments to kill at, spread over a round: random, from a seed printed with the results
/// (`FAULT_SEED` replays one).
struct Moments(u64);

impl Moments {
    fn new() -> Self {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.map_or(1, |d| d.subsec_nanos().into()) | 1
            });
        eprintln!("FAULT_SEED={seed}");
        Self(seed)
    }

    /// A moment between `from` and `to` (xorshift64).
    fn between(&mut self, from: Duration, to: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let span = (to - from).as_micros() as u64;
        from + Duration::from_micros(self.0 % span.max(1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_every_acknowledged_write_is_kept_and_none_half_applied() {
    /// Rounds per RPC: each kills the server at a random moment of a call of that RPC,
    /// more (up to a bound) until one did cut such a call off.
    const ROUNDS: usize = 3;
    const MAX_ROUNDS: usize = 12;
    let db = TestDb::fresh().await;
    let port = free_port();
    let mut moments = Moments::new();
    let mut journal = Journal::default();
    let mut round = 0;
    for target in Rpc::ALL {
        for attempt in 0..MAX_ROUNDS {
            if attempt >= ROUNDS && journal.cut_off(target) > 0 {
                break;
            }
            round += 1;
            let mut server = start_authd(&db, port, &[]);
            let channel = connect_authd(port).await;
            let (announce, mut calls) = tokio::sync::mpsc::unbounded_channel();
            let options = Options::new(OnFailure::Stop).announcing(announce);
            let workload = Workload::start_with(&channel, &format!("kill{round}"), 4, options);
            while calls.recv().await.is_some_and(|rpc| rpc != target) {}
            // Within the second half of such a call as measured so far (a call that
            // hashes a password writes only after the hash): before, inside or after its
            // commit, before its answer.
            let took = journal.typical(target).unwrap_or(Duration::from_millis(4));
            tokio::time::sleep(moments.between(took / 2, took)).await;
            server.kill();
            journal.absorb(workload.finish().await);
        }
    }

    let _server = start_authd(&db, port, &[]);
    let channel = connect_authd(port).await;
    let report = journal.verify(&db, &channel).await;
    eprintln!("authd killed {round} times under load:\n{report}");
    for rpc in Rpc::ALL {
        assert!(report.cut_off(rpc) > 0, "no kill landed inside a {rpc:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connections_killed_under_load_lose_nothing_acknowledged() {
    if testing_sqlite() {
        eprintln!("skipped: SQLite has no server connections to kill");
        return;
    }
    let app = spawn_app().await;
    // One connection, which the kills spare.
    let mut options = sea_orm::ConnectOptions::new(app.db.url.clone());
    options.max_connections(1);
    let killer = sea_orm::Database::connect(options).await.unwrap();
    let backend = killer.get_database_backend();
    let current = if backend == DbBackend::Postgres {
        "SELECT current_database()"
    } else {
        "SELECT DATABASE()"
    };
    let name = killer
        .query_one_raw(Statement::from_string(backend, current))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    let workload = Workload::start(&app.channel, "conn-kill", 4, OnFailure::Continue);
    let mut moments = Moments::new();
    let mut kills = 0;
    for _ in 0..25 {
        tokio::time::sleep(moments.between(Duration::from_millis(10), Duration::from_millis(120)))
            .await;
        kills += kill_connections(&killer, &name).await;
    }
    // Then a quiet spell in which the pool must recover by itself.
    let before = workload.acknowledged();
    for _ in 0..200 {
        if workload.acknowledged() > before + 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        workload.acknowledged() > before + 20,
        "writes did not resume after the connections were killed"
    );
    let journal = workload.finish().await;
    let report = journal.verify(&app.db, &app.channel).await;
    eprintln!("{kills} database connections killed under load:\n{report}");
    killer.close().await.unwrap();
    app.stop().await;
}

/// Kills every connection to database `name` but the caller's; returns how many.
async fn kill_connections(conn: &sea_orm::DatabaseConnection, name: &str) -> usize {
    let backend = conn.get_database_backend();
    let sql = if backend == DbBackend::Postgres {
        // OFFSET 0 keeps the planner from folding the filter into the call, which could
        // then terminate this very connection.
        format!(
            "SELECT pid FROM (SELECT pid, pg_terminate_backend(pid) AS terminated \
             FROM (SELECT pid FROM pg_stat_activity \
                   WHERE datname = '{name}' AND pid <> pg_backend_pid() OFFSET 0) others) \
             AS attempts WHERE terminated"
        )
    } else {
        format!(
            "SELECT id FROM information_schema.processlist \
             WHERE db = '{name}' AND id <> CONNECTION_ID()"
        )
    };
    let rows = conn
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap();
    if backend == DbBackend::Postgres {
        return rows.len();
    }
    let mut killed = 0;
    for row in rows {
        let id: i64 = row.try_get_by_index(0).unwrap();
        // The connection may have ended by itself meanwhile.
        if conn
            .execute_unprepared(&format!("KILL CONNECTION {id}"))
            .await
            .is_ok()
        {
            killed += 1;
        }
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_migrating_a_new_database_the_next_start_completes_the_schema() {
    const ROUNDS: usize = 12;
    let mut moments = Moments::new();
    // How long a first start takes here, to kill at random moments within it.
    let first_start = {
        let (db, port) = (TestDb::fresh().await, free_port());
        let started = std::time::Instant::now();
        let _server = start_authd(&db, port, &[]);
        connect_authd(port).await;
        started.elapsed()
    };
    let mut killed_before_the_schema_was_done = 0;
    for _ in 0..ROUNDS {
        let db = TestDb::fresh().await;
        let port = free_port();
        let mut first = start_authd(&db, port, &[]);
        tokio::time::sleep(moments.between(Duration::ZERO, first_start * 3 / 4)).await;
        first.kill();
        if applied_migrations(&db).await < migration::Migrator::migrations().len() {
            killed_before_the_schema_was_done += 1;
        }

        let _second = start_authd(&db, port, &[]);
        let mut client = AuthServiceClient::new(connect_authd(port).await);
        client
            .register(pb::RegisterRequest {
                email: "after-the-kill@example.com".into(),
                password: PASSWORD.into(),
                name: "Migrated".into(),
            })
            .await
            .unwrap();
    }
    eprintln!(
        "{killed_before_the_schema_was_done} of {ROUNDS} kills came before the schema was done"
    );
    assert!(
        killed_before_the_schema_was_done > 0,
        "no kill landed before the migrations were done"
    );
}

/// How many migrations the database records as applied.
async fn applied_migrations(db: &TestDb) -> usize {
    let conn = db.connect().await;
    let backend = conn.get_database_backend();
    let counted = conn
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM seaql_migrations",
        ))
        .await;
    let applied = match counted {
        Ok(row) => row.unwrap().try_get_by_index::<i64>(0).unwrap(),
        // No table yet: none applied. Any other error is the test's own.
        Err(err) if err.to_string().contains("seaql_migrations") => 0,
        Err(err) => panic!("counting the applied migrations: {err}"),
    };
    conn.close().await.unwrap();
    usize::try_from(applied).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_off_by_deadlines_at_random_moments_lose_nothing_acknowledged() {
    let app = spawn_app().await;
    // Deadlines around each call's own length: the server gives up on calls at every
    // point (the store still runs a write it began to its end).
    let options = Options::new(OnFailure::Continue).deadlines();
    let cut = Workload::start_with(&app.channel, "deadline", 4, options);
    for _ in 0..600 {
        if cut.cut_off_every_rpc() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut journal = cut.finish().await;
    // Then calls with time enough, on the connections those left behind.
    let calm = Workload::start(&app.channel, "calm", 4, OnFailure::Continue);
    tokio::time::sleep(Duration::from_secs(1)).await;
    journal.absorb(calm.finish().await);

    // Read through another connection while the server runs: a write acknowledged inside
    // a transaction that was never committed is not there.
    let report = journal.verify(&app.db, &app.channel).await;
    eprintln!("calls cut off by their deadlines:\n{report}");
    for rpc in Rpc::ALL {
        assert!(report.cut_off(rpc) > 0, "no deadline cut off a {rpc:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_blocked_by_a_lock_held_elsewhere_is_unavailable_within_the_statement_timeout() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.database.statement_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    // Another client of the database holds the user's row (SQLite: the whole write lock).
    let mut options = sea_orm::ConnectOptions::new(app.db.url.clone());
    options.max_connections(1);
    let holder = sea_orm::Database::connect(options).await.unwrap();
    let backend = holder.get_database_backend();
    let hold = if backend == DbBackend::Sqlite {
        "BEGIN IMMEDIATE".to_owned()
    } else {
        "BEGIN".to_owned()
    };
    holder.execute_unprepared(&hold).await.unwrap();
    if backend != DbBackend::Sqlite {
        holder
            .execute_unprepared(&format!(
                "SELECT id FROM users WHERE email = '{email}' FOR UPDATE"
            ))
            .await
            .unwrap();
    }

    let started = std::time::Instant::now();
    let login = app.login(&email, PASSWORD).await;
    let waited = started.elapsed();
    // The server gave up on the statement itself: none is left waiting for the lock (one
    // the client merely stopped waiting for would wait on, for MySQL's 50 s default).
    let waiting = match backend {
        DbBackend::Sqlite => None,
        DbBackend::Postgres => Some(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock'",
        ),
        _ => Some(
            "SELECT CAST(COUNT(*) AS SIGNED) AS n FROM information_schema.INNODB_TRX \
             WHERE trx_state = 'LOCK WAIT'",
        ),
    };
    let still_waiting = match waiting {
        Some(sql) => {
            let row = holder
                .query_one_raw(Statement::from_string(backend, sql))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        }
        None => 0,
    };

    holder.execute_unprepared("ROLLBACK").await.unwrap();
    assert_eq!(still_waiting, 0, "statements still waiting for the lock");
    crate::helpers::assert_code(login, tonic::Code::Unavailable);
    assert!(
        waited < Duration::from_secs(5),
        "the login waited {waited:?}"
    );
    // The lock gone, the same login goes through.
    app.login(&email, PASSWORD).await.unwrap();
    holder.close().await.unwrap();
    app.stop().await;
}
