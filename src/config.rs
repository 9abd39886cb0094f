//! authd's configuration: one typed [`Config`], from `serve` flags or `AUTHD_*` environment
//! variables, with defaults that run a local development server with no set-up at all.
//!
//! Each option's value name is its environment variable, so a bad value stops start-up with
//! a message that names the variable and says what it expects.

use std::{
    ffi::OsStr,
    fmt,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, ValueEnum, builder::TypedValueParser, error::ErrorKind};
use hex::FromHex as _;
use secrecy::{ExposeSecret, SecretString};

use crate::{
    auth::{
        CodePolicy, CostBelowFloor, HashCost, HmacSecret, KeySource, PasswordHasher,
        PasswordPolicy, Roles, RotationSchedule, SealError, SigningAlgorithm, TokenSettings,
    },
    mail::{LinkTemplate, MailSettings, smtp_transport},
    store::{Backend, CannotOpen, DatabaseSettings, SqliteSync},
};

/// Everything `authd serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on for gRPC (port 0 picks a free port).
    #[arg(
        long,
        env = "AUTHD_LISTEN",
        value_name = "AUTHD_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub tokens: TokenConfig,

    #[command(flatten)]
    pub hashing: HashingConfig,

    #[command(flatten)]
    pub login: LoginConfig,

    #[command(flatten)]
    pub limits: LimitsConfig,

    #[command(flatten)]
    pub tls: TlsConfig,

    #[command(flatten)]
    pub mail: MailConfig,

    #[command(flatten)]
    pub roles: RolesConfig,

    /// Comma-separated roles whose access tokens may call AdminService.
    #[arg(
        long = "admin-roles",
        env = "AUTHD_ADMIN_ROLES",
        value_name = "AUTHD_ADMIN_ROLES",
        value_delimiter = ',',
        default_value = "admin"
    )]
    pub admin_roles: Vec<String>,

    /// Comma-separated hex SHA-256 digests of the API keys back-office services send as
    /// `x-api-key` to call AdminService; empty: only admin users' tokens.
    #[arg(
        long = "admin-api-keys",
        env = "AUTHD_ADMIN_API_KEYS",
        value_name = "AUTHD_ADMIN_API_KEYS",
        value_delimiter = ',',
        value_parser = Sha256Hex
    )]
    pub admin_api_keys: Vec<[u8; 32]>,

    /// A file of AUTHD_ADMIN_API_KEYS digests (comma- or line-separated), e.g. a mounted
    /// secret; added to AUTHD_ADMIN_API_KEYS.
    #[arg(
        long = "admin-api-keys-file",
        env = "AUTHD_ADMIN_API_KEYS_FILE",
        value_name = "AUTHD_ADMIN_API_KEYS_FILE"
    )]
    pub admin_api_keys_file: Option<PathBuf>,

    /// How often each replica reads the sessions other replicas revoked; the bound on how
    /// long a token revoked elsewhere can still validate here.
    #[arg(
        long,
        env = "AUTHD_REVOCATION_SYNC",
        value_name = "AUTHD_REVOCATION_SYNC",
        default_value = "1s",
        value_parser = duration_within(Duration::from_millis(10), Duration::from_secs(3600))
    )]
    pub revocation_sync: Duration,

    /// Serve gRPC server reflection (grpcurl, buf curl); turn off in production if the
    /// API surface should not be discoverable.
    #[arg(
        long,
        env = "AUTHD_REFLECTION",
        value_name = "AUTHD_REFLECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub reflection: bool,

    /// Serve Prometheus metrics at `/metrics` on this address (e.g. 127.0.0.1:9464);
    /// unset: no metrics.
    #[arg(
        long = "metrics-listen",
        env = "AUTHD_METRICS_LISTEN",
        value_name = "AUTHD_METRICS_LISTEN"
    )]
    pub metrics_listen: Option<SocketAddr>,

    /// Comma-separated origins (`https://app.example.com`) whose pages may call over
    /// gRPC-Web; empty: no CORS headers, so no browser page of another origin may.
    #[arg(
        long = "cors-origins",
        env = "AUTHD_CORS_ORIGINS",
        value_name = "AUTHD_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub cors_origins: Vec<http::HeaderValue>,

    /// Comma-separated hex SHA-256 digests of the API keys ValidateToken callers must send
    /// as `x-api-key` (`printf %s "$KEY" | sha256sum`); empty: no caller authentication.
    #[arg(
        long = "validate-api-keys",
        env = "AUTHD_VALIDATE_API_KEYS",
        value_name = "AUTHD_VALIDATE_API_KEYS",
        value_delimiter = ',',
        value_parser = Sha256Hex
    )]
    pub validate_api_keys: Vec<[u8; 32]>,

    /// A file of AUTHD_VALIDATE_API_KEYS digests (comma- or line-separated), e.g. a
    /// mounted secret; added to AUTHD_VALIDATE_API_KEYS.
    #[arg(
        long = "validate-api-keys-file",
        env = "AUTHD_VALIDATE_API_KEYS_FILE",
        value_name = "AUTHD_VALIDATE_API_KEYS_FILE"
    )]
    pub validate_api_keys_file: Option<PathBuf>,

    /// How long audit events are kept.
    #[arg(
        long = "audit-retention",
        env = "AUTHD_AUDIT_RETENTION",
        value_name = "AUTHD_AUDIT_RETENTION",
        default_value = "90d",
        value_parser = duration_within(Duration::from_secs(86_400), TEN_YEARS)
    )]
    pub audit_retention: Duration,

    /// How often ended sessions, idle login counters and old audit events are purged.
    #[arg(
        long = "purge-interval",
        env = "AUTHD_PURGE_INTERVAL",
        value_name = "AUTHD_PURGE_INTERVAL",
        default_value = "1h",
        value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(86_400))
    )]
    pub purge_interval: Duration,

    /// How often the database is probed for the health service.
    #[arg(
        long,
        env = "AUTHD_HEALTH_PROBE_INTERVAL",
        value_name = "AUTHD_HEALTH_PROBE_INTERVAL",
        default_value = "2s",
        value_parser = duration_within(Duration::from_millis(10), Duration::from_secs(3600))
    )]
    pub health_probe_interval: Duration,

    /// How long, after SIGTERM, health says NOT_SERVING while calls are still accepted,
    /// so load balancers stop sending before the port closes. A second signal stops at
    /// once.
    #[arg(
        long = "shutdown-drain",
        env = "AUTHD_SHUTDOWN_DRAIN",
        value_name = "AUTHD_SHUTDOWN_DRAIN",
        default_value = "5s",
        value_parser = duration_within(Duration::ZERO, Duration::from_secs(600))
    )]
    pub shutdown_drain: Duration,

    /// Comma-separated networks (`10.0.0.0/8`, `192.0.2.7`) of the proxies in front of
    /// authd: from a peer inside one, the client address is read from `x-forwarded-for`
    /// (its right-most hop outside these networks) or Envoy's `x-envoy-external-address`,
    /// for the rate limits, the audit trail and the access log. Empty: the TCP peer is
    /// the client, and those headers are ignored.
    #[arg(
        long = "trusted-proxies",
        env = "AUTHD_TRUSTED_PROXIES",
        value_name = "AUTHD_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_network
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Export traces over OTLP/gRPC to this collector (e.g. http://localhost:4317): a span
    /// per call, with the wait for a hash thread, the hash and each database statement;
    /// a caller's W3C `traceparent` is joined. Unset: no traces. (Read by `main`, which
    /// installs the process's subscriber before the App is built.)
    #[arg(
        long = "otlp-endpoint",
        env = "AUTHD_OTLP_ENDPOINT",
        value_name = "AUTHD_OTLP_ENDPOINT",
        value_parser = crate::telemetry::traces::parse_endpoint
    )]
    pub otlp_endpoint: Option<String>,
}

