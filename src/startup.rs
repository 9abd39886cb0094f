//! Building and running the server: `App::build` opens the database, migrates it, loads
//! the keys and binds the listener; `App::run_until_stopped` serves until the shutdown
//! future resolves, then drains in-flight calls, stops the background tasks and closes
//! the pool.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::Utc;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};
use tower::{limit::GlobalConcurrencyLimitLayer, util::MapResponseLayer};

use crate::{
    auth::{
        Auditor, Authenticator, AuthenticatorParts, KeySealer, Keyring, PASSWORD_MIN_CHARS_FLOOR,
        PasswordHasher, PasswordPolicy, Purged, Purger, RefreshKey, Retention, Revocations,
    },
    config::{Config, HashingConfig, LimitsConfig, TlsConfig, TokenConfig},
    grpc::{
        AuthGrpc, PeerRateLimits, ValidateCallers, capped, oversize_message_is_resource_exhausted,
    },
    proto::auth::v1::{FILE_DESCRIPTOR_SET, auth_service_server::AuthServiceServer},
    store::{self, DatabaseHealth, SessionStore, SqlStore, ThrottleRule},
};

/// The gRPC name of the auth service, as the health service reports it.
const AUTH_SERVICE_NAME: &str = "auth.v1.AuthService";

/// A built server, bound and ready to run.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: SqlStore,
    auth: Arc<Authenticator>,
    validate_callers: ValidateCallers,
    rate_limits: Arc<PeerRateLimits>,
    limits: LimitsConfig,
    tls: Option<ServerTlsConfig>,
    keys: KeyReload,
    revocations: Arc<Revocations>,
    purger: Purger,
    purge_interval: Duration,
    reflection: bool,
    health_probe_interval: Duration,
}

impl App {
    /// Counts the SQL statements this server runs, for tests and diagnostics.
    pub fn query_counter(&self) -> crate::store::QueryCounter {
        self.store.query_counter()
    }

