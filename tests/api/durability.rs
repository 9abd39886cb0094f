//! A call answered OK is durable: whatever the disk or the database did to an earlier
//! write, every write acknowledged after it reaches the database, and a full disk gets a
//! clear status instead of answers that are lost.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use authd::{
    config::Config,
    store::{self, AuditRecord, AuditStore as _, SqlStore},
};
use chrono::Utc;
use uuid::Uuid;

use sea_orm::{
    ConnectionTrait as _, DatabaseConnection, DbBackend, Statement, TransactionTrait as _,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{
    DbProxy, PASSWORD, TestApp, TestDb, assert_code, new_database_name, server_admin, spawn_app,
    test_config, testing_sqlite,
};

/// The emails the database holds, read through a connection of the test's own: only
/// committed rows are visible there.
async fn stored_emails(db: &TestDb) -> BTreeSet<String> {
    let conn = db.connect().await;
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT email FROM users",
        ))
        .await
        .unwrap();
    let emails = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect();
    conn.close().await.unwrap();
    emails
}

/// Triggers that make a Register fail on purpose, chosen by the email's prefix:
/// `fault-statement-` fails the user INSERT; `fault-commit-` lets every statement pass and
/// fails the COMMIT; on SQLite `fault-rollback-` also rolls the whole transaction back from
/// inside (RAISE(ROLLBACK)), as SQLite itself does on some I/O errors.
async fn install_fault_traps(conn: &DatabaseConnection) {
    let statements: &[&str] = match conn.get_database_backend() {
        DbBackend::Sqlite => &[
            "CREATE TRIGGER fault_rollback BEFORE INSERT ON users \
             WHEN NEW.email LIKE 'fault-rollback-%' \
             BEGIN SELECT RAISE(ROLLBACK, 'injected fault'); END",
            "CREATE TRIGGER fault_statement BEFORE INSERT ON users \
             WHEN NEW.email LIKE 'fault-statement-%' \
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
            // A deferred foreign key is checked only at COMMIT.
            "CREATE TABLE fault_parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE fault_child (parent INTEGER \
             REFERENCES fault_parent (id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TRIGGER fault_commit AFTER INSERT ON users \
             WHEN NEW.email LIKE 'fault-commit-%' \
             BEGIN INSERT INTO fault_child VALUES (1); END",
        ],
        DbBackend::Postgres => &[
            "CREATE FUNCTION fault_raise() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
            "CREATE TRIGGER fault_statement BEFORE INSERT ON users FOR EACH ROW \
             WHEN (NEW.email LIKE 'fault-statement-%') EXECUTE FUNCTION fault_raise()",
            // A deferred constraint trigger runs only at COMMIT.
            "CREATE CONSTRAINT TRIGGER fault_commit AFTER INSERT ON users \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
             WHEN (NEW.email LIKE 'fault-commit-%') EXECUTE FUNCTION fault_raise()",
        ],
        // MySQL has no deferred constraints: a COMMIT there fails only with its connection
        // (see the killed-connection test).
        _ => &[
            "CREATE TRIGGER fault_statement BEFORE INSERT ON users FOR EACH ROW \
             BEGIN IF NEW.email LIKE 'fault-statement-%' THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected fault'; END IF; END",
        ],
    };
    for statement in statements {
        conn.execute_unprepared(statement).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_after_failed_transactions_all_reach_the_database() {
    let app = spawn_app().await;
    let traps = app.db.connect().await;
    install_fault_traps(&traps).await;
    let faults: &[&str] = match traps.get_database_backend() {
        // Rolled back by the database itself, then a failed statement: the sequence that
        // left a transaction open for good behind a connection that went back to the pool.
        DbBackend::Sqlite => &["rollback", "statement", "commit", "rollback", "commit"],
        DbBackend::Postgres => &["statement", "commit", "statement", "commit"],
        _ => &["statement", "statement"],
    };
    traps.close().await.unwrap();

    let mut acknowledged = BTreeSet::new();
    for (round, fault) in faults.iter().enumerate() {
        let failing = format!("fault-{fault}-{round}@example.com");
        assert_code(
            app.register(&failing, PASSWORD, "Faulty").await,
            Code::Internal,
        );
        for n in 0..3 {
            let email = format!("after-{round}-{n}@example.com");
            app.register(&email, PASSWORD, "Durable").await.unwrap();
            acknowledged.insert(email);
        }
    }

    let stored = stored_emails(&app.db).await;
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert!(
        !stored.iter().any(|email| email.starts_with("fault-")),
        "a failed Register left its user behind: {stored:?}"
    );
    app.stop().await;
}

/// A tmpfs of a set size that can be shrunk to what is in use and grown again.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounted for `owner` (a database server's system user), or `None` where mounting is
    /// not allowed (not root).
    fn mount(owner: Option<&str>) -> Option<Self> {
        // Kept, not deleted with its contents, when the test ends: a database server may
        // still hold those files, and must never see them vanish.
        let dir = tempfile::Builder::new()
            .prefix("authd-small-disk-")
            .tempdir()
            .ok()?
            .keep();
        let mut options = format!("size={FULL_SIZE_KIB}k,mode=0700");
        if let Some(owner) = owner {
            let id = |flag: &str| {
                let out = Command::new("id").args([flag, owner]).output().ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            };
            options.push_str(&format!(",uid={},gid={}", id("-u")?, id("-g")?));
        }
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|out| out.status.success());
        if !mounted {
            let _ = std::fs::remove_dir(&dir);
        }
        mounted.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether the remount went through (never panics: it runs when a test unwinds too).
    fn resize(&self, kib: u64) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={kib}k")])
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn used_kib(&self) -> u64 {
        let out = Command::new("df")
            .args(["-k", "--output=used"])
            .arg(self.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }

    /// Unmounts and removes the (then empty) mount point; only once no server uses it.
    fn unmount(&self) {
        let unmounted = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if unmounted {
            let _ = std::fs::remove_dir(self.path());
        }
    }
}

const FULL_SIZE_KIB: u64 = 256 * 1024;

/// A fresh database whose files live on a tmpfs of their own: a SQLite file; a PostgreSQL
/// database in a tablespace there; a MariaDB database whose directory links there. When
/// dropped, even by a failing test, the disk is grown back, the server's database dropped
/// and only then the tmpfs unmounted.
struct SmallDisk {
    disk: Tmpfs,
    db: TestDb,
    /// The database and tablespace on a server; empty for SQLite.
    name: String,
}

impl SmallDisk {
    async fn create() -> Result<Self, &'static str> {
        const NEEDS_ROOT: &str = "mounting a tmpfs needs root";
        if testing_sqlite() {
            let disk = Tmpfs::mount(None).ok_or(NEEDS_ROOT)?;
            let db = TestDb::sqlite_at(&disk.path().join("authd.db"));
            return Ok(Self {
                disk,
                db,
                name: String::new(),
            });
        }
        let name = new_database_name();
        let admin = server_admin().await;
        let backend = admin.get_database_backend();
        let owner = if backend == DbBackend::Postgres {
            "postgres"
        } else {
            "mysql"
        };
        let disk = Tmpfs::mount(Some(owner)).ok_or(NEEDS_ROOT)?;
        let db = TestDb::on_server(&name);
        let mut small = Self {
            disk,
            db,
            name: String::new(),
        };
        if backend == DbBackend::Postgres {
            let location = small.disk.path().display();
            admin
                .execute_unprepared(&format!("CREATE TABLESPACE {name} LOCATION '{location}'"))
                .await
                .map_err(|_| "the PostgreSQL server cannot reach this machine's files")?;
            small.name.clone_from(&name);
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name} TABLESPACE {name}"))
                .await
                .unwrap();
        } else {
            // MariaDB keeps a database in a directory of its data directory, and follows a
            // symbolic link there.
            let datadir: String = admin
                .query_one_raw(Statement::from_string(backend, "SELECT @@datadir"))
                .await
                .unwrap()
                .unwrap()
                .try_get_by_index(0)
                .unwrap();
            let linked = Path::new(&datadir).join(&name);
            if !Path::new(&datadir).is_dir() {
                return Err("the MariaDB data directory is not on this machine");
            }
            let target = small.disk.path().join("db");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            small.name.clone_from(&name);
            let copied = Command::new("cp")
                .arg("-a")
                .arg(&linked)
                .arg(&target)
                .status()
                .unwrap();
            assert!(copied.success());
            std::fs::remove_dir_all(&linked).unwrap();
            std::os::unix::fs::symlink(&target, &linked).unwrap();
        }
        admin.close().await.unwrap();
        Ok(small)
    }

    /// Leaves `kib` free.
    fn shrink_to_free(&self, kib: u64) {
        assert!(
            self.disk.resize(self.disk.used_kib() + kib),
            "remount failed"
        );
    }

    fn grow(&self) -> bool {
        self.disk.resize(FULL_SIZE_KIB)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Room first, so the server can finish whatever it writes there.
        let _ = self.grow();
        let name = std::mem::take(&mut self.name);
        let dropped = name.is_empty()
            || std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let admin = server_admin().await;
                    let drops = if admin.get_database_backend() == DbBackend::Postgres {
                        vec![
                            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                            format!("DROP TABLESPACE IF EXISTS {name}"),
                        ]
                    } else {
                        vec![format!("DROP DATABASE IF EXISTS {name}")]
                    };
                    for statement in drops {
                        if let Err(err) = admin.execute_unprepared(&statement).await {
                            eprintln!("{statement}: {err}");
                            return false;
                        }
                    }
                    true
                })
            })
            .join()
            .unwrap_or(false);
        if dropped {
            self.disk.unmount();
        } else {
            eprintln!(
                "left mounted (its database still exists): {}",
                self.disk.path().display()
            );
        }
    }
}