/// The most memory the hash workers may take together: 16 GiB.
const MAX_HASH_MEMORY_KIB: u64 = 16 << 20;

impl Config {
    /// The digests of the keys that may call ValidateToken: the variable's and the file's.
    pub fn validate_api_key_digests(&self) -> anyhow::Result<Vec<[u8; 32]>> {
        with_digests_from_file(
            &self.validate_api_keys,
            self.validate_api_keys_file.as_deref(),
            "AUTHD_VALIDATE_API_KEYS_FILE",
        )
    }

    /// The digests of the keys that may call AdminService: the variable's and the file's.
    pub fn admin_api_key_digests(&self) -> anyhow::Result<Vec<[u8; 32]>> {
        with_digests_from_file(
            &self.admin_api_keys,
            self.admin_api_keys_file.as_deref(),
            "AUTHD_ADMIN_API_KEYS_FILE",
        )
    }

    /// Checks what no single setting can check alone, naming the settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (login, tokens, hashing) = (&self.login, &self.tokens, &self.hashing);
        anyhow::ensure!(
            login.max_window >= login.window,
            "AUTHD_LOGIN_THROTTLE_MAX_WINDOW: expected at least AUTHD_LOGIN_THROTTLE_WINDOW ({}), got {}",
            humantime::format_duration(login.window),
            humantime::format_duration(login.max_window),
        );
        // Hash memory is taken per worker, all at once under load.
        let hash_memory_kib = hashing.worker_count() as u64 * u64::from(hashing.memory_kib);
        anyhow::ensure!(
            hash_memory_kib <= MAX_HASH_MEMORY_KIB,
            "AUTHD_ARGON2_MEMORY_KIB × AUTHD_HASH_WORKERS: expected at most {} GiB, got {} GiB \
             ({} KiB × {} workers)",
            MAX_HASH_MEMORY_KIB >> 20,
            hash_memory_kib >> 20,
            hashing.memory_kib,
            hashing.worker_count(),
        );
        let roles = self.roles.roles()?;
        if let Some(unknown) = self.admin_roles.iter().find(|r| !roles.contains(r.trim())) {
            anyhow::bail!("AUTHD_ADMIN_ROLES: {unknown:?} is not one of AUTHD_ROLES");
        }
        // A new key is published two reload intervals before it signs.
        anyhow::ensure!(
            tokens.key_rotation > tokens.key_reload_interval * 2,
            "AUTHD_KEY_ROTATION: expected more than twice AUTHD_KEY_RELOAD_INTERVAL ({}), got {}",
            humantime::format_duration(tokens.key_reload_interval),
            humantime::format_duration(tokens.key_rotation),
        );
        Ok(())
    }
}

/// The roles users may have.
#[derive(Debug, Clone, Args)]
pub struct RolesConfig {
    /// Comma-separated roles users may be given.
    #[arg(
        long = "roles",
        env = "AUTHD_ROLES",
        value_name = "AUTHD_ROLES",
        value_delimiter = ',',
        default_value = "user,admin"
    )]
    pub roles: Vec<String>,

    /// The role of self-registered users, and of users created or imported without one.
    #[arg(
        long = "default-role",
        env = "AUTHD_DEFAULT_ROLE",
        value_name = "AUTHD_DEFAULT_ROLE",
        default_value = "user"
    )]
    pub default_role: String,
}

impl RolesConfig {
    /// The checked roles.
    pub fn roles(&self) -> anyhow::Result<Roles> {
        Roles::new(self.roles.clone(), self.default_role.clone())
    }
}

