//! The `authd` command line: `serve`, `migrate`, `user` and `healthcheck`.

use std::{
    io::{BufRead as _, IsTerminal as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait as _};
use sea_orm::DatabaseConnection;
use tonic::transport::{Certificate, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    auth::{Accounts, AuthError, NewAccount, SystemClock},
    config::{Config, DatabaseConfig, HashingConfig, name_the_setting, parse_duration},
    startup::App,
    store::{self, DatabaseSettings, SqlStore},
    telemetry::LogFormat,
};

/// authd: gRPC authentication service.
#[derive(Debug, Parser)]
#[command(name = "authd", version, about)]
pub struct Cli {
    /// Log filter, e.g. "info" or "authd=debug,info".
    #[arg(
        long,
        global = true,
        env = "AUTHD_LOG",
        value_name = "AUTHD_LOG",
        default_value = "info"
    )]
    pub log: String,

    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "AUTHD_LOG_FORMAT",
        value_name = "AUTHD_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database, then serve gRPC until SIGINT or SIGTERM.
    Serve(Box<Config>),
    /// Apply or list database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Manage user accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Ask a running server's health service; exits 0 only if it is SERVING.
    Healthcheck {
        /// The server's address (a wildcard address is reached on loopback).
        #[arg(
            long,
            env = "AUTHD_LISTEN",
            value_name = "AUTHD_LISTEN",
            default_value = "127.0.0.1:50051"
        )]
        listen: SocketAddr,
        /// How long to wait for an answer.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
        /// CA certificate to verify the server with, when it serves TLS.
        #[arg(long = "tls-ca", env = "AUTHD_HEALTHCHECK_TLS_CA", value_name = "PEM")]
        tls_ca: Option<PathBuf>,
        /// The name the server's certificate was issued for.
        #[arg(
            long = "tls-domain",
            env = "AUTHD_HEALTHCHECK_TLS_DOMAIN",
            default_value = "localhost"
        )]
        tls_domain: String,
    },
}

/// `authd migrate` actions.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// List migrations and whether each is applied.
    Status,
}

/// `authd user` commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input (never a flag, which
    /// would show in the process list and shell history).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "user")]
        role: String,
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        hashing: HashingConfig,
    },
    /// Activate or deactivate a user; deactivation also ends all of the user's sessions.
    SetActive {
        email: String,
        #[arg(action = clap::ArgAction::Set, value_parser = clap::value_parser!(bool))]
        active: bool,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

impl Cli {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(config) => {
                let app = App::build(*config).await?;
                app.run_until_stopped(shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Migrate { action, database } => migrate(action, &database).await,
            Command::User { command } => user(command).await,
            Command::Healthcheck {
                listen,
                timeout,
                tls_ca,
                tls_domain,
            } => {
                let tls = tls_ca.map(|ca| (ca, tls_domain));
                healthcheck(listen, timeout, tls).await
            }
        }
    }
}

/// The configured database's settings and a pool on it.
async fn connect(
    database: &DatabaseConfig,
) -> anyhow::Result<(DatabaseSettings, DatabaseConnection)> {
    let settings = database.settings()?;
    let db = store::connect(&settings).await.map_err(name_the_setting)?;
    Ok((settings, db))
}

async fn migrate(action: MigrateAction, database: &DatabaseConfig) -> anyhow::Result<ExitCode> {
    match action {
        MigrateAction::Up => {
            let (settings, db) = connect(database).await?;
            store::migrate(&db, &settings)
                .await
                .map_err(name_the_setting)?;
            db.close().await.context("closing the database pool")?;
            println!("migrations applied");
        }
        MigrateAction::Status => {
            let (_, db) = connect(database).await?;
            let migrations = Migrator::get_migration_with_status(&db)
                .await
                .context("reading migration status")?;
            for migration in migrations {
                println!("{:?}\t{}", migration.status(), migration.name());
            }
            db.close().await.context("closing the database pool")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn user(command: UserCommand) -> anyhow::Result<ExitCode> {
    let database = match &command {
        UserCommand::Create { database, .. } | UserCommand::SetActive { database, .. } => database,
    };
    let (settings, db) = connect(database).await?;
    store::migrate(&db, &settings)
        .await
        .map_err(name_the_setting)?;
    let store = Arc::new(SqlStore::new(db.clone(), &settings));
    let accounts = Accounts::new(store.clone(), store, Arc::new(SystemClock));
    let result = match command {
        UserCommand::Create {
            email,
            name,
            role,
            hashing,
            ..
        } => {
            let account = NewAccount {
                email: &email,
                name: &name,
                role: &role,
                password: read_password()?,
            };
            let hasher = hashing.hasher()?;
            accounts
                .create_user(account, &hasher, &hashing.password_policy()?)
                .await
                .map(|user| {
                    println!(
                        "created user {} ({}) with role {}",
                        user.id, user.email, user.role
                    )
                })
        }
        UserCommand::SetActive { email, active, .. } => {
            accounts.set_active(&email, active).await.map(|ended| {
                let state = if active { "activated" } else { "deactivated" };
                println!("{state} {email}; sessions ended: {ended}");
            })
        }
    };
    db.close().await.context("closing the database pool")?;
    result.map_err(describe)?;
    Ok(ExitCode::SUCCESS)
}

/// An operator-facing message for a domain error.
fn describe(err: AuthError) -> anyhow::Error {
    match err {
        AuthError::InvalidInput(violations) => anyhow::anyhow!(
            "{}",
            violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::Error::new(other),
    }
}

/// One line from standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (one line; pipe it in to keep it off the screen): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_owned())
}

async fn healthcheck(
    listen: SocketAddr,
    timeout: Duration,
    tls: Option<(PathBuf, String)>,
) -> anyhow::Result<ExitCode> {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{}", SocketAddr::new(ip, listen.port()));
    let check = async {
        let mut channel = tonic::transport::Endpoint::from_shared(endpoint.clone())?;
        if let Some((ca, domain)) = &tls {
            let ca = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            channel = channel.tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(domain.clone()),
            )?;
        }
        let channel = channel.connect().await?;
        let mut client = HealthClient::new(channel);
        let response = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        anyhow::Ok(response.into_inner().status())
    };
    let status = tokio::time::timeout(timeout, check)
        .await
        .with_context(|| format!("no answer from {endpoint} within {timeout:?}"))?
        .with_context(|| format!("health check against {endpoint} failed"))?;
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Docker and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