const PROBE_INTERVAL: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_every_ok_survives_a_restart() {
    let small = match SmallDisk::create().await {
        Ok(small) => small,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let config = |config: &mut Config| config.health_probe_interval = PROBE_INTERVAL;
    let app = TestApp::builder(small.db.clone())
        .configure(config)
        .spawn()
        .await;
    let (early_email, early_tokens) = app.new_user().await;
    let mut acknowledged = vec![early_email.clone()];
    small.shrink_to_free(64);

    // Rotate a refresh token until the disk is full (each rotation stores the spent token
    // and an audit event), then keep on for a while.
    let mut current = early_tokens.refresh_token.clone();
    let mut refused = 0;
    for _ in 0..5_000 {
        match app.refresh(&current).await {
            Ok(response) => current = response.tokens.unwrap().refresh_token,
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::ResourceExhausted,
                    "a full disk must be RESOURCE_EXHAUSTED: {status:?}"
                );
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
        }
    }
    assert_eq!(refused, 20, "the disk never filled up");
    // Calls that write are refused alike (or, where a little space was freed meanwhile,
    // answered and then kept); calls that only read still answer.
    for n in 0..3 {
        let email = format!("while-full-{n}@example.com");
        match app.register(&email, PASSWORD, "Full").await {
            Ok(_) => acknowledged.push(email),
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert!(
        app.validate(&early_tokens.access_token)
            .await
            .unwrap()
            .active
    );
    app.wait_for_health(ServingStatus::NotServing).await;
    // With no calls at all, the health check's own writes keep finding the disk full.
    tokio::time::sleep(PROBE_INTERVAL * 4).await;
    assert_eq!(
        app.health_status("").await.unwrap(),
        ServingStatus::NotServing,
        "health came back while the disk is still full"
    );

    // Space comes back: writes work again without a restart.
    assert!(small.grow(), "remount failed");
    app.wait_for_health(ServingStatus::Serving).await;
    let late = "after-the-disk-grew@example.com";
    app.register(late, PASSWORD, "Late").await.unwrap();
    acknowledged.push(late.to_owned());
    let current = app.rotate(&current).await.refresh_token;
    app.stop().await;

    // Every call answered OK survived a restart: each account, and the whole chain of
    // rotations (each one only works if the one before it was kept).
    let app = TestApp::builder(small.db.clone())
        .configure(config)
        .spawn()
        .await;
    for email in &acknowledged {
        app.login(email, PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("{email} was answered OK but is gone: {status:?}"));
    }
    app.rotate(&current).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_cut_off_at_every_point_leave_the_next_write_committed() {
    if testing_sqlite() {
        eprintln!("skipped: SQLite's driver rolls back a BEGIN whose caller went away itself");
        return;
    }
    let db = TestDb::fresh().await;
    let direct = test_config(&db).database.settings().unwrap();
    let migrated = store::connect(&direct).await.unwrap();
    store::migrate(&migrated, &direct).await.unwrap();
    // A slow network to the database, and a pool of one connection.
    let proxy = DbProxy::start_with_delay(db.server_addr().unwrap(), LATENCY).await;
    let mut config = test_config(&db.via(proxy.addr))
        .database
        .settings()
        .unwrap();
    config.max_connections = Some(1);
    let pool = store::connect(&config).await.unwrap();
    let store = SqlStore::new(pool.clone(), &config);

    // Transactions on the pool cut off a little later each time, over the pool's check,
    // BEGIN, a statement and the COMMIT (as a client's deadline would cut off a call that
    // did not run to its end), each followed by a write on that one connection: it must be
    // committed, not held in a transaction the driver does not know it opened.
    for step in 0..40u32 {
        let _ = tokio::time::timeout(LATENCY * step / 2, async {
            let txn = pool.begin().await?;
            txn.execute_unprepared("DELETE FROM login_throttle WHERE failures < 0")
                .await?;
            txn.commit().await
        })
        .await;
        let after: &'static str = format!("after-{step}").leak();
        store.record(&audit(after)).await.unwrap();
        let seen = migrated
            .query_all_raw(Statement::from_string(
                migrated.get_database_backend(),
                format!("SELECT outcome FROM audit_events WHERE outcome = '{after}'"),
            ))
            .await
            .unwrap();
        assert_eq!(
            seen.len(),
            1,
            "the write after a transaction cut off at step {step} was not committed"
        );
    }
    migrated.close().await.unwrap();
    pool.close().await.unwrap();
}

const LATENCY: Duration = Duration::from_millis(5);

fn audit(outcome: &'static str) -> AuditRecord {
    AuditRecord {
        id: Uuid::now_v7(),
        occurred_at: Utc::now(),
        kind: "test",
        outcome,
        user_id: None,
        session_id: None,
        peer: None,
        actor: None,
        request_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_connections_are_reused_not_reopened() {
    if testing_sqlite() {
        eprintln!("skipped: SQLite has no server connections");
        return;
    }
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let conn = app.db.connect().await;
    let backend = conn.get_database_backend();
    let database = app.db.name();
    let sql = if backend == DbBackend::Postgres {
        format!(
            "SELECT CAST(pid AS BIGINT) FROM pg_stat_activity \
             WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
    } else {
        format!(
            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist \
             WHERE db = '{database}' AND id <> CONNECTION_ID()"
        )
    };
    let connections = async || -> BTreeSet<i64> {
        conn.query_all_raw(Statement::from_string(backend, sql.clone()))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get_by_index(0).unwrap())
            .collect()
    };

    // Calls enough for the pool to open what it needs, then the ones counted.
    let mut current = tokens.refresh_token;
    for _ in 0..20 {
        current = app.rotate(&current).await.refresh_token;
    }
    let before = connections().await;
    for _ in 0..50 {
        current = app.rotate(&current).await.refresh_token;
    }
    let after = connections().await;
    // The pool checks each connection before handing it out; a check that misjudged a
    // healthy one would close it and open another, every call.
    assert!(!before.is_empty(), "no connection of authd's found");
    assert!(
        before.is_subset(&after),
        "connections closed and reopened: {before:?} became {after:?}"
    );
    conn.close().await.unwrap();
    app.stop().await;
}