/// Where the user and session store lives. Global, so `authd migrate up --database-url ..`
/// reads as naturally as `authd migrate --database-url .. up`.
#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// sqlite://FILE?mode=rwc, postgres://USER@HOST/DB or mysql://USER@HOST/DB.
    #[arg(
        long = "database-url",
        global = true,
        env = "AUTHD_DATABASE_URL",
        value_name = "AUTHD_DATABASE_URL",
        default_value = "sqlite://authd.db?mode=rwc",
        hide_env_values = true,
        value_parser = |value: &str| Ok::<_, String>(SecretString::from(value))
    )]
    pub url: SecretString,

    /// A file holding the database URL, e.g. a mounted secret (instead of
    /// AUTHD_DATABASE_URL).
    #[arg(
        long = "database-url-file",
        global = true,
        env = "AUTHD_DATABASE_URL_FILE",
        value_name = "AUTHD_DATABASE_URL_FILE",
        conflicts_with = "url"
    )]
    pub url_file: Option<PathBuf>,

    /// Maximum pooled connections (default: 1 for SQLite, which has one writer, 10 otherwise).
    #[arg(
        long = "db-max-connections",
        env = "AUTHD_DB_MAX_CONNECTIONS",
        value_name = "AUTHD_DB_MAX_CONNECTIONS",
        value_parser = number_within(NonZeroUsize::MIN, non_zero(1000))
    )]
    pub max_connections: Option<NonZeroUsize>,

    /// How long a request waits for a database connection before it fails with UNAVAILABLE.
    #[arg(
        long = "db-acquire-timeout",
        global = true,
        env = "AUTHD_DB_ACQUIRE_TIMEOUT",
        value_name = "AUTHD_DB_ACQUIRE_TIMEOUT",
        default_value = "5s",
        value_parser = duration_within(Duration::from_millis(100), Duration::from_secs(600))
    )]
    pub acquire_timeout: Duration,

    /// Longest a database statement or a store call may take: the server cancels a
    /// statement past it (PostgreSQL), and authd gives a call up (UNAVAILABLE), so a
    /// black-holed connection cannot hang a call, the health check or the revocation sync.
    #[arg(
        long = "db-statement-timeout",
        global = true,
        env = "AUTHD_DB_STATEMENT_TIMEOUT",
        value_name = "AUTHD_DB_STATEMENT_TIMEOUT",
        default_value = "5s",
        value_parser = duration_within(Duration::from_millis(100), Duration::from_secs(600))
    )]
    pub statement_timeout: Duration,

    /// SQLite only: `full` writes each commit through to the disk before the call is
    /// answered, so an answered call survives a power cut; `normal` leaves the last commits
    /// in the OS cache (a crash of authd loses nothing, a power cut may lose them).
    #[arg(
        long = "sqlite-synchronous",
        global = true,
        env = "AUTHD_SQLITE_SYNCHRONOUS",
        value_name = "AUTHD_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "full"
    )]
    pub sqlite_synchronous: SqliteSynchronous,
}

/// When SQLite syncs its write-ahead log to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSynchronous {
    /// At every commit.
    Full,
    /// At checkpoints only.
    Normal,
}

// The URL may carry a password: show only which backend it names.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("backend", &self.backend())
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .finish()
    }
}

impl DatabaseConfig {
    /// The URL scheme ("sqlite", "postgres", "mysql"), safe to log; "from a file" when
    /// AUTHD_DATABASE_URL_FILE names it (the file is read when the settings are made).
    pub fn backend(&self) -> &str {
        if self.url_file.is_some() {
            return "from a file";
        }
        let url = self.url.expose_secret();
        url.split_once(':').map_or("unknown", |(scheme, _)| scheme)
    }

    /// Where the store lives, refusing a URL of an engine authd does not run on.
    pub fn settings(&self) -> anyhow::Result<DatabaseSettings> {
        let url = match &self.url_file {
            Some(path) => read_secret_file(path, "AUTHD_DATABASE_URL_FILE")?,
            None => self.url.clone(),
        };
        let backend = Backend::of_url(url.expose_secret()).context(
            "AUTHD_DATABASE_URL: expected a URL starting with sqlite:, postgres: or mysql:",
        )?;
        Ok(DatabaseSettings {
            url,
            backend,
            max_connections: self
                .max_connections
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            acquire_timeout: self.acquire_timeout,
            statement_timeout: self.statement_timeout,
            sqlite_sync: match self.sqlite_synchronous {
                SqliteSynchronous::Full => SqliteSync::EveryCommit,
                SqliteSynchronous::Normal => SqliteSync::AtCheckpoints,
            },
        })
    }
}