    /// Binds the listener, connects to and migrates the database, loads (or creates) the
    /// signing keys and reads recent revocations.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Bind first: a taken port should fail before anything touches the database.
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("AUTHD_LISTEN: cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        // Then everything that needs only the configuration, so a mistake there stops
        // start-up before the database is touched.
        config.validate()?;
        let sealer = key_sealer(&config)?;
        let policy = password_policy(&config.hashing)?;
        let hasher = PasswordHasher::new(&config.hashing)?;
        let tls = server_tls(&config.tls)?;
        let mut validate_callers =
            ValidateCallers::with_api_key_digests(config.validate_api_keys.clone());
        if config.tls.validate_require_client_cert {
            validate_callers = validate_callers.accepting_client_certs();
        }

        let db = store::connect(&config.database).await?;
        let store = SqlStore::new(db.clone(), &config.database);
        let store_arc = Arc::new(store.clone());
        // On a first start the signing key and the refresh key are made under the same lock
        // as the schema, so replicas started together all settle on the same ones.
        let (keyring, refresh_key) = store::migrate_then(&db, &config.database, async || {
            let keyring =
                Keyring::load(store_arc.as_ref(), &config.tokens, &sealer, Utc::now()).await?;
            let refresh_key = RefreshKey::load_or_create(store_arc.as_ref(), &sealer).await?;
            Ok((keyring, refresh_key))
        })
        .await?;
        let revocations = Arc::new(Revocations::new(
            config.tokens.access_ttl,
            config.tokens.clock_leeway,
            config.revocation_sync,
        ));
        revocations
            .sync(store_arc.as_ref(), Utc::now())
            .await
            .context("reading revoked sessions")?;
        let throttle_rule = ThrottleRule {
            max_failures: config.login.max_failures,
            base_window_ms: millis(config.login.window),
            max_window_ms: millis(config.login.max_window),
        };
        let auth = Arc::new(Authenticator::new(AuthenticatorParts {
            users: store_arc.clone(),
            sessions: store_arc.clone(),
            throttle: store_arc.clone(),
            throttle_rule,
            auditor: Auditor::new(store_arc.clone()),
            refresh_key,
            refresh_reuse_grace: config.tokens.refresh_reuse_grace,
            hasher,
            policy,
            keyring,
            revocations: Arc::clone(&revocations),
            refresh_ttl: config.tokens.refresh_ttl,
            session_max_age: config.tokens.session_max_age,
        }));
        let rate_limits = Arc::new(PeerRateLimits::per_minute(
            config.limits.login_per_minute,
            config.limits.register_per_minute,
            config.limits.rate_limit_ipv6_prefix,
        ));

        Ok(Self {
            listener,
            local_addr,
            store,
            auth,
            validate_callers,
            rate_limits,
            limits: config.limits,
            tls,
            keys: KeyReload {
                sealer,
                tokens: config.tokens.clone(),
            },
            purger: Purger::new(
                store_arc.clone(),
                Retention {
                    session_after_end: revocations.retention()
                        + crate::auth::CLOCK_SKEW_ALLOWANCE
                        + config.revocation_sync,
                    idle_login_throttle: config.login.max_window.max(Duration::from_secs(86_400)),
                    audit_events: config.audit_retention,
                },
            ),
            purge_interval: config.purge_interval,
            revocations,
            reflection: config.reflection,
            health_probe_interval: config.health_probe_interval,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops gracefully.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let health = HealthReporter::new();
        // NOT_SERVING until the first database probe answers.
        set_health(&health, ServingStatus::NotServing).await;

        let tasks = [
            spawn_health_probe(
                health.clone(),
                self.store.clone(),
                self.health_probe_interval,
                stop_rx.clone(),
            ),
            spawn_revocation_sync(
                Arc::clone(&self.revocations),
                self.store.clone(),
                stop_rx.clone(),
            ),
            spawn_rate_limit_cleanup(Arc::clone(&self.rate_limits), stop_rx.clone()),
            spawn_purge(self.purger, self.purge_interval, stop_rx.clone()),
            spawn_key_reload(
                self.keys,
                Arc::clone(&self.auth),
                self.store.clone(),
                stop_rx,
            ),
        ];

        let limits = &self.limits;
        // Every service on the port gets the same message and metadata caps.
        let metadata_cap = limits.max_header_list_bytes as usize;
        let (reflection_v1, reflection_v1alpha) = if self.reflection {
            let builder = || {
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            };
            let v1 = builder()
                .build_v1()
                .context("building the reflection service")?
                .max_decoding_message_size(limits.max_message_bytes);
            let v1alpha = builder()
                .build_v1alpha()
                .context("building the reflection service")?
                .max_decoding_message_size(limits.max_message_bytes);
            (
                Some(capped(v1, metadata_cap)),
                Some(capped(v1alpha, metadata_cap)),
            )
        } else {
            (None, None)
        };

        tracing::info!(address = %self.local_addr, "authd listening");
        let health_on_shutdown = health.clone();
        let auth_service = capped(
            AuthServiceServer::new(AuthGrpc::new(
                self.auth,
                self.validate_callers,
                self.rate_limits,
            ))
            .max_decoding_message_size(limits.max_message_bytes),
            metadata_cap,
        );
        let health_service = capped(
            HealthServer::new(HealthService::from_health_reporter(health))
                .max_decoding_message_size(limits.max_message_bytes),
            metadata_cap,
        );
        let mut server = Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls).context("configuring TLS")?;
        }
        let result = server
            .timeout(limits.request_timeout)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .max_concurrent_streams(limits.max_concurrent_streams)
            // A backstop well above the metadata limit the interceptor enforces.
            .http2_max_header_list_size(limits.max_header_list_bytes.saturating_mul(4))
            // Beyond the global limit a call is refused at once (RESOURCE_EXHAUSTED)
            // instead of queueing behind the others.
            .load_shed(true)
            .layer(GlobalConcurrencyLimitLayer::new(
                limits.max_concurrent_requests,
            ))
            .layer(MapResponseLayer::new(
                oversize_message_is_resource_exhausted,
            ))
            .trace_fn(|request| tracing::info_span!("rpc", method = %request.uri().path()))
            .add_service(health_service)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(auth_service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                async move {
                    shutdown.await;
                    tracing::info!("shutting down: finishing in-flight calls");
                    set_health(&health_on_shutdown, ServingStatus::NotServing).await;
                },
            )
            .await
            .context("serving gRPC");

        let _ = stop_tx.send(true);
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "background task failed");
            }
        }
        self.store
            .connection()
            .clone()
            .close()
            .await
            .context("closing the database pool")?;
        tracing::info!("authd stopped");
        result
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(AUTH_SERVICE_NAME, status).await;
}

