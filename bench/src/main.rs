//! authd-bench: drives authd with a tonic client and reports, per scenario, throughput,
//! latency percentiles (hdrhistogram) and errors by gRPC status, plus each scenario's
//! throughput as a ratio to Health/Check measured in the same run (performance.md: on a
//! shared machine only ratios within one run mean anything).
//!
//! Against a running server: `--addr http://HOST:PORT` (its rate limits must allow the
//! load). Without `--addr` it starts its own authd on a temporary SQLite database.
//!
//! The load is closed-loop: `--concurrency` callers spread over `--connections` HTTP/2
//! connections, each sending its next call as soon as the previous one is answered.

#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use authd::{
    config::Config,
    proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient},
    startup::App,
};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const PASSWORD: &str = "correct horse battery staple";
/// Numbers the users Register creates, across warm-up and measured runs.
static NEW_USERS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Parser)]
#[command(name = "authd-bench", about = "Load generator for authd")]
struct Args {
    /// A running authd (http://HOST:PORT); without it, one is started on temporary SQLite.
    #[arg(long)]
    addr: Option<String>,
    /// Scenarios to run, in order (health always runs first, as the baseline).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "validate-warm,validate-cold,refresh,register,login"
    )]
    scenarios: Vec<Scenario>,
    /// Callers in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// How long each scenario is measured.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long each scenario runs unmeasured first.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Distinct users (and so distinct access tokens) for validate-cold and login.
    #[arg(long, default_value_t = 1000)]
    users: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    /// grpc.health.v1.Health/Check: the no-op baseline.
    Health,
    /// ValidateToken with one token over and over.
    ValidateWarm,
    /// ValidateToken round robin over many users' tokens.
    ValidateCold,
    /// Login round robin over the users.
    Login,
    /// Register of new users.
    Register,
    /// Refresh, each caller following its own rotation chain.
    Refresh,
}

/// What a scenario measured.
struct Outcome {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    elapsed: Duration,
}

impl Outcome {
    fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// The data callers draw on.
struct Fixture {
    tokens: Vec<String>,
    emails: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (addr, _server, _dir) = match &args.addr {
        Some(addr) => (addr.clone(), None, None),
        None => {
            let (addr, server, dir) = start_server().await?;
            (format!("http://{addr}"), Some(server), Some(dir))
        }
    };
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = Channel::from_shared(addr.clone())?
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        channels.push(channel);
    }
    println!(
        "authd-bench: {addr}, {} callers over {} connections, {:?} per scenario after {:?} warm-up",
        args.concurrency,
        channels.len(),
        args.duration,
        args.warmup
    );
    let fixture = Arc::new(prepare(&channels[0], args.users).await?);

    let mut scenarios = vec![Scenario::Health];
    scenarios.extend(args.scenarios.iter().filter(|s| **s != Scenario::Health));
    let mut results = Vec::new();
    for scenario in scenarios {
        run(scenario, &channels, &fixture, args.concurrency, args.warmup).await?;
        let outcome = run(
            scenario,
            &channels,
            &fixture,
            args.concurrency,
            args.duration,
        )
        .await?;
        results.push((scenario, outcome));
    }
    report(&results);
    Ok(())
}

/// Registers the users whose tokens and emails the scenarios use.
async fn prepare(channel: &Channel, users: usize) -> anyhow::Result<Fixture> {
    let started = Instant::now();
    let mut tokens = Vec::with_capacity(users);
    let mut emails = Vec::with_capacity(users);
    let run = std::process::id();
    for i in 0..users.max(1) {
        let email = format!("bench-{run}-{i}@example.com");
        let response = AuthServiceClient::new(channel.clone())
            .register(pb::RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
                name: "Bench".into(),
            })
            .await
            .with_context(|| format!("registering user {i}"))?
            .into_inner();
        tokens.push(response.tokens.context("no tokens")?.access_token);
        emails.push(email);
    }
    println!(
        "prepared {} users in {:.1?}",
        emails.len(),
        started.elapsed()
    );
    Ok(Fixture { tokens, emails })
}

