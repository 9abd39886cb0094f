//! Tables that grow with traffic are purged: what can no longer matter goes, the rest stays.

use std::{sync::Arc, time::Duration};

use authd::{
    auth::{Purger, Retention},
    store::{self, SqlStore},
};
use chrono::Utc;
use sea_orm::{ConnectionTrait as _, Statement};
use tonic::Code;

use crate::helpers::{TestApp, assert_code, spawn_app, test_config};

async fn rows(app: &TestApp) -> [i64; 4] {
    let conn = app.db.connect().await;
    let mut counts = [0; 4];
    for (count, table) in counts.iter_mut().zip([
        "sessions",
        "spent_refresh_tokens",
        "login_throttle",
        "audit_events",
    ]) {
        let row = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                format!("SELECT COUNT(*) FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        *count = row.try_get_by_index(0).unwrap();
    }
    conn.close().await.unwrap();
    counts
}

async fn user_changes(app: &TestApp) -> i64 {
    let conn = app.db.connect().await;
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT COUNT(*) FROM user_changes",
        ))
        .await
        .unwrap()
        .unwrap();
    conn.close().await.unwrap();
    row.try_get_by_index(0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_removes_what_can_no_longer_matter_and_keeps_the_rest() {
    let app = spawn_app().await;
    // A live session, rotated once.
    let (_, live) = app.new_user().await;
    let live = app.rotate(&live.refresh_token).await;
    // An ended one, rotated once, then logged out.
    let (_, ended) = app.new_user().await;
    let ended = app.rotate(&ended.refresh_token).await;
    app.logout(&ended.refresh_token, false, None).await.unwrap();
    // A failure counter, for an email no one has.
    assert_code(
        app.login("nobody@example.com", "not the password at all")
            .await,
        Code::Unauthenticated,
    );
    let before = rows(&app).await;
    assert_eq!(before[..3], [2, 2, 1]);
    // A role change, recorded for every replica's view of tokens issued before it.
    let (promoted, _) = app.new_user().await;
    let set_role = crate::helpers::authd_bin()
        .args(["user", "set-role", &promoted, "admin"])
        .env("AUTHD_DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(set_role.status.success());
    assert_eq!(user_changes(&app).await, 1);
    let audit_before = rows(&app).await[3];

    // Purges as of later moments (the time is the purge's argument), with the defaults:
    // sessions kept for the revocation retention after they end, idle counters for a day,
    // audit events for 90 days.
    let config = test_config(&app.db);
    let database = config.database.settings().unwrap();
    let pool = store::connect(&database).await.unwrap();
    let purger = Purger::new(
        Arc::new(SqlStore::new(pool.clone(), &database)),
        Retention {
            session_after_end: Duration::from_secs(15 * 60 + 5 + 10 + 10 + 1),
            idle_login_throttle: Duration::from_secs(86_400),
            audit_events: config.audit_retention,
        },
    );
    let now = Utc::now();

    // An hour on: the ended session and its spent token are gone; the rest stays, and
    // the live session still works.
    let purged = purger
        .run_once(now + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!((purged.sessions, purged.user_changes), (1, 1));
    assert_eq!(user_changes(&app).await, 0);
    let after = rows(&app).await;
    assert_eq!(after[..3], [2, 1, 1]);
    assert_eq!(after[3], audit_before);
    app.rotate(&live.refresh_token).await;

    // Two days on: the idle counter; the live session, refreshed just now, has days left.
    let purged = purger
        .run_once(now + chrono::Duration::days(2))
        .await
        .unwrap();
    assert_eq!(purged.login_throttle, 1);
    assert_eq!(rows(&app).await[..3], [2, 2, 0]);

    // 91 days on: the session has long expired, and every audit event is past retention.
    let purged = purger
        .run_once(now + chrono::Duration::days(91))
        .await
        .unwrap();
    assert_eq!((purged.sessions, purged.spent_tokens), (2, 2));
    assert!(purged.audit_events > 0);
    assert_eq!(rows(&app).await, [0, 0, 0, 0]);
    pool.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_purges_on_its_own_schedule() {
    let app = crate::helpers::TestApp::builder(crate::helpers::TestDb::fresh().await)
        .configure(|config| {
            config.purge_interval = Duration::from_secs(1);
            config.tokens.access_ttl = Duration::from_secs(1);
            config.tokens.clock_leeway = Duration::ZERO;
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    app.logout(&tokens.refresh_token, false, None)
        .await
        .unwrap();
    assert_eq!(rows(&app).await[0], 1);
    // Ended, and kept for the revocation retention (1 s + the 10 s clock-skew allowance).
    for _ in 0..300 {
        if rows(&app).await[0] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows(&app).await[0], 0, "the ended session was never purged");
    app.stop().await;
}

#[tokio::test]
async fn one_time_codes_go_an_hour_after_they_expire() {
    let sink = crate::mail_sink::MailSink::start().await;
    let app = crate::recovery::mailing_app(crate::helpers::TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    crate::recovery::request_reset(&app, &email).await.unwrap();
    sink.wait_for(1).await;
    let codes = async || {
        let conn = app.db.connect().await;
        let sql = "SELECT COUNT(*) FROM account_codes";
        let row = conn
            .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
        conn.close().await.unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    };
    assert_eq!(codes().await, 1);

    let config = test_config(&app.db);
    let database = config.database.settings().unwrap();
    let pool = store::connect(&database).await.unwrap();
    let purger = Purger::new(
        Arc::new(SqlStore::new(pool.clone(), &database)),
        Retention {
            session_after_end: Duration::from_secs(3600),
            idle_login_throttle: Duration::from_secs(86_400),
            audit_events: config.audit_retention,
        },
    );
    let now = Utc::now();
    // Expired after 30 minutes, but still counted by the hourly limit for an hour more.
    let purged = purger
        .run_once(now + chrono::Duration::minutes(80))
        .await
        .unwrap();
    assert_eq!((purged.account_codes, codes().await), (0, 1));
    let purged = purger
        .run_once(now + chrono::Duration::minutes(100))
        .await
        .unwrap();
    assert_eq!((purged.account_codes, codes().await), (1, 0));
    pool.close().await.unwrap();
    app.stop().await;
}