/// How access and refresh tokens are made and checked.
#[derive(Debug, Clone, Args)]
pub struct TokenConfig {
    /// The `iss` claim of issued tokens, required on validation.
    #[arg(
        long,
        env = "AUTHD_ISSUER",
        value_name = "AUTHD_ISSUER",
        default_value = "authd"
    )]
    pub issuer: String,

    /// The `aud` claim of issued tokens, required on validation.
    #[arg(
        long,
        env = "AUTHD_AUDIENCE",
        value_name = "AUTHD_AUDIENCE",
        default_value = "authd"
    )]
    pub audience: String,

    /// Signing algorithm of access tokens.
    #[arg(
        long = "jwt-algorithm",
        env = "AUTHD_JWT_ALGORITHM",
        value_name = "AUTHD_JWT_ALGORITHM",
        value_enum,
        default_value = "EdDSA",
        ignore_case = true
    )]
    pub algorithm: JwtAlgorithm,

    /// Lifetime of access tokens.
    #[arg(
        long,
        env = "AUTHD_ACCESS_TTL",
        value_name = "AUTHD_ACCESS_TTL",
        default_value = "15m",
        value_parser = duration_within(Duration::from_secs(1), TEN_YEARS)
    )]
    pub access_ttl: Duration,

    /// Lifetime of a refresh token; each refresh starts it again (idle expiry).
    #[arg(
        long,
        env = "AUTHD_REFRESH_TTL",
        value_name = "AUTHD_REFRESH_TTL",
        default_value = "7d",
        value_parser = duration_within(Duration::from_secs(1), TEN_YEARS)
    )]
    pub refresh_ttl: Duration,

    /// How long after a rotation the rotated token, presented again, gets the same
    /// successor back (a retried request is not an attack); "0s" turns this off.
    #[arg(
        long = "refresh-reuse-grace",
        env = "AUTHD_REFRESH_REUSE_GRACE",
        value_name = "AUTHD_REFRESH_REUSE_GRACE",
        default_value = "10s",
        value_parser = duration_within(Duration::ZERO, Duration::from_secs(3600))
    )]
    pub refresh_reuse_grace: Duration,

    /// Absolute session lifetime: refreshing never extends a session past this age.
    #[arg(
        long,
        env = "AUTHD_SESSION_MAX_AGE",
        value_name = "AUTHD_SESSION_MAX_AGE",
        default_value = "30d",
        value_parser = duration_within(Duration::from_secs(1), TEN_YEARS)
    )]
    pub session_max_age: Duration,

    /// HS256 signing secret, at least 32 bytes; without it HS256 uses a random secret
    /// generated on first start and kept in the database.
    #[arg(
        long = "jwt-secret",
        env = "AUTHD_JWT_SECRET",
        value_name = "AUTHD_JWT_SECRET",
        hide_env_values = true,
        value_parser = |value: &str| Ok::<_, String>(SecretString::from(value))
    )]
    pub jwt_secret: Option<SecretString>,

    /// A file holding the HS256 signing secret, e.g. a mounted secret (instead of
    /// AUTHD_JWT_SECRET).
    #[arg(
        long = "jwt-secret-file",
        env = "AUTHD_JWT_SECRET_FILE",
        value_name = "AUTHD_JWT_SECRET_FILE",
        conflicts_with = "jwt_secret"
    )]
    pub jwt_secret_file: Option<PathBuf>,

    /// How long a signing key signs before the next one takes over. The old key keeps
    /// verifying until every token it signed has expired, then is retired.
    #[arg(
        long = "key-rotation",
        env = "AUTHD_KEY_ROTATION",
        value_name = "AUTHD_KEY_ROTATION",
        default_value = "30d",
        value_parser = duration_within(Duration::from_secs(60), TEN_YEARS)
    )]
    pub key_rotation: Duration,

    /// How often each replica re-reads the signing keys. A new key is published two of
    /// these intervals before it signs, so every replica can verify its tokens from the
    /// first one.
    #[arg(
        long = "key-reload-interval",
        env = "AUTHD_KEY_RELOAD_INTERVAL",
        value_name = "AUTHD_KEY_RELOAD_INTERVAL",
        default_value = "60s",
        value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(86_400))
    )]
    pub key_reload_interval: Duration,

    /// Master key (32 bytes, base64 or hex) that seals private keys stored in the
    /// database. Without one they are stored unsealed, and start-up warns.
    #[arg(
        long = "master-key",
        env = "AUTHD_MASTER_KEY",
        value_name = "AUTHD_MASTER_KEY",
        hide_env_values = true,
        conflicts_with = "master_key_file",
        value_parser = |value: &str| Ok::<_, String>(SecretString::from(value))
    )]
    pub master_key: Option<SecretString>,

    /// A file holding the master key, e.g. a mounted secret.
    #[arg(
        long = "master-key-file",
        env = "AUTHD_MASTER_KEY_FILE",
        value_name = "AUTHD_MASTER_KEY_FILE"
    )]
    pub master_key_file: Option<PathBuf>,

    /// Clock skew tolerated when checking `exp` and `iat`.
    #[arg(
        long,
        env = "AUTHD_CLOCK_LEEWAY",
        value_name = "AUTHD_CLOCK_LEEWAY",
        default_value = "5s",
        value_parser = duration_within(Duration::ZERO, Duration::from_secs(300))
    )]
    pub clock_leeway: Duration,
    /// Access tokens whose signature ValidateToken remembers having verified (0 turns the
    /// cache off). Each entry holds one token and its claims, about 1 KiB.
    #[arg(
        long,
        env = "AUTHD_VALIDATE_CACHE_ENTRIES",
        value_name = "AUTHD_VALIDATE_CACHE_ENTRIES",
        default_value_t = 10_000,
        value_parser = number_within(0_usize, 10_000_000)
    )]
    pub validate_cache_entries: usize,
}

/// The JWS algorithms authd signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// Ed25519 signatures (the default): verifiable with a public key.
    #[value(name = "EdDSA")]
    EdDsa,
    /// ECDSA P-256 signatures, for verifiers that do not know EdDSA.
    #[value(name = "ES256")]
    Es256,
    /// RSA (2048-bit) PKCS#1 v1.5 signatures, which every JWT library verifies.
    #[value(name = "RS256")]
    Rs256,
    /// HMAC-SHA256 with a 256-bit secret generated on first start.
    #[value(name = "HS256")]
    Hs256,
}

impl From<JwtAlgorithm> for SigningAlgorithm {
    fn from(algorithm: JwtAlgorithm) -> Self {
        match algorithm {
            JwtAlgorithm::EdDsa => Self::EdDsa,
            JwtAlgorithm::Es256 => Self::Es256,
            JwtAlgorithm::Rs256 => Self::Rs256,
            JwtAlgorithm::Hs256 => Self::Hs256,
        }
    }
}

impl TokenConfig {
    /// The master key: AUTHD_MASTER_KEY's, or the one in its file.
    pub fn master_key(&self) -> anyhow::Result<Option<SecretString>> {
        match &self.master_key_file {
            Some(path) => read_secret_file(path, "AUTHD_MASTER_KEY_FILE").map(Some),
            None => Ok(self.master_key.clone()),
        }
    }

    /// How access tokens are made and checked, and where their keys come from.
    pub fn settings(&self) -> anyhow::Result<TokenSettings> {
        let from_file = self
            .jwt_secret_file
            .as_deref()
            .map(|path| read_secret_file(path, "AUTHD_JWT_SECRET_FILE"))
            .transpose()?;
        let keys = match self.jwt_secret.as_ref().or(from_file.as_ref()) {
            Some(secret) => {
                anyhow::ensure!(
                    self.algorithm == JwtAlgorithm::Hs256,
                    "AUTHD_JWT_SECRET: only used with AUTHD_JWT_ALGORITHM=HS256"
                );
                let secret = HmacSecret::new(secret.clone()).map_err(|short| {
                    anyhow::anyhow!(
                        "AUTHD_JWT_SECRET: expected at least {} bytes, got {}",
                        short.floor,
                        short.got
                    )
                })?;
                KeySource::SharedSecret(secret)
            }
            None => KeySource::Rotating(RotationSchedule {
                rotation: self.key_rotation,
                reload_interval: self.key_reload_interval,
            }),
        };
        Ok(TokenSettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            algorithm: self.algorithm.into(),
            access_ttl: self.access_ttl,
            leeway: self.clock_leeway,
            verified_cache_entries: self.validate_cache_entries,
            keys,
        })
    }
}