/// Flips the health status with the database's state: NOT_SERVING while it cannot be
/// reached, and while it refuses writes (out of space, read-only).
fn spawn_health_probe(
    health: HealthReporter,
    store: SqlStore,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut serving = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            let up = match store.check().await {
                DatabaseHealth::Serving => true,
                // The store logs this, naming the database, when it begins and ends.
                DatabaseHealth::RefusingWrites => false,
                DatabaseHealth::Unreachable(err) => {
                    if serving != Some(false) {
                        let err = anyhow::Error::from(err);
                        tracing::warn!(error = %format!("{err:#}"), "database unreachable");
                    }
                    false
                }
            };
            if serving != Some(up) {
                let status = if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                set_health(&health, status).await;
                if serving.is_some() && up {
                    tracing::info!("database serving again");
                }
                serving = Some(up);
            }
        }
    })
}

fn spawn_revocation_sync(
    revocations: Arc<Revocations>,
    store: SqlStore,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let store: &dyn SessionStore = &store;
        revocations.run(store, stop).await;
    })
}

/// The master key that seals private keys at rest, from AUTHD_MASTER_KEY or its file.
fn key_sealer(config: &Config) -> anyhow::Result<KeySealer> {
    let from_file = match &config.tokens.master_key_file {
        Some(path) => Some(secrecy::SecretString::from(
            std::fs::read_to_string(path).with_context(|| {
                format!("AUTHD_MASTER_KEY_FILE: cannot read {}", path.display())
            })?,
        )),
        None => None,
    };
    let sealer = KeySealer::new(config.tokens.master_key.as_ref().or(from_file.as_ref()))?;
    if !sealer.is_sealing() {
        if config.listen.ip().is_loopback() {
            tracing::info!(
                "no AUTHD_MASTER_KEY: private keys are stored unsealed (fine for local development)"
            );
        } else {
            tracing::warn!(
                "NO AUTHD_MASTER_KEY: private signing keys are stored UNENCRYPTED in the database; \
                 anyone with a copy of it can mint valid tokens. Set AUTHD_MASTER_KEY or AUTHD_MASTER_KEY_FILE."
            );
        }
    }
    Ok(sealer)
}

/// The rustls configuration from the certificate files, or `None` for plaintext.
fn server_tls(config: &TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, variable: &str| {
        std::fs::read(path).with_context(|| format!("{variable}: cannot read {}", path.display()))
    };
    let identity = Identity::from_pem(read(cert, "AUTHD_TLS_CERT")?, read(key, "AUTHD_TLS_KEY")?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.client_ca {
        // Client certificates are verified when presented but not demanded of every
        // connection: end users log in without one; ValidateToken may demand one.
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca, "AUTHD_TLS_CLIENT_CA")?))
            .client_auth_optional(true);
    }
    Ok(Some(tls))
}

/// What the key reload task needs.
#[derive(Debug)]
struct KeyReload {
    sealer: KeySealer,
    tokens: TokenConfig,
}

/// Re-reads the signing keys every reload interval, applying the rotation schedule, so
/// every replica publishes, uses and retires keys on time.
fn spawn_key_reload(
    keys: KeyReload,
    auth: Arc<Authenticator>,
    store: SqlStore,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(keys.tokens.key_reload_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            match Keyring::load(&store, &keys.tokens, &keys.sealer, Utc::now()).await {
                Ok(keyring) => auth.replace_keyring(keyring),
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "reloading signing keys failed")
                }
            }
        }
    })
}

/// Purges what can no longer matter every `interval` (see `auth::purge`); every replica
/// does, which costs nothing but a few empty deletes.
fn spawn_purge(
    purger: Purger,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            let (purged, failed) = match purger.run_once(Utc::now()).await {
                Ok(purged) => (purged, None),
                Err((purged, err)) => (purged, Some(err)),
            };
            if purged != Purged::default() {
                tracing::info!(?purged, "purged ended sessions, idle counters, old events");
            }
            if let Some(err) = failed {
                let err = anyhow::Error::from(err);
                tracing::warn!(error = %format!("{err:#}"), "purge failed; retried next time");
            }
        }
    })
}

/// Drops rate-limit buckets of addresses that went quiet, once a minute.
fn spawn_rate_limit_cleanup(
    limits: Arc<PeerRateLimits>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = ticker.tick() => limits.forget_idle(),
                _ = stop.changed() => return,
            }
        }
    })
}

/// The password policy from config, refusing a minimum below the floor.
pub fn password_policy(config: &HashingConfig) -> anyhow::Result<PasswordPolicy> {
    let min = config.password_min_length;
    anyhow::ensure!(
        min >= PASSWORD_MIN_CHARS_FLOOR,
        "AUTHD_PASSWORD_MIN_LENGTH: expected at least {PASSWORD_MIN_CHARS_FLOOR}, got {min}"
    );
    Ok(PasswordPolicy { min_chars: min })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
