//! spawn_app and TestApp::builder: a real authd on 127.0.0.1:0 against a fresh database, and typed
//! clients for it.
//!
//! The database comes from AUTHD_TEST_DATABASE_URL: unset or sqlite, a new SQLite file per
//! test; a postgres:// or mysql:// server URL, a new database per test on that server
//! (named authd_test_*; `.ci/run` drops them afterwards).

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use authd::{
    auth::Clock,
    config::Config,
    proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient},
    startup::App,
};
use chrono::{DateTime, Utc};
use clap::Parser;
use sea_orm::{ConnectionTrait as _, Statement};
use secrecy::SecretString;
use tempfile::TempDir;
use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

/// A password that passes the policy.
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    config: Config,
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = std::env::var("TEST_LOG").unwrap_or_default();
            let filter = if filter.is_empty() {
                "info".to_owned()
            } else {
                filter
            };
            // Logs only: nothing to flush at exit.
            let _logs = authd::telemetry::init(
                &filter,
                authd::telemetry::LogFormat::Pretty,
                false,
                std::io::stdout,
                None,
            )
            .expect("test logging");
        }
    });
}

/// A fresh, empty database for one test.
#[derive(Clone)]
pub struct TestDb {
    pub url: String,
    _dir: Option<Arc<TempDir>>,
}

/// Whether the suite runs against SQLite (AUTHD_TEST_DATABASE_URL unset or sqlite:).
pub fn testing_sqlite() -> bool {
    let server = std::env::var("AUTHD_TEST_DATABASE_URL").unwrap_or_default();
    server.is_empty() || server.starts_with("sqlite:")
}

/// A name for a new test database (`.ci/run` drops every `authd_test_*` afterwards).
pub fn new_database_name() -> String {
    format!("authd_test_{}", Uuid::now_v7().simple())
}

/// A connection to the database server under test, outside any test database.
pub async fn server_admin() -> sea_orm::DatabaseConnection {
    let server = std::env::var("AUTHD_TEST_DATABASE_URL").expect("a database server");
    sea_orm::Database::connect(&server)
        .await
        .expect("connect to the test database server")
}

impl TestDb {
    pub async fn fresh() -> Self {
        if testing_sqlite() {
            let dir = TempDir::new().expect("temp dir");
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("authd.db").display()
            );
            return Self {
                url,
                _dir: Some(Arc::new(dir)),
            };
        }
        let name = new_database_name();
        let admin = server_admin().await;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        admin.close().await.expect("close admin connection");
        Self::on_server(&name)
    }

    /// The database of this name on the server under test.
    pub fn on_server(name: &str) -> Self {
        let server = std::env::var("AUTHD_TEST_DATABASE_URL").expect("a database server");
        Self {
            url: with_database_name(&server, name),
            _dir: None,
        }
    }

    /// A SQLite database at this path.
    pub fn sqlite_at(path: &std::path::Path) -> Self {
        Self {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            _dir: None,
        }
    }

    /// The database's name on its server.
    pub fn name(&self) -> String {
        let path = self.url.rsplit('/').next().unwrap_or_default();
        path.split('?').next().unwrap_or_default().to_owned()
    }

    /// A connection of the test's own, beside the server's.
    pub async fn connect(&self) -> sea_orm::DatabaseConnection {
        sea_orm::Database::connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// host:port of a network database.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        let (scheme, rest) = self.url.split_once("://")?;
        let authority = rest.split('/').next()?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let default_port = if scheme == "mysql" { 3306 } else { 5432 };
        let with_port = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:{default_port}")
        };
        with_port.replace("localhost", "127.0.0.1").parse().ok()
    }

    /// The same database reached through another address (a proxy).
    pub fn via(&self, addr: SocketAddr) -> TestDb {
        let (scheme, rest) = self.url.split_once("://").expect("url");
        let (authority, path) = rest.split_once('/').expect("url path");
        let user = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        TestDb {
            url: format!("{scheme}://{user}{addr}/{path}"),
            _dir: None,
        }
    }
}