/// Password rules and the bounded pool that runs argon2 off the async workers.
#[derive(Debug, Clone, Args)]
pub struct HashingConfig {
    /// Password hashes computed at once (default: one per CPU core).
    #[arg(
        long = "hash-workers",
        env = "AUTHD_HASH_WORKERS",
        value_name = "AUTHD_HASH_WORKERS",
        value_parser = number_within(NonZeroUsize::MIN, non_zero(1024))
    )]
    pub workers: Option<NonZeroUsize>,

    /// Requests allowed to wait for a hash worker; beyond it they get RESOURCE_EXHAUSTED at once.
    #[arg(
        long = "hash-queue",
        env = "AUTHD_HASH_QUEUE",
        value_name = "AUTHD_HASH_QUEUE",
        default_value = "32",
        value_parser = number_within(0_usize, 100_000)
    )]
    pub queue: usize,

    /// argon2id memory cost in KiB (at least 19456). Raising it upgrades each stored hash
    /// at the user's next successful login.
    #[arg(
        long = "argon2-memory-kib",
        env = "AUTHD_ARGON2_MEMORY_KIB",
        value_name = "AUTHD_ARGON2_MEMORY_KIB",
        default_value = "19456",
        value_parser = number_within(19_456_u32, 4 << 20)
    )]
    pub memory_kib: u32,

    /// argon2id passes (at least 2).
    #[arg(
        long = "argon2-iterations",
        env = "AUTHD_ARGON2_ITERATIONS",
        value_name = "AUTHD_ARGON2_ITERATIONS",
        default_value = "2",
        value_parser = number_within(2_u32, 1_000)
    )]
    pub iterations: u32,

    /// argon2id lanes (at least 1).
    #[arg(
        long = "argon2-parallelism",
        env = "AUTHD_ARGON2_PARALLELISM",
        value_name = "AUTHD_ARGON2_PARALLELISM",
        default_value = "1",
        value_parser = number_within(1_u32, 64)
    )]
    pub parallelism: u32,

    /// Shortest new password accepted, in characters (at least 8).
    #[arg(
        long = "password-min-length",
        env = "AUTHD_PASSWORD_MIN_LENGTH",
        value_name = "AUTHD_PASSWORD_MIN_LENGTH",
        default_value = "12",
        value_parser = number_within(8_usize, 64)
    )]
    pub password_min_length: usize,
}

impl HashingConfig {
    /// The hash pool, refusing a cost below OWASP's minimum.
    pub fn hasher(&self) -> anyhow::Result<PasswordHasher> {
        let cost =
            HashCost::new(self.memory_kib, self.iterations, self.parallelism).map_err(|below| {
                let (variable, floor) = match below {
                    CostBelowFloor::Memory(floor) => ("AUTHD_ARGON2_MEMORY_KIB", floor),
                    CostBelowFloor::Iterations(floor) => ("AUTHD_ARGON2_ITERATIONS", floor),
                    CostBelowFloor::Parallelism(floor) => ("AUTHD_ARGON2_PARALLELISM", floor),
                };
                anyhow::anyhow!("{variable}: {floor}")
            })?;
        PasswordHasher::new(cost, self.worker_count(), self.queue)
    }

    /// The rules for new passwords.
    pub fn password_policy(&self) -> anyhow::Result<PasswordPolicy> {
        PasswordPolicy::new(self.password_min_length)
            .map_err(|below| anyhow::anyhow!("AUTHD_PASSWORD_MIN_LENGTH: {below}"))
    }

    /// The number of hash workers, resolving the default.
    pub fn worker_count(&self) -> usize {
        self.workers
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }
}

/// Per-account throttling of password guessing.
#[derive(Debug, Clone, Args)]
pub struct LoginConfig {
    /// Consecutive failed logins for one email before attempts are refused for a while.
    #[arg(
        long = "login-max-failures",
        env = "AUTHD_LOGIN_MAX_FAILURES",
        value_name = "AUTHD_LOGIN_MAX_FAILURES",
        default_value = "10",
        value_parser = clap::value_parser!(i64).range(1..=100)
    )]
    pub max_failures: i64,

    /// The first wait after the limit; each further failure adds as much again.
    #[arg(
        long = "login-throttle-window",
        env = "AUTHD_LOGIN_THROTTLE_WINDOW",
        value_name = "AUTHD_LOGIN_THROTTLE_WINDOW",
        default_value = "30s",
        value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(86_400))
    )]
    pub window: Duration,

    /// The longest wait (there is never a permanent lock).
    #[arg(
        long = "login-throttle-max-window",
        env = "AUTHD_LOGIN_THROTTLE_MAX_WINDOW",
        value_name = "AUTHD_LOGIN_THROTTLE_MAX_WINDOW",
        default_value = "15m",
        value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(30 * 86_400))
    )]
    pub max_window: Duration,
}

/// A network in CIDR notation, or one address.
fn parse_network(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            format!("{value:?} is not a network; expected an address or CIDR, e.g. 10.0.0.0/8")
        })
}

/// A browser origin, as the `Origin` header spells it: `scheme://host[:port]`, lowercase,
/// no path. Anything else would never match, so it is refused rather than ignored.
fn parse_origin(value: &str) -> Result<http::HeaderValue, String> {
    let value = value.trim();
    let expected = "expected scheme://host[:port], e.g. https://app.example.com";
    let url = url::Url::parse(value)
        .map_err(|err| format!("{value:?} is not an origin ({err}); {expected}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{value:?} is not an http or https origin; {expected}"
        ));
    }
    let origin = url.origin().ascii_serialization();
    if origin != value.trim_end_matches('/') {
        return Err(format!(
            "{value:?} is not an origin as browsers send it: {origin:?} would be"
        ));
    }
    http::HeaderValue::from_str(&origin).map_err(|err| format!("{value:?}: {err}"))
}

/// `digests`, and those of the file `variable` names.
fn with_digests_from_file(
    digests: &[[u8; 32]],
    file: Option<&Path>,
    variable: &str,
) -> anyhow::Result<Vec<[u8; 32]>> {
    let mut all = digests.to_vec();
    if let Some(path) = file {
        let text = read_secret_file(path, variable)?;
        for (index, item) in text
            .expose_secret()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .enumerate()
        {
            // The item is not shown: it may be a key pasted in place of its digest.
            let digest = <[u8; 32]>::from_hex(item).map_err(|_| {
                anyhow::anyhow!(
                    "{variable}: item {} of {} is not a hex SHA-256 digest (64 characters)",
                    index + 1,
                    path.display()
                )
            })?;
            all.push(digest);
        }
    }
    Ok(all)
}

