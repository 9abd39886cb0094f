//! Building and running the server: `App::build` opens the database, migrates it, loads
//! the keys and binds the listener; `App::run_until_stopped` serves until the shutdown
//! future resolves, then drains in-flight calls, stops the background tasks and closes
//! the pool.

mod accept;
mod shutdown;
mod tasks;
mod tls;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::Stream;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};
use tonic_web::GrpcWebLayer;
use tower::{limit::GlobalConcurrencyLimitLayer, load_shed::LoadShedLayer, util::MapResponseLayer};

use self::{accept::Accepting, shutdown::Stage, tasks::KeyReload, tls::ReloadingTls};
use crate::{
    auth::{
        AccountMail, AccountRules, AccountStores, Accounts, Auditor, Authenticator, Clock,
        Credentials, KeySealer, Keyring, Mailer, Purger, RefreshKey, Retention, Revocations,
        SessionPolicy, Stores, SystemClock, TokenKeys,
    },
    config::{Config, LimitsConfig, name_the_setting},
    grpc::{
        AccessLogLayer, AdminGate, AdminGrpc, ApiKeys, AuthGrpc, ExtAuthz, JwksLayer,
        PeerRateLimits, TrustedProxies, ValidateCallers, capped, cors_layer,
        oversize_message_is_resource_exhausted,
    },
    mail::{self, Delivery},
    metrics::{self, Gauges, GrpcMetricsLayer, Metrics, Reading, Value},
    proto::auth::v1::{
        FILE_DESCRIPTOR_SET, admin_service_server::AdminServiceServer,
        auth_service_server::AuthServiceServer,
    },
    store::{self, SqlStore, ThrottleRule},
};

/// A built server, bound and ready to run.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: SqlStore,
    auth: Arc<Authenticator>,
    accounts: Arc<Accounts>,
    /// Roles whose tokens, and keys whose holders, may call AdminService.
    admin_roles: Vec<String>,
    admin_keys: ApiKeys,
    validate_callers: ValidateCallers,
    rate_limits: Arc<PeerRateLimits>,
    limits: LimitsConfig,
    /// TLS, reloaded when its files change; `None` for plaintext.
    tls: Option<Arc<ReloadingTls>>,
    keys: KeyReload,
    revocations: Arc<Revocations>,
    purger: Purger,
    purge_interval: Duration,
    reflection: bool,
    /// Origins whose pages may call over gRPC-Web.
    cors_origins: Vec<http::HeaderValue>,
    trusted_proxies: TrustedProxies,
    /// Where `/metrics` is served, when it is.
    metrics_listener: Option<TcpListener>,
    health_probe_interval: Duration,
    shutdown_drain: Duration,
    /// Sends the queued emails; `None` without SMTP.
    mail_delivery: Option<Delivery>,
    clock: Arc<dyn Clock>,
}

impl App {
    /// Counts the SQL statements this server runs, for tests and diagnostics.
    pub fn query_counter(&self) -> crate::store::QueryCounter {
        self.store.query_counter()
    }

    /// Binds the listener, connects to and migrates the database, loads (or creates) the
    /// signing keys and reads recent revocations.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Self::build`], reading the time from `clock`.
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // Bind first: a taken port should fail before anything touches the database.
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("AUTHD_LISTEN: cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(metrics::bind(address).await?),
            None => None,
        };
        // Then everything that needs only the configuration, so a mistake there stops
        // start-up before the database is touched.
        config.validate()?;
        let sealer = key_sealer(&config)?;
        let policy = config.hashing.password_policy()?;
        let roles = config.roles.roles()?;
        let hasher = config.hashing.hasher()?;
        let token_settings = config.tokens.settings()?;
        let mail_settings = config.mail.settings()?;
        let tls = ReloadingTls::from_config(&config.tls)?.map(Arc::new);
        let admin_api_keys = config.admin_api_key_digests()?;
        let mut validate_callers =
            ValidateCallers::with_api_key_digests(config.validate_api_key_digests()?);
        if config.tls.validate_require_client_cert {
            validate_callers = validate_callers.accepting_client_certs();
        }

