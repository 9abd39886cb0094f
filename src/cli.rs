//! The `authd` command line: `serve`, `migrate`, `user` and `healthcheck`.

use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sea_orm::DatabaseConnection;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    auth::{
        AccountChange, AccountRules, AccountStores, Accounts, Actor, AuthError, Caller,
        IMPORT_MAX_USERS, ImportedAccount, NewAccount, Revocations, SystemClock, UserQuery,
        UserRef,
    },
    config::{
        Config, DatabaseConfig, HashingConfig, RolesConfig, name_the_setting, parse_duration,
    },
    proto::auth::v1::FILE_DESCRIPTOR_SET,
    startup::App,
    store::{self, DatabaseSettings, SqlStore},
    telemetry::LogFormat,
};

/// The version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("AUTHD_COMMIT"), ")");

/// authd: gRPC authentication service.
#[derive(Debug, Parser)]
#[command(name = "authd", version = VERSION, about)]
pub struct Cli {
    /// Log filter, e.g. "info" or "authd=debug,info" [default: "info" for serve, "warn"
    /// for the other commands, whose output is their answer].
    #[arg(long, global = true, env = "AUTHD_LOG", value_name = "AUTHD_LOG")]
    pub log: Option<String>,

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
        /// The server's certificate chain (as `serve` reads it): when set, the check speaks
        /// TLS and trusts the certificates in this file, unless --tls-ca names others.
        #[arg(
            long = "tls-cert",
            env = "AUTHD_TLS_CERT",
            value_name = "AUTHD_TLS_CERT"
        )]
        tls_cert: Option<PathBuf>,
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
    /// Write the API's binary FileDescriptorSet (imports and HTTP annotations included) to
    /// standard output or a file, for Envoy's gRPC-JSON transcoder and grpc-gateway
    /// tooling: `authd descriptor > authd.pb`.
    Descriptor {
        /// Write it to this file instead (an image without a shell cannot redirect).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
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
    /// would show in the process list and shell history). An empty line: no password,
    /// the user must reset it before logging in.
    Create {
        /// The user's email address, their login name (normalized as Register does).
        #[arg(long)]
        email: String,
        /// The name shown for the user.
        #[arg(long)]
        name: String,
        /// One of AUTHD_ROLES; empty: AUTHD_DEFAULT_ROLE.
        #[arg(long, default_value = "")]
        role: String,
        #[command(flatten)]
        admin: AdminConfig,
    },
    /// List users, oldest first, a page at a time: one line each, tab-separated (id,
    /// email, name, role, active, email verified, created).
    List {
        /// Only users whose email or name starts with this (any letter case).
        #[arg(long, default_value = "")]
        query: String,
        /// Only users with this role.
        #[arg(long, default_value = "")]
        role: String,
        /// Only active (true) or deactivated (false) users.
        #[arg(long, value_parser = clap::value_parser!(bool))]
        active: Option<bool>,
        /// How many users to list.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// List from after this user id: the id the previous page ended with.
        #[arg(long, value_name = "USER_ID")]
        after: Option<uuid::Uuid>,
        #[command(flatten)]
        admin: AdminConfig,
    },
    /// Activate or deactivate a user; deactivation also ends all of the user's sessions.
    SetActive {
        /// The user's email address.
        email: String,
        /// true to activate, false to deactivate.
        #[arg(action = clap::ArgAction::Set, value_parser = clap::value_parser!(bool))]
        active: bool,
        #[command(flatten)]
        admin: AdminConfig,
    },
    /// Give a user another role (one of AUTHD_ROLES); their sessions go on, and their
    /// tokens are reported with the new role.
    SetRole {
        /// The user's email address.
        email: String,
        /// One of AUTHD_ROLES.
        role: String,
        #[command(flatten)]
        admin: AdminConfig,
    },
    /// Import users from a JSON Lines file, one object per line with the fields of
    /// AdminService's ImportUser (email, name, role, password_hash, email_verified,
    /// active). Each line succeeds or fails on its own; exits 1 if any was refused.
    Import {
        /// The JSON Lines file.
        file: PathBuf,
        #[command(flatten)]
        admin: AdminConfig,
    },
}

/// What the `authd user` commands need: the database, and the rules new accounts follow.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminConfig {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    hashing: HashingConfig,
    #[command(flatten)]
    roles: RolesConfig,
}