/// A secret from a file (a Docker or Kubernetes secret), without the line ending an
/// editor or `echo` leaves after it.
fn read_secret_file(path: &Path, variable: &str) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{variable}: cannot read {}", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Ok(SecretString::from(text.to_owned()))
}

/// Reads one hex SHA-256 digest. A bad value is not echoed (clap's own errors quote it):
/// an API key pasted here instead of its digest must not reach a terminal or a log.
#[derive(Clone)]
struct Sha256Hex;

impl TypedValueParser for Sha256Hex {
    type Value = [u8; 32];

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<[u8; 32], clap::Error> {
        let digest = value.to_str().map(str::trim).map(<[u8; 32]>::from_hex);
        digest.and_then(Result::ok).ok_or_else(|| {
            let arg = arg.map_or_else(String::new, |arg| format!("{arg}: "));
            let message = format!(
                "{arg}expected hex SHA-256 digests (64 characters each), comma-separated \
                 (the value is not shown: it may be a key)\n"
            );
            clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd)
        })
    }
}

/// Caps that keep one client from starving the others (HTTP/2 and gRPC abuse included).
#[derive(Debug, Clone, Args)]
pub struct LimitsConfig {
    /// Largest request message accepted, in bytes; authd's messages are well under 4 KiB.
    #[arg(
        long = "max-message-bytes",
        env = "AUTHD_MAX_MESSAGE_BYTES",
        value_name = "AUTHD_MAX_MESSAGE_BYTES",
        default_value = "16384",
        value_parser = number_within(1024_usize, 4 << 20)
    )]
    pub max_message_bytes: usize,

    /// Largest AdminService request message accepted, in bytes: an ImportUsers batch of
    /// 1000 users fits in the default.
    #[arg(
        long = "admin-max-message-bytes",
        env = "AUTHD_ADMIN_MAX_MESSAGE_BYTES",
        value_name = "AUTHD_ADMIN_MAX_MESSAGE_BYTES",
        default_value = "1048576",
        value_parser = number_within(1024_usize, 64 << 20)
    )]
    pub admin_max_message_bytes: usize,

    /// Largest request header list (metadata) accepted, in bytes.
    #[arg(
        long = "max-header-list-bytes",
        env = "AUTHD_MAX_HEADER_LIST_BYTES",
        value_name = "AUTHD_MAX_HEADER_LIST_BYTES",
        default_value = "16384",
        value_parser = number_within(1024_u32, 1 << 20)
    )]
    pub max_header_list_bytes: u32,

    /// Concurrent HTTP/2 streams per connection.
    #[arg(
        long = "max-concurrent-streams",
        env = "AUTHD_MAX_CONCURRENT_STREAMS",
        value_name = "AUTHD_MAX_CONCURRENT_STREAMS",
        default_value = "128",
        value_parser = number_within(1_u32, 10_000)
    )]
    pub max_concurrent_streams: u32,

    /// Requests in progress across all connections; beyond it, RESOURCE_EXHAUSTED at once.
    #[arg(
        long = "max-concurrent-requests",
        env = "AUTHD_MAX_CONCURRENT_REQUESTS",
        value_name = "AUTHD_MAX_CONCURRENT_REQUESTS",
        default_value = "1024",
        value_parser = number_within(1_usize, 1_000_000)
    )]
    pub max_concurrent_requests: usize,

    /// Longest time one call may take before it is cancelled.
    #[arg(
        long = "request-timeout",
        env = "AUTHD_REQUEST_TIMEOUT",
        value_name = "AUTHD_REQUEST_TIMEOUT",
        default_value = "10s",
        value_parser = duration_within(Duration::from_millis(100), Duration::from_secs(3600))
    )]
    pub request_timeout: Duration,

    /// HTTP/2 keepalive ping interval; an unanswered ping closes the connection.
    #[arg(
        long = "keepalive-interval",
        env = "AUTHD_KEEPALIVE_INTERVAL",
        value_name = "AUTHD_KEEPALIVE_INTERVAL",
        default_value = "30s",
        value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(86_400))
    )]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered.
    #[arg(
        long = "keepalive-timeout",
        env = "AUTHD_KEEPALIVE_TIMEOUT",
        value_name = "AUTHD_KEEPALIVE_TIMEOUT",
        default_value = "10s",
        value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(3600))
    )]
    pub keepalive_timeout: Duration,

    /// Login calls per minute from one client address (a token bucket of that size).
    #[arg(
        long = "login-rate-per-minute",
        env = "AUTHD_LOGIN_RATE_PER_MINUTE",
        value_name = "AUTHD_LOGIN_RATE_PER_MINUTE",
        default_value = "60"
    )]
    pub login_per_minute: NonZeroU32,

    /// Register calls per minute from one client address.
    #[arg(
        long = "register-rate-per-minute",
        env = "AUTHD_REGISTER_RATE_PER_MINUTE",
        value_name = "AUTHD_REGISTER_RATE_PER_MINUTE",
        default_value = "20"
    )]
    pub register_per_minute: NonZeroU32,

    /// How many leading bits of an IPv6 client address the per-address limits key on
    /// (a /64 is what one host usually holds).
    #[arg(
        long = "rate-limit-ipv6-prefix",
        env = "AUTHD_RATE_LIMIT_IPV6_PREFIX",
        value_name = "AUTHD_RATE_LIMIT_IPV6_PREFIX",
        default_value = "64",
        value_parser = number_within(32_u8, 128)
    )]
    pub rate_limit_ipv6_prefix: u8,
}