fn with_database_name(server: &str, name: &str) -> String {
    let (scheme, rest) = server.split_once("://").expect("database URL has a scheme");
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{name}{query}")
}

/// The defaults every test starts from: a free port and the given database.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Defaults::parse_from(["authd"]).config;
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.database.url = SecretString::from(db.url.clone());
    config.database.acquire_timeout = Duration::from_secs(10);
    config.revocation_sync = Duration::from_millis(200);
    config.health_probe_interval = Duration::from_millis(200);
    // No drain: a stopped test server closes at once (the drain has its own tests).
    config.shutdown_drain = Duration::ZERO;
    // Every test calls from 127.0.0.1; the per-address buckets get their own test.
    config.limits.login_per_minute = NonZeroU32::new(100_000).expect("non-zero");
    config.limits.register_per_minute = NonZeroU32::new(100_000).expect("non-zero");
    config
}

/// A running authd.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when AUTHD_METRICS_LISTEN is set.
    pub metrics_addr: Option<SocketAddr>,
    pub db: TestDb,
    pub client: AuthServiceClient<Channel>,
    pub channel: Channel,
    /// SQL statements the server has run.
    pub queries: authd::store::QueryCounter,
    /// The server's clock: [`TestApp::advance`] moves it.
    pub clock: Arc<TestClock>,
    revocation_sync: Duration,
    /// SIGTERM, as the server sees it.
    signals: tokio::sync::mpsc::UnboundedSender<()>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The system clock, moved forward by whatever a test skips: expiries without waiting.
#[derive(Debug, Default)]
pub struct TestClock {
    ahead_ms: AtomicI64,
}

impl TestClock {
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).expect("a short skip");
        self.ahead_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.ahead_ms.load(Ordering::SeqCst))
    }
}

/// A server on a fresh database with the test defaults.
pub async fn spawn_app() -> TestApp {
    TestApp::builder(TestDb::fresh().await).spawn().await
}

/// How a test wants its server: [`TestApp::builder`].
pub struct TestAppBuilder {
    db: TestDb,
    config: Config,
    client_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl TestAppBuilder {
    /// Changes the test defaults.
    pub fn configure(mut self, tweak: impl FnOnce(&mut Config)) -> Self {
        tweak(&mut self.config);
        self
    }

    /// Replaces the configuration whole.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The test client speaks TLS.
    pub fn client_tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        self.client_tls = tls;
        self
    }

    pub async fn spawn(self) -> TestApp {
        let Self {
            db,
            config,
            client_tls,
        } = self;
        init_logging();
        let clock = Arc::new(TestClock::default());
        let revocation_sync = config.revocation_sync;
        let app = App::build_with_clock(config, clock.clone())
            .await
            .expect("build app");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let queries = app.query_counter();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let handle = tokio::spawn(
            app.run_until_stopped(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
        );
        let scheme = if client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}")).expect("endpoint");
        if let Some(tls) = client_tls {
            endpoint = endpoint.tls_config(tls).expect("client TLS");
        }
        let channel = endpoint.connect().await.expect("connect to authd");
        let app = TestApp {
            addr,
            metrics_addr,
            db,
            client: AuthServiceClient::new(channel.clone()),
            channel,
            queries,
            clock,
            revocation_sync,
            signals: tx,
            handle: Some(handle),
        };
        app.wait_for_health(ServingStatus::Serving).await;
        app
    }
}

impl TestApp {
    /// A server on `db`, with the test defaults unless changed.
    pub fn builder(db: TestDb) -> TestAppBuilder {
        let config = test_config(&db);
        TestAppBuilder {
            db,
            config,
            client_tls: None,
        }
    }