impl Cli {
    /// The log filter: AUTHD_LOG, else the command's own default.
    pub fn log_filter(&self) -> &str {
        match (&self.log, &self.command) {
            (Some(filter), _) => filter,
            (None, Command::Serve(_)) => "info",
            (None, _) => "warn",
        }
    }

    /// Where `serve` exports its traces, if anywhere.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        match &self.command {
            Command::Serve(config) => config.otlp_endpoint.as_deref(),
            _ => None,
        }
    }

    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(config) => {
                let app = App::build(*config).await?;
                app.run_until_stopped(shutdown_signals()?).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Migrate { action, database } => migrate(action, &database).await,
            Command::User { command } => user(command).await,
            Command::Healthcheck {
                listen,
                timeout,
                tls_cert,
                tls_ca,
                tls_domain,
            } => {
                let tls = tls_ca.or(tls_cert).map(|trusted| (trusted, tls_domain));
                healthcheck(listen, timeout, tls).await
            }
            Command::Descriptor { output } => descriptor(output.as_deref()),
        }
    }
}

fn descriptor(output: Option<&Path>) -> anyhow::Result<ExitCode> {
    if let Some(path) = output {
        std::fs::write(path, FILE_DESCRIPTOR_SET)
            .with_context(|| format!("writing the descriptor set to {}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    // Binary on a terminal is noise at best and a garbled terminal at worst.
    if out.is_terminal() {
        anyhow::bail!(
            "the descriptor set is binary: redirect it, e.g. `authd descriptor > authd.pb`"
        );
    }
    out.write_all(FILE_DESCRIPTOR_SET)
        .and_then(|()| out.flush())
        .context("writing the descriptor set to standard output")?;
    Ok(ExitCode::SUCCESS)
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
            let settings = database.settings()?;
            let migrations = store::migration_status(&settings)
                .await
                .map_err(name_the_setting)?;
            for (name, applied) in migrations {
                let status = if applied { "Applied" } else { "Pending" };
                println!("{status}\t{name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn user(command: UserCommand) -> anyhow::Result<ExitCode> {
    let (UserCommand::Create { admin, .. }
    | UserCommand::List { admin, .. }
    | UserCommand::SetActive { admin, .. }
    | UserCommand::SetRole { admin, .. }
    | UserCommand::Import { admin, .. }) = &command;
    let admin = admin.clone();
    let rules = AccountRules {
        hasher: admin.hashing.hasher()?,
        policy: admin.hashing.password_policy()?,
        roles: admin.roles.roles()?,
        // Codes are issued by the server only.
        reset_ttl: Duration::from_secs(3600),
    };
    let (settings, db) = connect(&admin.database).await?;
    store::migrate(&db, &settings)
        .await
        .map_err(name_the_setting)?;
    let store = Arc::new(SqlStore::new(db.clone(), &settings));
    let stores = AccountStores {
        users: store.clone(),
        sessions: store.clone(),
        codes: store.clone(),
        audit: store,
    };
    // Replicas learn of these changes from the database; this process serves no tokens.
    let revocations = Arc::new(Revocations::new(
        Duration::ZERO,
        Duration::ZERO,
        Duration::from_secs(1),
    ));
    let accounts = Accounts::new(stores, rules, revocations, Arc::new(SystemClock));
    let caller = Caller::default().acting_as(Actor::CommandLine);
    let result = run_user_command(&accounts, &caller, command).await;
    db.close().await.context("closing the database pool")?;
    result
}

async fn run_user_command(
    accounts: &Accounts,
    caller: &Caller,
    command: UserCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Create {
            email, name, role, ..
        } => {
            let account = NewAccount {
                email: &email,
                name: &name,
                role: &role,
                password: secrecy::SecretString::from(read_password()?),
                email_verified: false,
            };
            let user = accounts
                .create_user(caller, account)
                .await
                .map_err(describe)?;
            println!(
                "created user {} ({}) with role {}",
                user.id, user.email, user.role
            );
        }
        UserCommand::List {
            query,
            role,
            active,
            limit,
            after,
            ..
        } => {
            let query = UserQuery {
                query: &query,
                role: &role,
                active,
            };
            let (users, next) = accounts
                .list_users(&query, after, limit)
                .await
                .map_err(describe)?;
            let mut out = std::io::stdout().lock();
            for user in users {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    user.id,
                    user.email,
                    user.name,
                    user.role,
                    if user.active { "active" } else { "deactivated" },
                    if user.email_verified {
                        "verified"
                    } else {
                        "unverified"
                    },
                    user.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )?;
            }
            if let Some(next) = next {
                eprintln!("more users: add --after {next}");
            }
        }
        UserCommand::SetActive { email, active, .. } => {
            let (user, ended) = accounts
                .set_active(caller, UserRef::Email(&email), active)
                .await
                .map_err(describe)?;
            let state = if active { "activated" } else { "deactivated" };
            println!("{state} {}; sessions ended: {ended}", user.email);
        }
        UserCommand::SetRole { email, role, .. } => {
            let change = AccountChange {
                role: Some(&role),
                ..AccountChange::default()
            };
            let user = accounts
                .update_user(caller, UserRef::Email(&email), change)
                .await
                .map_err(describe)?;
            println!("{} now has role {}", user.email, user.role);
        }
        UserCommand::Import { file, .. } => return import(accounts, caller, &file).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of an import file: AdminService's ImportUser. (No Debug: it holds a hash.)
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    email: String,
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password_hash: String,
    #[serde(default)]
    email_verified: bool,
    active: Option<bool>,
}

/// `authd user import FILE`: every line on its own, in batches of [`IMPORT_MAX_USERS`].
async fn import(accounts: &Accounts, caller: &Caller, file: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (mut created, mut refused) = (0usize, 0usize);
    let mut batch: Vec<(usize, ImportedAccount)> = Vec::new();
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty())
        .collect();
    for (chunk_index, chunk) in lines.chunks(IMPORT_MAX_USERS).enumerate() {
        batch.clear();
        for &(number, line) in chunk {
            match serde_json::from_str::<ImportLine>(line) {
                Ok(row) => batch.push((
                    number,
                    ImportedAccount {
                        email: row.email,
                        name: row.name,
                        role: row.role,
                        password_hash: secrecy::SecretString::from(row.password_hash),
                        email_verified: row.email_verified,
                        active: row.active.unwrap_or(true),
                    },
                )),
                Err(err) => {
                    refused += 1;
                    // Where, not what: serde_json's message can quote a value (a hash).
                    println!(
                        "line {number}: refused: not an ImportUser JSON object \
                         ({:?} error at column {})",
                        err.classify(),
                        err.column()
                    );
                }
            }
        }
        let accounts_in_batch = batch.iter().map(|(_, account)| account.clone()).collect();
        let results = accounts
            .import(caller, accounts_in_batch)
            .await
            .map_err(describe)
            .with_context(|| format!("importing batch {}", chunk_index + 1))?;
        for ((number, account), result) in batch.iter().zip(results) {
            match result {
                Ok(id) => {
                    created += 1;
                    println!("line {number}: {}: created {id}", account.email);
                }
                Err(why) => {
                    refused += 1;
                    println!("line {number}: {}: refused: {why}", account.email);
                }
            }
        }
    }
    println!("imported {created} users; refused {refused}");
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
        .map_err(|_| anyhow::anyhow!("no answer from {endpoint} within {timeout:?}"))?
        // One readable line: the transport's error wraps its cause in several layers,
        // each printed as a debug dump.
        .map_err(|err| {
            let cause = err
                .chain()
                .last()
                .map(ToString::to_string)
                .unwrap_or_default();
            let hint = if tls.is_some() {
                ""
            } else {
                " (if the server serves TLS, set AUTHD_TLS_CERT or --tls-ca)"
            };
            anyhow::anyhow!("health check against {endpoint} failed: {cause}{hint}")
        })?;
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// SIGINT (Ctrl-C) and SIGTERM (what Docker and Kubernetes send), each time one comes.
fn shutdown_signals() -> anyhow::Result<UnboundedReceiverStream<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = interrupt.recv() => {}
                Some(()) = terminate.recv() => {}
                else => return,
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(UnboundedReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn every_flag_and_argument_says_what_it_is() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                let own = !matches!(arg.get_id().as_str(), "help" | "version");
                if own && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