/// TLS for the gRPC port (rustls). Plaintext when no certificate is given, for local
/// development; production deployments set AUTHD_TLS_CERT and AUTHD_TLS_KEY.
#[derive(Debug, Clone, Args)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    #[arg(
        long = "tls-cert",
        env = "AUTHD_TLS_CERT",
        value_name = "AUTHD_TLS_CERT",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,

    /// PEM private key of the server.
    #[arg(
        long = "tls-key",
        env = "AUTHD_TLS_KEY",
        value_name = "AUTHD_TLS_KEY",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,

    /// PEM CA certificate(s) that client certificates are verified against (mTLS).
    /// Clients may still connect without one; see AUTHD_VALIDATE_REQUIRE_CLIENT_CERT.
    #[arg(
        long = "tls-client-ca",
        env = "AUTHD_TLS_CLIENT_CA",
        value_name = "AUTHD_TLS_CLIENT_CA",
        requires = "cert"
    )]
    pub client_ca: Option<PathBuf>,

    /// Require ValidateToken callers to present a client certificate signed by
    /// AUTHD_TLS_CLIENT_CA (or an API key from AUTHD_VALIDATE_API_KEYS).
    #[arg(
        long = "validate-require-client-cert",
        env = "AUTHD_VALIDATE_REQUIRE_CLIENT_CERT",
        value_name = "AUTHD_VALIDATE_REQUIRE_CLIENT_CERT",
        default_value_t = false,
        action = clap::ArgAction::Set,
        requires = "client_ca"
    )]
    pub validate_require_client_cert: bool,
}

/// Password-reset and email-verification codes, and the SMTP server that delivers them.
#[derive(Clone, Args)]
pub struct MailConfig {
    /// SMTP server for password-reset and verification emails: smtp://HOST:PORT
    /// (STARTTLS required; add ?tls=none for a plaintext local relay) or
    /// smtps://USER:PASSWORD@HOST:465. Without it, RequestPasswordReset and
    /// RequestEmailVerification answer FAILED_PRECONDITION.
    #[arg(
        long = "smtp-url",
        env = "AUTHD_SMTP_URL",
        value_name = "AUTHD_SMTP_URL",
        hide_env_values = true,
        value_parser = |value: &str| Ok::<_, String>(SecretString::from(value))
    )]
    pub smtp_url: Option<SecretString>,

    /// A file holding the SMTP URL, e.g. a mounted secret (instead of AUTHD_SMTP_URL).
    #[arg(
        long = "smtp-url-file",
        env = "AUTHD_SMTP_URL_FILE",
        value_name = "AUTHD_SMTP_URL_FILE",
        conflicts_with = "smtp_url"
    )]
    pub smtp_url_file: Option<PathBuf>,

    /// The sender of authd's emails, e.g. "Example <no-reply@example.com>".
    #[arg(
        long = "mail-from",
        env = "AUTHD_MAIL_FROM",
        value_name = "AUTHD_MAIL_FROM"
    )]
    pub mail_from: Option<String>,

    /// The link a password-reset email carries, with {code} where the code goes, e.g.
    /// https://app.example.com/reset?code={code}; without it the email carries the code.
    #[arg(
        long = "password-reset-url",
        env = "AUTHD_PASSWORD_RESET_URL",
        value_name = "AUTHD_PASSWORD_RESET_URL"
    )]
    pub reset_url: Option<String>,

    /// The link a verification email carries, with {code} where the code goes.
    #[arg(
        long = "email-verify-url",
        env = "AUTHD_EMAIL_VERIFY_URL",
        value_name = "AUTHD_EMAIL_VERIFY_URL"
    )]
    pub verify_url: Option<String>,

    /// How long a password-reset code works.
    #[arg(
        long = "password-reset-ttl",
        env = "AUTHD_PASSWORD_RESET_TTL",
        value_name = "AUTHD_PASSWORD_RESET_TTL",
        default_value = "30m",
        value_parser = duration_within(Duration::from_secs(60), Duration::from_secs(86_400))
    )]
    pub reset_ttl: Duration,

    /// How long an email-verification code works.
    #[arg(
        long = "email-verify-ttl",
        env = "AUTHD_EMAIL_VERIFY_TTL",
        value_name = "AUTHD_EMAIL_VERIFY_TTL",
        default_value = "24h",
        value_parser = duration_within(Duration::from_secs(60), Duration::from_secs(30 * 86_400))
    )]
    pub verify_ttl: Duration,

    /// Password-reset emails sent to one account per hour (verification emails alike);
    /// reset requests beyond are answered as usual and send nothing.
    #[arg(
        long = "password-reset-per-hour",
        env = "AUTHD_PASSWORD_RESET_PER_HOUR",
        value_name = "AUTHD_PASSWORD_RESET_PER_HOUR",
        default_value = "5",
        value_parser = number_within(1_u32, 1_000)
    )]
    pub reset_per_hour: u32,

    /// Emails waiting to be sent, at most; beyond, an email is dropped (logged and
    /// audited), so a dead mail server cannot grow memory.
    #[arg(
        long = "mail-queue",
        env = "AUTHD_MAIL_QUEUE",
        value_name = "AUTHD_MAIL_QUEUE",
        default_value = "1000",
        value_parser = number_within(1_usize, 1_000_000)
    )]
    pub mail_queue: usize,

    /// Tries per email before it is given up (logged and audited).
    #[arg(
        long = "mail-attempts",
        env = "AUTHD_MAIL_ATTEMPTS",
        value_name = "AUTHD_MAIL_ATTEMPTS",
        default_value = "6",
        value_parser = number_within(1_u32, 30)
    )]
    pub mail_attempts: u32,

    /// The wait after an email's first failed try; it doubles after each (the default
    /// six tries span about a minute).
    #[arg(
        long = "mail-retry-backoff",
        env = "AUTHD_MAIL_RETRY_BACKOFF",
        value_name = "AUTHD_MAIL_RETRY_BACKOFF",
        default_value = "2s",
        value_parser = duration_within(Duration::from_millis(10), Duration::from_secs(600))
    )]
    pub mail_retry_backoff: Duration,
}

// The SMTP URL may carry a password: show only whether it is set.
impl fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailConfig")
            .field(
                "smtp",
                &(self.smtp_url.is_some() || self.smtp_url_file.is_some()),
            )
            .field("mail_from", &self.mail_from)
            .field("reset_url", &self.reset_url)
            .field("verify_url", &self.verify_url)
            .field("reset_ttl", &self.reset_ttl)
            .field("verify_ttl", &self.verify_ttl)
            .field("reset_per_hour", &self.reset_per_hour)
            .field("mail_queue", &self.mail_queue)
            .field("mail_attempts", &self.mail_attempts)
            .field("mail_retry_backoff", &self.mail_retry_backoff)
            .finish()
    }
}