/// Runs one scenario for `duration` with `concurrency` callers.
async fn run(
    scenario: Scenario,
    channels: &[Channel],
    fixture: &Arc<Fixture>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + duration;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut callers = Vec::new();
    for caller in 0..concurrency.max(1) {
        let channel = channels[caller % channels.len()].clone();
        let fixture = Arc::clone(fixture);
        let next = Arc::clone(&next);
        callers.push(tokio::spawn(async move {
            let mut auth = AuthServiceClient::new(channel.clone());
            let mut health = HealthClient::new(channel);
            let mut latency = new_histogram()?;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut ok = 0u64;
            // Refresh callers each follow a chain of their own.
            let mut refresh_token = String::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let result: Result<(), tonic::Status> = match scenario {
                    Scenario::Health => health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map(drop),
                    Scenario::ValidateWarm => validate(&mut auth, &fixture.tokens[0]).await,
                    Scenario::ValidateCold => {
                        validate(&mut auth, &fixture.tokens[i % fixture.tokens.len()]).await
                    }
                    Scenario::Login => auth
                        .login(pb::LoginRequest {
                            email: fixture.emails[i % fixture.emails.len()].clone(),
                            password: PASSWORD.into(),
                        })
                        .await
                        .map(drop),
                    Scenario::Register => auth
                        .register(pb::RegisterRequest {
                            email: format!(
                                "bench-{}-new-{}@example.com",
                                std::process::id(),
                                NEW_USERS.fetch_add(1, Ordering::Relaxed)
                            ),
                            password: PASSWORD.into(),
                            name: "Bench".into(),
                        })
                        .await
                        .map(drop),
                    Scenario::Refresh => {
                        if refresh_token.is_empty() {
                            refresh_token =
                                login_refresh_token(&mut auth, &fixture, caller).await?;
                        }
                        match auth
                            .refresh(pb::RefreshRequest {
                                refresh_token: refresh_token.clone(),
                            })
                            .await
                        {
                            Ok(response) => {
                                refresh_token = response
                                    .into_inner()
                                    .tokens
                                    .map(|t| t.refresh_token)
                                    .unwrap_or_default();
                                Ok(())
                            }
                            Err(status) => Err(status),
                        }
                    }
                };
                match result {
                    Ok(()) => {
                        ok += 1;
                        latency.saturating_record(sent.elapsed().as_micros() as u64);
                    }
                    Err(status) => *errors.entry(code_name(status.code())).or_default() += 1,
                }
            }
            anyhow::Ok((ok, errors, latency))
        }));
    }
    let mut outcome = Outcome {
        ok: 0,
        errors: BTreeMap::new(),
        latency: new_histogram()?,
        elapsed: Duration::ZERO,
    };
    for caller in callers {
        let (ok, errors, latency) = caller.await??;
        outcome.ok += ok;
        for (code, count) in errors {
            *outcome.errors.entry(code).or_default() += count;
        }
        outcome.latency.add(latency)?;
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

async fn validate(auth: &mut AuthServiceClient<Channel>, token: &str) -> Result<(), tonic::Status> {
    let response = auth
        .validate_token(pb::ValidateTokenRequest {
            token: token.to_owned(),
        })
        .await?
        .into_inner();
    if response.active {
        Ok(())
    } else {
        Err(tonic::Status::failed_precondition("token not active"))
    }
}

async fn login_refresh_token(
    auth: &mut AuthServiceClient<Channel>,
    fixture: &Fixture,
    caller: usize,
) -> anyhow::Result<String> {
    let response = auth
        .login(pb::LoginRequest {
            email: fixture.emails[caller % fixture.emails.len()].clone(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner();
    Ok(response.tokens.context("no tokens")?.refresh_token)
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
}

fn report(results: &[(Scenario, Outcome)]) {
    let errors: u64 = results.iter().flat_map(|(_, o)| o.errors.values()).sum();
    if errors > 0 {
        println!("\nTHIS RUN HAD {errors} ERRORS (see the errors column)");
    }
    println!(
        "\n{:<15} {:>10} {:>10} {:>10} {:>10} {:>10}  errors",
        "scenario", "calls/s", "p50 us", "p99 us", "p999 us", "vs health"
    );
    let baseline = results
        .iter()
        .find(|(s, _)| *s == Scenario::Health)
        .map_or(f64::NAN, |(_, o)| o.throughput());
    for (scenario, outcome) in results {
        let errors = if outcome.errors.is_empty() {
            "-".to_owned()
        } else {
            outcome
                .errors
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{:<15} {:>10.0} {:>10} {:>10} {:>10} {:>10.2}  {}",
            scenario
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned()),
            outcome.throughput(),
            outcome.latency.value_at_quantile(0.5),
            outcome.latency.value_at_quantile(0.99),
            outcome.latency.value_at_quantile(0.999),
            outcome.throughput() / baseline,
            errors
        );
    }
}

/// An authd of our own on a temporary SQLite database, with rate limits out of the way.
async fn start_server() -> anyhow::Result<(
    SocketAddr,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tempfile::TempDir,
)> {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        config: Config,
    }
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let mut config = Defaults::try_parse_from([
        "authd",
        "--database-url",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--login-rate-per-minute",
        "4000000000",
        "--register-rate-per-minute",
        "4000000000",
        "--login-max-failures",
        "100",
    ])?
    .config;
    config.hashing.queue = 1024;
    let app = App::build(config).await?;
    let addr = app.local_addr();
    let server = tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok((addr, server, dir))
}

/// Latencies from 1 us to 60 s, to three significant figures.
fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}