        let database = config.database.settings()?;
        let db = store::connect(&database).await.map_err(name_the_setting)?;
        let store = SqlStore::new(db.clone(), &database);
        let store_arc = Arc::new(store.clone());
        // On a first start the signing key and the refresh key are made under the same lock
        // as the schema, so replicas started together all settle on the same ones.
        let (keyring, refresh_key) = store::migrate_then(&db, &database, async || {
            let now = clock.now();
            let keyring = Keyring::load(store_arc.as_ref(), &token_settings, &sealer, now).await?;
            let refresh_key = RefreshKey::load_or_create(store_arc.as_ref(), &sealer, now).await?;
            Ok((keyring, refresh_key))
        })
        .await
        .map_err(name_the_setting)?;
        let revocations = Arc::new(Revocations::new(
            config.tokens.access_ttl,
            config.tokens.clock_leeway,
            config.revocation_sync,
        ));
        revocations
            .sync(store_arc.as_ref(), store_arc.as_ref(), clock.now())
            .await
            .context("reading revoked sessions")?;
        let throttle_rule = ThrottleRule {
            max_failures: config.login.max_failures,
            base_window_ms: millis(config.login.window),
            max_window_ms: millis(config.login.max_window),
        };
        let (mailer, mail_delivery) = match mail_settings {
            Some(settings) => {
                let auditor = Auditor::new(store_arc.clone());
                let (mailer, delivery) = mail::mailer(settings, auditor, Arc::clone(&clock));
                (Some(mailer as Arc<dyn Mailer>), Some(delivery))
            }
            None => (None, None),
        };
        let accounts = Arc::new(Accounts::new(
            AccountStores {
                users: store_arc.clone(),
                sessions: store_arc.clone(),
                codes: store_arc.clone(),
                audit: store_arc.clone(),
            },
            AccountRules {
                hasher: hasher.clone(),
                policy,
                roles: roles.clone(),
                reset_ttl: config.mail.code_policy().reset_ttl,
            },
            Arc::clone(&revocations),
            Arc::clone(&clock),
        ));
        let auth = Arc::new(Authenticator::new(
            Stores {
                users: store_arc.clone(),
                sessions: store_arc.clone(),
                throttle: store_arc.clone(),
                audit: store_arc.clone(),
                codes: store_arc.clone(),
            },
            Credentials {
                hasher,
                policy,
                throttle: throttle_rule,
                default_role: roles.default_role().to_owned(),
            },
            TokenKeys {
                keyring,
                refresh_key,
            },
            SessionPolicy {
                refresh_ttl: config.tokens.refresh_ttl,
                max_age: config.tokens.session_max_age,
                reuse_grace: config.tokens.refresh_reuse_grace,
            },
            AccountMail {
                policy: config.mail.code_policy(),
                mailer,
            },
            Arc::clone(&revocations),
            Arc::clone(&clock),
        ));
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
            accounts,
            admin_roles: config.admin_roles,
            admin_keys: ApiKeys::new(admin_api_keys),
            validate_callers,
            rate_limits,
            limits: config.limits,
            tls,
            keys: KeyReload {
                sealer,
                settings: token_settings,
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
            cors_origins: config.cors_origins,
            trusted_proxies: TrustedProxies::new(config.trusted_proxies),
            metrics_listener,
            health_probe_interval: config.health_probe_interval,
            shutdown_drain: config.shutdown_drain,
            mail_delivery,
            clock,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until the first of `signals` (SIGINT, SIGTERM), then stops gracefully (see
    /// [`shutdown`]); a second signal stops at once.
    pub async fn run_until_stopped(
        self,
        signals: impl Stream<Item = ()> + Send + Unpin + 'static,
    ) -> anyhow::Result<()> {
        let (stage_tx, stage) = watch::channel(Stage::Serving);
        let stages = tokio::spawn(shutdown::run_stages(signals, self.shutdown_drain, stage_tx));
        let (stop_tx, stop_rx) = watch::channel(false);
        let health = HealthReporter::new();
        // NOT_SERVING until the first database probe answers.
        set_health(&health, ServingStatus::NotServing).await;
        let database_ok = Arc::new(AtomicBool::new(false));
        let jwks = JwksLayer::new(Arc::clone(&self.auth), self.keys.jwks_max_age());

        let mut tasks = vec![
            tasks::health_probe(
                Arc::clone(&database_ok),
                self.store.clone(),
                self.health_probe_interval,
                stop_rx.clone(),
            ),
            tasks::health_view(
                health.clone(),
                database_ok,
                Arc::clone(&self.revocations),
                Arc::clone(&self.clock),
                stage.clone(),
            ),
            tasks::revocation_sync(
                Arc::clone(&self.revocations),
                self.store.clone(),
                Arc::clone(&self.clock),
                stop_rx.clone(),
            ),
            tasks::rate_limit_cleanup(Arc::clone(&self.rate_limits), stop_rx.clone()),
            tasks::purge(
                self.purger,
                self.purge_interval,
                Arc::clone(&self.clock),
                stop_rx.clone(),
            ),
            tasks::key_reload(
                self.keys,
                Arc::clone(&self.auth),
                self.store.clone(),
                self.clock,
                stop_rx.clone(),
            ),
        ];
        if let Some(delivery) = self.mail_delivery {
            tasks.push(tokio::spawn(delivery.run(stop_rx.clone())));
        }
        let methods = served_methods()?;
        let paths = methods.iter().map(|(path, _)| path.clone()).collect();
        let metrics = match self.metrics_listener {
            Some(listener) => {
                let metrics = Arc::new(Metrics::new(methods)?);
                let gauges = Arc::new(ServerVitals(Arc::clone(&self.auth)));
                tasks.push(tokio::spawn(metrics::serve(
                    listener,
                    Arc::clone(&metrics),
                    gauges,
                    stop_rx,
                )));
                Some(GrpcMetricsLayer::new(metrics))
            }
            None => None,
        };

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

        let admin_service = capped(
            tonic::service::interceptor::InterceptedService::new(
                AdminServiceServer::new(AdminGrpc::new(
                    Arc::clone(&self.accounts),
                    self.auth.page_tokens()?,
                ))
                .max_decoding_message_size(limits.admin_max_message_bytes),
                // Before the message is read: a caller who may not call pays nothing.
                AdminGate::new(
                    Arc::clone(&self.auth),
                    self.accounts,
                    self.admin_roles,
                    self.admin_keys,
                    Arc::clone(&self.rate_limits),
                ),
            ),
            metadata_cap,
        );

        tracing::info!(address = %self.local_addr, "authd listening");
        // CheckRequests carry the whole HTTP request's headers: the AuthService cap.
        let ext_authz_service = capped(
            AuthorizationServer::new(ExtAuthz::new(
                Arc::clone(&self.auth),
                self.validate_callers.clone(),
            ))
            .max_decoding_message_size(limits.max_message_bytes),
            metadata_cap,
        );
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
        let server = Server::builder();
        let router = server
            // The key set for gateways that fetch it by URL, over HTTP/1.1 or HTTP/2.
            .layer(jwks)
            // gRPC-Web from browsers, over HTTP/1.1 too, on the same port.
            .accept_http1(true)
            .layer(tower::util::option_layer(cors_layer(self.cors_origins)))
            .layer(GrpcWebLayer::new())
            // Inside gRPC-Web, so every call is seen as gRPC, whichever way it came.
            .layer(tower::util::option_layer(metrics))
            .layer(AccessLogLayer::new(self.trusted_proxies, paths))
            .timeout(limits.request_timeout)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .max_concurrent_streams(limits.max_concurrent_streams)
            // A backstop well above the metadata limit the interceptor enforces.
            .http2_max_header_list_size(limits.max_header_list_bytes.saturating_mul(4))
            // Beyond the global limit a call is refused at once (RESOURCE_EXHAUSTED)
            // instead of queueing behind the others; inside the access log and the
            // metrics, which count the refusals.
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(
                limits.max_concurrent_requests,
            ))
            .layer(MapResponseLayer::new(
                oversize_message_is_resource_exhausted,
            ))
            .add_service(health_service)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(auth_service)
            .add_service(admin_service)
            .add_service(ext_authz_service);
        let incoming = Accepting::new(TcpIncoming::from(self.listener).with_nodelay(Some(true)));
        let stop_accepting = shutdown::reached(stage.clone(), Stage::Finishing);
        let serve: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match self.tls {
                Some(tls) => Box::pin(
                    router.serve_with_incoming_shutdown(tls.accept(incoming), stop_accepting),
                ),
                None => Box::pin(router.serve_with_incoming_shutdown(incoming, stop_accepting)),
            };
        let result = tokio::select! {
            result = serve => result.context("serving gRPC"),
            () = shutdown::reached(stage, Stage::Stopping) => Ok(()),
        };
        stages.abort();

        // Background tasks stop between steps; one stuck on the database is dropped.
        let _ = stop_tx.send(true);
        let deadline = tokio::time::Instant::now() + shutdown::CLEANUP_GRACE;
        for mut task in tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "background task failed"),
                Err(_) => task.abort(),
            }
        }
        let pool = self.store.connection().clone();
        let deadline = deadline + shutdown::CLEANUP_GRACE;
        match tokio::time::timeout_at(deadline, pool.close()).await {
            Ok(closed) => closed.context("closing the database pool")?,
            Err(_) => tracing::warn!("the database did not answer the pool's goodbyes; left"),
        }
        tracing::info!("authd stopped");
        result
    }
}