impl MailConfig {
    /// How long codes live and how many an account may be sent.
    pub fn code_policy(&self) -> CodePolicy {
        CodePolicy {
            reset_ttl: self.reset_ttl,
            verify_ttl: self.verify_ttl,
            per_hour: self.reset_per_hour,
        }
    }

    /// How mail is sent; `None` without AUTHD_SMTP_URL.
    pub fn settings(&self) -> anyhow::Result<Option<MailSettings>> {
        let from_file = self
            .smtp_url_file
            .as_deref()
            .map(|path| read_secret_file(path, "AUTHD_SMTP_URL_FILE"))
            .transpose()?;
        let Some(url) = self.smtp_url.as_ref().or(from_file.as_ref()) else {
            return Ok(None);
        };
        let transport = smtp_transport(url.expose_secret())
            .map_err(|err| anyhow::anyhow!("AUTHD_SMTP_URL: {err}"))?;
        let from = self
            .mail_from
            .as_deref()
            .context("AUTHD_MAIL_FROM: required when AUTHD_SMTP_URL is set")?;
        let from = from.parse().map_err(|err| {
            anyhow::anyhow!("AUTHD_MAIL_FROM: expected an address such as \"Example <no-reply@example.com>\" ({err})")
        })?;
        let link = |template: &Option<String>, variable: &str| {
            template
                .as_deref()
                .map(LinkTemplate::new)
                .transpose()
                .map_err(|err| anyhow::anyhow!("{variable}: {err}"))
        };
        Ok(Some(MailSettings {
            transport,
            from,
            reset_link: link(&self.reset_url, "AUTHD_PASSWORD_RESET_URL")?,
            verify_link: link(&self.verify_url, "AUTHD_EMAIL_VERIFY_URL")?,
            queue: self.mail_queue,
            attempts: self.mail_attempts,
            backoff: self.mail_retry_backoff,
        }))
    }
}

/// Names the setting an operator fixes for a failure that comes from one: a database
/// that will not open, a stored key the master key does not open.
pub fn name_the_setting(err: anyhow::Error) -> anyhow::Error {
    let is = |check: fn(&(dyn std::error::Error + 'static)) -> bool| err.chain().any(check);
    if is(|cause| cause.is::<CannotOpen>()) {
        err.context("AUTHD_DATABASE_URL")
    } else if is(|cause| cause.is::<SealError>()) {
        err.context("AUTHD_MASTER_KEY (or AUTHD_MASTER_KEY_FILE)")
    } else {
        err
    }
}

/// Parses "90s", "15m", "7d", "1h 30m" and the like.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|_| "expected a duration such as \"90s\", \"15m\" or \"7d\"".to_owned())
}

/// The longest lifetime a token or session may be given: far inside what dates and
/// stored timestamps can hold.
const TEN_YEARS: Duration = Duration::from_secs(3650 * 86_400);

/// A duration parser refusing values outside `min..=max`: zero where zero means nothing
/// (an interval of zero spins or panics a timer), and values so large that date arithmetic
/// or a stored timestamp would overflow.
fn duration_within(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value| {
        let duration = parse_duration(value)?;
        if (min..=max).contains(&duration) {
            Ok(duration)
        } else {
            Err(format!(
                "expected a duration from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ))
        }
    }
}

const fn non_zero(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

/// A number parser refusing values outside `min..=max`.
fn number_within<T>(
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy + Send + Sync + 'static,
{
    move |value| {
        let number = value
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| (min..=max).contains(n));
        number.ok_or_else(|| format!("expected a whole number from {min} to {max}"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn cors_origins_are_origins_as_browsers_send_them() {
        let parsed = Cli::try_parse_from([
            "authd",
            "--cors-origins",
            "https://app.example.com,http://127.0.0.1:8000/",
        ])
        .unwrap();
        assert_eq!(
            parsed.config.cors_origins,
            ["https://app.example.com", "http://127.0.0.1:8000"]
        );
        for (bad, says) in [
            ("*", "is not an origin"),
            ("app.example.com", "is not an origin"),
            ("ftp://app.example.com", "not an http or https origin"),
            (
                "https://App.Example.com",
                "\"https://app.example.com\" would be",
            ),
            (
                "https://app.example.com/login",
                "\"https://app.example.com\" would be",
            ),
            (
                "https://app.example.com:443",
                "\"https://app.example.com\" would be",
            ),
        ] {
            let err = Cli::try_parse_from(["authd", "--cors-origins", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"))
                .to_string();
            assert!(
                err.contains("AUTHD_CORS_ORIGINS") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Cli::parse_from(["authd"]).config;
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(config.tokens.access_ttl, Duration::from_secs(15 * 60));
        assert_eq!(
            config.tokens.refresh_ttl,
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(config.tokens.clock_leeway, Duration::from_secs(5));
        assert_eq!(config.tokens.algorithm, JwtAlgorithm::EdDsa);
        assert_eq!(config.database.backend(), "sqlite");
    }

    #[test]
    fn api_key_digests_are_read_as_bytes() {
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let config = Cli::parse_from([
            "authd",
            "--validate-api-keys",
            &format!("{digest}, {}", digest.to_uppercase()),
        ])
        .config;
        assert_eq!(config.validate_api_keys.len(), 2);
        assert_eq!(config.validate_api_keys[0], config.validate_api_keys[1]);
        assert_eq!(config.validate_api_keys[0][..2], [0x9f, 0x86]);
        for bad in [&digest[1..], &digest.replace('9', "g"), "raw-api-key-42"] {
            let Err(err) = Cli::try_parse_from(["authd", "--validate-api-keys", bad]) else {
                panic!("{bad:?} was accepted");
            };
            let err = err.to_string();
            assert!(err.contains("expected hex SHA-256 digests"), "{err}");
            assert!(!err.contains(bad), "the value was echoed: {err}");
        }
    }

    #[test]
    fn durations_are_read_in_human_form() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("soon").unwrap_err().contains("15m"));
    }

    #[test]
    fn the_database_url_never_prints() {
        let config = Cli::parse_from([
            "authd",
            "--database-url",
            "postgres://authd:hunter2@db.internal/authd",
        ])
        .config;
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgres"));
    }
}