    /// Moves the server's clock forward, then lets a revocation poll run at the new time
    /// (the server calls its revocation view stale three intervals after its last poll).
    pub async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        tokio::time::sleep(self.revocation_sync * 2).await;
    }

    /// Stops the server gracefully and waits for it.
    /// A stop signal, as SIGTERM: the first starts the drain, the second ends it.
    pub fn signal(&self) {
        let _ = self.signals.send(());
    }

    /// Signals, then waits for the server to stop.
    pub async fn stop(self) {
        self.signal();
        self.stopped().await;
    }

    /// Waits for the server to stop, cleanly.
    pub async fn stopped(mut self) {
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    pub async fn health_status(&self, service: &str) -> Result<ServingStatus, Status> {
        let response = self
            .health()
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
        Ok(response.into_inner().status())
    }

    /// Waits up to 10 s for the overall health status.
    pub async fn wait_for_health(&self, wanted: ServingStatus) {
        for _ in 0..200 {
            if self.health_status("").await.ok() == Some(wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("health never became {wanted:?}");
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
    ) -> Result<pb::RegisterResponse, Status> {
        self.client
            .clone()
            .register(pb::RegisterRequest {
                email: email.to_owned(),
                password: password.to_owned(),
                name: name.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Registers a fresh user and returns its email and tokens.
    pub async fn new_user(&self) -> (String, pb::TokenPair) {
        let email = format!("user-{}@example.com", Uuid::now_v7().simple());
        let response = self
            .register(&email, PASSWORD, "Test User")
            .await
            .expect("register");
        (email, response.tokens.expect("tokens"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        self.client
            .clone()
            .login(pb::LoginRequest {
                email: email.to_owned(),
                password: password.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// `count` logins of one account sent at once, each on its own task.
    pub async fn logins_at_once(
        &self,
        email: &str,
        password: &str,
        count: usize,
    ) -> Vec<Result<pb::LoginResponse, Status>> {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..count {
            let (mut client, email, password) =
                (self.client.clone(), email.to_owned(), password.to_owned());
            calls.spawn(async move {
                client
                    .login(pb::LoginRequest { email, password })
                    .await
                    .map(tonic::Response::into_inner)
            });
        }
        calls.join_all().await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::RefreshResponse, Status> {
        self.client
            .clone()
            .refresh(pb::RefreshRequest {
                refresh_token: refresh_token.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Refreshes a token that must be refreshable, returning the new pair.
    pub async fn rotate(&self, refresh_token: &str) -> pb::TokenPair {
        let response = self.refresh(refresh_token).await.expect("refresh");
        response.tokens.expect("tokens")
    }

    pub async fn logout(
        &self,
        refresh_token: &str,
        all_sessions: bool,
        bearer: Option<&str>,
    ) -> Result<(), Status> {
        let request = with_bearer(
            pb::LogoutRequest {
                refresh_token: refresh_token.to_owned(),
                all_sessions,
            },
            bearer,
        );
        self.client.clone().logout(request).await.map(|_| ())
    }

    pub async fn get_me(&self, bearer: Option<&str>) -> Result<pb::User, Status> {
        let response = self
            .client
            .clone()
            .get_me(with_bearer(pb::GetMeRequest {}, bearer))
            .await?;
        Ok(response.into_inner().user.expect("user"))
    }

    pub async fn validate(&self, token: &str) -> Result<pb::ValidateTokenResponse, Status> {
        self.client
            .clone()
            .validate_token(pb::ValidateTokenRequest {
                token: token.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Waits up to 5 s for ValidateToken to give `reason` for `token`.
    pub async fn wait_for_validation(
        &self,
        token: &str,
        reason: pb::InactiveReason,
    ) -> pb::ValidateTokenResponse {
        for _ in 0..100 {
            let response = self.validate(token).await.expect("validate");
            if !response.active && response.reason() == reason {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("token never became {reason:?}");
    }
}

pub fn with_bearer<T>(message: T, bearer: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = bearer {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
    }
    request
}

/// Asserts a status code and returns the status for further checks.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got OK: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// The `authd` binary, for CLI tests.
pub fn authd_bin() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd"));
    command.env("AUTHD_LOG", "warn");
    command
}

/// `authd user set-active EMAIL true|false` against `db`, as an operator runs it; it must
/// succeed.
pub fn set_active(db: &TestDb, email: &str, active: bool) -> std::process::Output {
    let output = authd_bin()
        .args([
            "user",
            "set-active",
            email,
            if active { "true" } else { "false" },
        ])
        .env("AUTHD_DATABASE_URL", &db.url)
        .output()
        .expect("run authd user set-active");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A port nothing listens on yet.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// An `authd serve` process, killed (SIGKILL) when dropped.
pub struct AuthdProcess(pub std::process::Child);

impl AuthdProcess {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it has not exited.
    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().expect("process status").is_none()
    }

    /// SIGTERM, as an operator or an orchestrator stops it; waits for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(sent.success());
        self.0.wait().expect("exit status")
    }

    /// SIGKILL: no graceful shutdown, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for AuthdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `authd serve` as a real process on `port`, with rate limits out of the way and the
/// extra environment given.
pub fn start_authd(db: &TestDb, port: u16, env: &[(&str, &str)]) -> AuthdProcess {
    let child = authd_bin()
        .arg("serve")
        .env("AUTHD_DATABASE_URL", &db.url)
        .env("AUTHD_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHD_LOGIN_RATE_PER_MINUTE", "100000")
        .env("AUTHD_REGISTER_RATE_PER_MINUTE", "100000")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start authd");
    AuthdProcess(child)
}

/// A channel to the authd process on `port`, once it reports SERVING.
pub async fn connect_authd(port: u16) -> Channel {
    for _ in 0..400 {
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect()
            .await
        {
            let serving = HealthClient::new(channel.clone())
                .check(tonic_health::pb::HealthCheckRequest {
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
    panic!("authd on port {port} did not come up");
}

/// A TCP forwarder in front of a network database that can be cut and restored, to test
/// how authd behaves while its database is unreachable.
pub struct DbProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl DbProxy {
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_with_delay(target, Duration::ZERO).await
    }

    /// A proxy that holds every chunk of bytes, either way, for `delay` before passing it
    /// on: a slow network, in which a call can be cut off in the middle of a round trip.
    pub async fn start_with_delay(target: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let up = Arc::clone(&up);
            let stalled = Arc::clone(&stalled);
            let connections = Arc::clone(&connections);
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let stalled = Arc::clone(&stalled);
                    let task = tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (from_client, to_client) = inbound.into_split();
                        let (from_server, to_server) = outbound.into_split();
                        tokio::join!(
                            pump(from_client, to_server, delay, Arc::clone(&stalled)),
                            pump(from_server, to_client, delay, stalled)
                        );
                    });
                    connections.lock().expect("lock").push(task.abort_handle());
                }
            }
        })
        .abort_handle();
        Self {
            addr,
            up,
            stalled,
            connections,
            accept,
        }
    }

    /// Holds every byte, either way, without closing anything: a black hole, as a dead
    /// route or a frozen server looks from outside.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Lets the held bytes and new ones through again.
    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Copies bytes from `from` to `to`, each chunk `delay` late, holding them while stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    stalled: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// (kind, outcome, user_id, session_id, peer) rows, oldest first.
pub async fn audit_rows(
    db: &TestDb,
) -> Vec<(
    String,
    String,
    Option<uuid::Uuid>,
    Option<uuid::Uuid>,
    Option<String>,
)> {
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let sql = "SELECT kind, outcome, user_id, session_id, peer FROM audit_events ORDER BY id";
    let rows = conn
        .query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "kind").unwrap(),
                row.try_get("", "outcome").unwrap(),
                row.try_get("", "user_id").unwrap(),
                row.try_get("", "session_id").unwrap(),
                row.try_get("", "peer").unwrap(),
            )
        })
        .collect()
}

/// The fields a status's google.rpc.BadRequest names, in order.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .expect("google.rpc.BadRequest field violations")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}