/// Every method the port serves, with its go-grpc-prometheus type.
fn served_methods() -> anyhow::Result<Vec<(String, &'static str)>> {
    use prost::Message as _;
    let ours = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .context("reading the API's descriptor set")?;
    let mut methods: Vec<(String, &'static str)> = ours
        .file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    let kind = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    (path, kind)
                })
            })
        })
        .collect();
    methods.extend(
        [
            ("/grpc.health.v1.Health/Check", "unary"),
            ("/grpc.health.v1.Health/Watch", "server_stream"),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "bidi_stream",
            ),
            (
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                "bidi_stream",
            ),
            ("/envoy.service.auth.v3.Authorization/Check", "unary"),
        ]
        .map(|(path, kind)| (path.to_owned(), kind)),
    );
    Ok(methods)
}

/// authd's own series, read from the authenticator at each scrape.
struct ServerVitals(Arc<Authenticator>);

impl Gauges for ServerVitals {
    fn read(&self) -> Vec<Reading> {
        let vitals = self.0.vitals();
        let reading = |name, help, value| Reading { name, help, value };
        let mut readings = vec![
            reading(
                "authd_password_hashes_in_flight",
                "Password hashes running or waiting for a hash thread",
                Value::Gauge(vitals.hashes_in_flight as f64),
            ),
            reading(
                "authd_validate_cache_hits_total",
                "Token validations answered from the verified-token cache",
                Value::Total(vitals.verified_cache_hits),
            ),
            reading(
                "authd_validate_cache_misses_total",
                "Token validations that had to verify a signature",
                Value::Total(vitals.verified_cache_misses),
            ),
            reading(
                "authd_signing_key_age_seconds",
                "Age of the key that signs access tokens",
                Value::Gauge(vitals.signing_key_age.as_secs_f64()),
            ),
        ];
        if let Some(age) = vitals.revocation_sync_age {
            readings.push(reading(
                "authd_revocation_sync_age_seconds",
                "Time since this replica last read revocations from the database",
                Value::Gauge(age.as_secs_f64()),
            ));
        }
        readings
    }
}

/// Sets the server's overall status and the auth service's, which go together.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    match status {
        ServingStatus::Serving => health.set_serving::<AuthServiceServer<AuthGrpc>>().await,
        _ => {
            health
                .set_not_serving::<AuthServiceServer<AuthGrpc>>()
                .await
        }
    }
}

/// The master key that seals private keys at rest, from AUTHD_MASTER_KEY or its file.
fn key_sealer(config: &Config) -> anyhow::Result<KeySealer> {
    let master_key = config.tokens.master_key()?;
    let sealer = KeySealer::new(master_key.as_ref()).context("AUTHD_MASTER_KEY")?;
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

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
