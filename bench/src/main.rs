//! authd-bench: drives authd with a tonic client and reports, per scenario, throughput,
//! latency percentiles (hdrhistogram) and errors by gRPC status, then every target of
//! performance.md as a ratio measured in this run (on a shared machine only ratios within
//! one run mean anything).
//!
//! Against a running server: `--addr http://HOST:PORT` (its rate limits must allow the
//! load). Without `--addr` it starts its own authd in this process, on a temporary SQLite
//! database or on `--database-url`.
//!
//! Load is closed-loop (`--concurrency` callers over `--connections` HTTP/2 connections,
//! each sending its next call when the previous one is answered) or, with `--rate`,
//! open-loop: calls are scheduled at a fixed rate and a call's latency runs from its
//! scheduled time whenever the server's slowness delayed it (no coordinated omission).

#![allow(clippy::print_stdout)]

mod connection;
mod footprint;
mod load;
mod otlp_sink;
mod report;
mod revocation;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use authd::{
    auth::{Password, PasswordHasher},
    config::{Config, HashingConfig},
    proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient},
    startup::App,
    store::Backend,
};
use clap::{Parser, ValueEnum};
use prost::Message as _;
use tonic::transport::Channel;

use crate::{
    load::{Call, Fixture, Load, Outcome},
    report::{AtRate, HashTimes, Memory, Rounds, Row, Summary},
};

const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Parser)]
#[command(name = "authd-bench", about = "Load generator for authd")]
struct Args {
    /// A running authd (http://HOST:PORT); without it, one is started in this process.
    #[arg(long)]
    addr: Option<String>,
    /// The database of the authd started here (default: a temporary SQLite file).
    #[arg(long, conflicts_with = "addr")]
    database_url: Option<String>,
    /// Scenarios to run, in order (health always runs first, as the baseline).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "validate-warm,validate-cold,validate-uncached,latency,mixed,crafted,refresh,register,login,overload"
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
    /// Open loop: calls per second for the throughput scenarios (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Rounds of the scenarios compared by ratio (health, validate-warm, validate-cold,
    /// and the fixed-rate phases of latency and mixed): each round runs every one of them
    /// for its share of `--warmup` and `--duration`, so the scenarios compared alternate
    /// in time and a passing stall of a shared machine spoils one round, not the figure.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Connect as tonic does by default, with vectored writes: h2 then writes every
    /// request of 256 bytes or more (ValidateToken's) in a syscall of its own.
    #[arg(long)]
    vectored_writes: bool,
    /// Distinct users (and so distinct access tokens) for validate-cold and login.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// The hash workers of the server (`AUTHD_HASH_WORKERS`; default: one per core).
    #[arg(long)]
    hash_workers: Option<usize>,
    /// The hash queue of the server (`AUTHD_HASH_QUEUE`).
    #[arg(long, default_value_t = 32)]
    hash_queue: usize,
    /// The signature backend of the authd started here: `aws-lc-rs` (what authd ships) or
    /// `rust-crypto` (jsonwebtoken's other one), to compare them.
    #[arg(long, conflicts_with = "addr", value_enum, default_value = "aws-lc-rs")]
    jwt_backend: JwtBackend,
    /// The signing algorithm of the authd started here (`AUTHD_JWT_ALGORITHM`).
    #[arg(long, conflicts_with = "addr", default_value = "EdDSA")]
    jwt_algorithm: String,
    /// The verified-token cache of the authd started here (`AUTHD_VALIDATE_CACHE_ENTRIES`).
    #[arg(long, conflicts_with = "addr")]
    validate_cache_entries: Option<usize>,
    /// With `--addr`, for validate-uncached and revocation: a second running authd on the
    /// same database, with its verified-token cache off (`AUTHD_VALIDATE_CACHE_ENTRIES=0`).
    #[arg(long, requires = "addr")]
    peer_addr: Option<String>,
    /// Distinct tokens the cache-memory scenario has the server verify (its
    /// `--validate-cache-entries` should hold them all).
    #[arg(long, default_value_t = 100_000)]
    cached_tokens: usize,
    /// The log filter of the authd started here (`AUTHD_LOG`, e.g. `info`), its lines
    /// written as JSON to /dev/null: what logging costs. Unset: no logging at all.
    #[arg(long, conflicts_with = "addr")]
    server_log: Option<String>,
    /// The authd started here exports its traces (`AUTHD_OTLP_ENDPOINT`; every call unless
    /// OTEL_TRACES_SAMPLER says otherwise) to an OTLP receiver in this process that counts
    /// and drops them: what tracing costs.
    #[arg(long, conflicts_with = "addr")]
    traces: bool,
    /// Trials of the revocation scenario.
    #[arg(long, default_value_t = 200)]
    revocation_trials: usize,
    /// With `--addr`: the server's pid, to report its memory under overload.
    #[arg(long, requires = "addr")]
    server_pid: Option<u32>,
    /// With `--addr`: write request bodies for h2load (health.bin, validate.bin) into this
    /// directory, print the h2load commands, and exit.
    #[arg(long, requires = "addr")]
    h2load_bodies: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// grpc.health.v1.Health/Check: the no-op baseline.
    Health,
    /// ValidateToken with one token over and over.
    ValidateWarm,
    /// ValidateToken round robin over many users' tokens.
    ValidateCold,
    /// ValidateToken round robin over many users' tokens, sent to a second authd on the
    /// same database with its verified-token cache off, so that every call verifies a
    /// signature (its Health/Check costs what the first one's does: same code, same
    /// process).
    ValidateUncached,
    /// The server's resident memory before and after it verifies `--cached-tokens`
    /// distinct tokens (minted by Refresh): the cost of a cached token. Not run by default.
    CacheMemory,
    /// Logout on one authd, then ValidateToken on a second one on the same database over
    /// and over until it says REVOKED: the delay, per trial.
    Revocation,
    /// Health/Check and ValidateToken (cold), open loop at half of ValidateToken's
    /// closed-loop throughput: the latency comparison.
    Latency,
    /// ValidateToken (cold) at that same rate, alone and while logins saturate the hash
    /// pool; with latency, the phases of both alternate round by round.
    Mixed,
    /// ValidateToken (cold) at that same rate, alone and while registrations with
    /// passwords crafted to make their strength estimate costly keep the hash pool full.
    Crafted,
    /// Refresh, each caller following its own rotation chain.
    Refresh,
    /// Register of new users.
    Register,
    /// Login round robin over the users, as many callers as the hash pool admits.
    Login,
    /// Login with four times more callers than the hash pool admits: the excess must be
    /// refused at once and memory must stay bounded.
    Overload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum JwtBackend {
    AwsLcRs,
    RustCrypto,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before any key is made: the first provider installed is the process's.
    let provider = match args.jwt_backend {
        JwtBackend::AwsLcRs => &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        JwtBackend::RustCrypto => &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    };
    provider
        .install_default()
        .map_err(|_| anyhow::anyhow!("a signature backend was installed already"))?;
    let sink = if args.traces {
        Some(otlp_sink::Sink::start().await?)
    } else {
        None
    };
    let telemetry = match (&args.server_log, &sink) {
        (None, None) => None,
        (filter, sink) => {
            let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
            let null = std::sync::Arc::new(null);
            let filter = filter.as_deref().unwrap_or("off");
            let endpoint = sink.as_ref().map(|s| s.endpoint.as_str());
            let format = authd::telemetry::LogFormat::Json;
            Some(authd::telemetry::init(
                filter, format, false, null, endpoint,
            )?)
        }
    };
    let hashing = hashing_config(&args)?;
    let uncached = args.scenarios.contains(&Scenario::ValidateUncached);
    let peer_wanted = uncached || args.scenarios.contains(&Scenario::Revocation);
    let dir = tempfile::tempdir()?;
    let url = args.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        )
    });
    let mut servers = Vec::new();
    let (addr, peer_addr) = match &args.addr {
        Some(addr) => {
            let peer_addr = args.peer_addr.clone();
            anyhow::ensure!(
                peer_addr.is_some() || !peer_wanted,
                "validate-uncached and revocation against --addr need --peer-addr"
            );
            (addr.clone(), peer_addr)
        }
        None => {
            servers.push(OwnServer::start(&args, &hashing, &url, None).await?);
            if peer_wanted {
                servers.push(OwnServer::start(&args, &hashing, &url, Some(0)).await?);
            }
            let addrs: Vec<String> = servers
                .iter()
                .map(|s| format!("http://{}", s.addr))
                .collect();
            (addrs[0].clone(), addrs.get(1).cloned())
        }
    };
    let channels = connect_all(&addr, &args).await?;
    let peer_channels = match &peer_addr {
        Some(addr) => connect_all(addr, &args).await?,
        None => Vec::new(),
    };
    if let Some(dir) = &args.h2load_bodies {
        return write_h2load_bodies(&channels[0], &addr, dir).await;
    }
    let workers = hashing.worker_count();
    let pool = workers + hashing.queue;
    println!(
        "authd-bench: {addr}, {} callers over {} connections, {:?} per scenario after {:?} \
         warm-up, {}; server hash pool: {workers} workers + {} queued",
        args.concurrency,
        channels.len(),
        args.duration,
        args.warmup,
        args.rate.map_or_else(
            || "closed loop".to_owned(),
            |r| format!("open loop at {r}/s")
        ),
        hashing.queue,
    );
    let fixture = Arc::new(Fixture::prepare(&channels[0], args.users, PASSWORD).await?);
    // Measured while the server is idle, before any load.
    let hash_times = if args.scenarios.contains(&Scenario::Login) {
        Some(HashTimes::measure(&hashing).await?)
    } else {
        None
    };
    let bench = Bench {
        channels,
        peer_channels,
        fixture,
        args: &args,
    };

    let mut summary = Summary::new(workers);
    // First the throughput scenarios, alternating round by round: health (the baseline of
    // every ratio) and those of the validate scenarios asked for or needed for the rate of
    // latency and mixed.
    let wanted = |scenarios: &[Scenario]| scenarios.iter().any(|s| args.scenarios.contains(s));
    let mut compared = vec![Call::Health];
    if wanted(&[Scenario::ValidateWarm]) {
        compared.push(Call::ValidateWarm);
    }
    if args.rate.is_none() && wanted(&[Scenario::Latency, Scenario::Mixed, Scenario::Crafted])
        || wanted(&[Scenario::ValidateCold])
    {
        compared.push(Call::ValidateCold);
    }
    if uncached {
        compared.push(Call::ValidateUncached);
    }
    for (call, rounds) in compared
        .iter()
        .zip(bench.throughput_rounds(&compared).await?)
    {
        let slot = match call {
            Call::ValidateWarm => &mut summary.validate_warm,
            Call::ValidateCold => &mut summary.validate_cold,
            Call::ValidateUncached => &mut summary.validate_uncached,
            _ => &mut summary.health,
        };
        *slot = Some(rounds);
    }
    for scenario in &args.scenarios {
        match scenario {
            Scenario::Health
            | Scenario::ValidateWarm
            | Scenario::ValidateCold
            | Scenario::ValidateUncached => {}
            Scenario::CacheMemory => {
                let pid = match (servers.is_empty(), args.server_pid) {
                    (false, _) => std::process::id(),
                    (true, pid) => pid.context("cache-memory against --addr needs --server-pid")?,
                };
                let (count, callers) = (args.cached_tokens, args.concurrency);
                let fixture = &bench.fixture;
                let measured = footprint::measure(&bench.channels, fixture, count, callers, pid);
                summary.cache_memory = Some(measured.await?);
            }
            Scenario::Revocation => {
                let (first, second) = (&bench.channels[0], &bench.peer_channels[0]);
                let trials = args.revocation_trials;
                let outcome = revocation::trials(first, second, &bench.fixture, trials).await?;
                let pushed = url_pushes_revocations(args.addr.is_none().then_some(url.as_str()));
                summary.revocation = Some((outcome, pushed));
            }
            // Both run together, in alternating rounds, where the first of them stands.
            Scenario::Latency | Scenario::Mixed if summary.at_rate.is_none() => {
                let rate = bench.half_validate_rate(&summary)?;
                let health = args.scenarios.contains(&Scenario::Latency);
                let logins = args.scenarios.contains(&Scenario::Mixed);
                let logins = logins.then_some((Call::Login, "logins", pool));
                summary.at_rate = Some(bench.at_rate(rate, health, logins).await?);
            }
            Scenario::Latency | Scenario::Mixed => {}
            Scenario::Crafted => {
                let rate = bench.half_validate_rate(&summary)?;
                let crafted = (Call::CraftedRegister, "crafted registers", pool);
                summary.crafted = Some(bench.at_rate(rate, false, Some(crafted)).await?);
            }
            Scenario::Refresh => summary.refresh = Some(bench.throughput(Call::Refresh).await?),
            // As many callers as the hash pool admits: more would only be refused.
            Scenario::Register => {
                let callers = args.concurrency.min(pool);
                summary.register = Some(bench.closed_loop(Call::Register, callers).await?);
            }
            Scenario::Login => {
                summary.hash_times = hash_times;
                let callers = args.concurrency.min(pool);
                let (login, hash_times) = bench.login_rounds(callers, &hashing).await?;
                summary.login = Some(login);
                summary.login_round_hash_times = hash_times;
            }
            Scenario::Overload => {
                let pid = match (servers.is_empty(), args.server_pid) {
                    (false, _) => Some(std::process::id()),
                    (true, pid) => pid,
                };
                summary.overload = Some(bench.overload(pool * 4, pid, &hashing).await?);
            }
        }
    }
    summary.print();
    for server in servers {
        server.stop().await?;
    }
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    if let Some(sink) = sink {
        println!("traces: {} spans received", sink.received());
    }
    Ok(())
}

/// Whether the database at `url` pushes revocations (PostgreSQL); `None` when unknown
/// (a running server's).
fn url_pushes_revocations(url: Option<&str>) -> Option<bool> {
    url.map(|url| Backend::of_url(url) == Some(Backend::Postgres))
}

/// `--connections` connections to `addr`.
async fn connect_all(addr: &str, args: &Args) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = connection::connect(addr, args.vectored_writes)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// What every scenario shares.
struct Bench<'a> {
    channels: Vec<Channel>,
    /// To the second server, with its verified-token cache off.
    peer_channels: Vec<Channel>,
    fixture: Arc<Fixture>,
    args: &'a Args,
}

impl Bench<'_> {
    fn load(&self, call: Call, callers: usize, rate: Option<f64>, duration: Duration) -> Load {
        Load {
            call,
            callers,
            rate,
            duration,
            channels: match call {
                Call::ValidateUncached => self.peer_channels.clone(),
                _ => self.channels.clone(),
            },
            fixture: Arc::clone(&self.fixture),
        }
    }

    /// A throughput scenario: closed loop, or open loop at `--rate`.
    async fn throughput(&self, call: Call) -> anyhow::Result<Row> {
        let (callers, rate) = (self.args.concurrency, self.args.rate);
        self.measured(call.name(), call, callers, rate).await
    }

    /// Throughput scenarios (closed loop, or open loop at `--rate`) in `--rounds` rounds,
    /// each round running every one of `calls` for its share of the warm-up and duration.
    async fn throughput_rounds(&self, calls: &[Call]) -> anyhow::Result<Vec<Rounds>> {
        let (settle, measure) = self.round_share();
        let (callers, rate) = (self.args.concurrency, self.args.rate);
        let mut all = calls
            .iter()
            .map(|call| Rounds::new(call.name()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for round in 0..self.args.rounds {
            for (call, rounds) in in_turn(round, calls.iter().zip(&mut all)) {
                let outcome = self
                    .settled_then_measured(*call, callers, rate, settle, measure)
                    .await?;
                rounds.add_round(outcome)?;
            }
        }
        Ok(all)
    }

    async fn closed_loop(&self, call: Call, callers: usize) -> anyhow::Result<Row> {
        self.measured(call.name(), call, callers, None).await
    }

    /// Warm-up, then the measured run.
    async fn measured(
        &self,
        label: impl Into<String>,
        call: Call,
        callers: usize,
        rate: Option<f64>,
    ) -> anyhow::Result<Row> {
        let (warmup, duration) = (self.args.warmup, self.args.duration);
        let outcome = self
            .settled_then_measured(call, callers, rate, warmup, duration)
            .await?;
        Ok(Row::new(label, outcome))
    }

    /// `call` run unmeasured for `settle`, then measured for `measure`.
    async fn settled_then_measured(
        &self,
        call: Call,
        callers: usize,
        rate: Option<f64>,
        settle: Duration,
        measure: Duration,
    ) -> anyhow::Result<Outcome> {
        if !settle.is_zero() {
            self.load(call, callers, rate, settle).run().await?;
        }
        self.load(call, callers, rate, measure).run().await
    }

    /// One round's share of `--warmup` and of `--duration`.
    fn round_share(&self) -> (Duration, Duration) {
        let rounds = self.args.rounds;
        (self.args.warmup / rounds, self.args.duration / rounds)
    }

    /// Half of validate-cold's closed-loop throughput in this run, or `--rate` when given.
    fn half_validate_rate(&self, summary: &Summary) -> anyhow::Result<f64> {
        if let Some(rate) = self.args.rate {
            return Ok(rate);
        }
        let max = summary
            .validate_cold
            .as_ref()
            .map_or(0.0, |cold| cold.row.outcome.throughput());
        anyhow::ensure!(max > 0.0, "validate-cold completed no call");
        Ok((max / 2.0).round())
    }

    /// The open-loop phases at `rate`: ValidateToken alone, Health/Check alone if
    /// `health`, and ValidateToken while a background load (a call, its name, and as many
    /// callers as keep the hash pool full) runs if given, each round running every phase
    /// once for its share of the warm-up and duration.
    async fn at_rate(
        &self,
        rate: f64,
        health: bool,
        background: Option<(Call, &str, usize)>,
    ) -> anyhow::Result<AtRate> {
        let (settle, measure) = self.round_share();
        let callers = self.args.concurrency;
        let settled_then_measured = async |call: Call| {
            self.settled_then_measured(call, callers, Some(rate), settle, measure)
                .await
        };
        let mut at_rate = AtRate::new(rate, health, background.map(|(_, name, _)| name))?;
        for round in 0..self.args.rounds {
            // Health and validate alone take turns at going first; validate under load
            // always comes last, as the load leaves the machine busier than it found it.
            let health_alone = async || match health {
                true => settled_then_measured(Call::Health).await.map(Some),
                false => Ok(None),
            };
            let (health, validate) = if round % 2 == 0 {
                let health = health_alone().await?;
                (health, settled_then_measured(Call::ValidateCold).await?)
            } else {
                let validate = settled_then_measured(Call::ValidateCold).await?;
                (health_alone().await?, validate)
            };
            let loaded = match background {
                Some((call, _, load_callers)) => {
                    let load = self.load(call, load_callers, None, settle + measure);
                    let load = tokio::spawn(load.run());
                    // Validation is measured once the load has filled the pool.
                    tokio::time::sleep(settle).await;
                    let validate = self.load(Call::ValidateCold, callers, Some(rate), measure);
                    let validate = validate.run().await?;
                    Some((validate, load.await??))
                }
                None => None,
            };
            at_rate.add_round(health, validate, loaded)?;
        }
        Ok(at_rate)
    }

    /// Login in `--rounds` rounds, each after one argon2 hash is timed on the idle server
    /// (the median of 3), so every round is set against the bound measured beside it.
    async fn login_rounds(
        &self,
        callers: usize,
        hashing: &HashingConfig,
    ) -> anyhow::Result<(Rounds, Vec<Duration>)> {
        let (settle, measure) = self.round_share();
        let lone = LoneHasher::new(hashing)?;
        let mut login = Rounds::new(Call::Login.name())?;
        let mut hash_times = Vec::new();
        for _ in 0..self.args.rounds {
            hash_times.push(lone.time(3).await?);
            let outcome = self
                .settled_then_measured(Call::Login, callers, None, settle, measure)
                .await?;
            login.add_round(outcome)?;
        }
        Ok((login, hash_times))
    }

    /// Logins far beyond what the pool admits, with the server's memory watched.
    async fn overload(
        &self,
        callers: usize,
        pid: Option<u32>,
        hashing: &HashingConfig,
    ) -> anyhow::Result<(Row, Option<Memory>)> {
        let base = pid.and_then(|pid| Memory::reset_peak(pid).ok());
        let outcome: Outcome = self
            .load(Call::Login, callers, None, self.args.duration)
            .run()
            .await?;
        let memory = match (pid, base) {
            (Some(pid), Some(base)) => Some(Memory::read(pid, base, hashing)?),
            _ => None,
        };
        Ok((
            Row::new(format!("login x{callers} callers"), outcome),
            memory,
        ))
    }
}

/// The scenarios of a round in the order they run: forwards in even rounds, backwards in
/// odd ones, so a machine that speeds up or slows down over a run favours none of them.
fn in_turn<T>(round: u32, scenarios: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut in_turn: Vec<T> = scenarios.into_iter().collect();
    if round % 2 == 1 {
        in_turn.reverse();
    }
    in_turn
}

/// The hashing configuration of the server under test: the defaults (what a running
/// server is assumed to use) with the workers and queue given here.
fn hashing_config(args: &Args) -> anyhow::Result<HashingConfig> {
    let mut hashing = parse_config(&[])?.hashing;
    hashing.workers = args.hash_workers.and_then(std::num::NonZeroUsize::new);
    hashing.queue = args.hash_queue;
    Ok(hashing)
}

fn parse_config(flags: &[&str]) -> anyhow::Result<Config> {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        config: Config,
    }
    let argv = std::iter::once("authd").chain(flags.iter().copied());
    Ok(Defaults::try_parse_from(argv)?.config)
}

/// Argon2 at the server's cost, in this process, one hash at a time.
struct LoneHasher {
    hasher: PasswordHasher,
    password: Password,
}

impl LoneHasher {
    fn new(hashing: &HashingConfig) -> anyhow::Result<Self> {
        let mut single = hashing.clone();
        single.workers = std::num::NonZeroUsize::new(1);
        Ok(Self {
            hasher: single.hasher()?,
            password: bench_password()?,
        })
    }

    /// The median time of `hashes` hashes, one after another.
    async fn time(&self, hashes: usize) -> anyhow::Result<Duration> {
        let mut times = Vec::with_capacity(hashes);
        for _ in 0..hashes {
            let started = Instant::now();
            self.hasher.hash(&self.password).await?;
            times.push(started.elapsed());
        }
        times.sort();
        Ok(times[times.len() / 2])
    }
}

fn bench_password() -> anyhow::Result<Password> {
    Password::submitted(PASSWORD.to_owned())
        .map_err(|_| anyhow::anyhow!("the bench password is refused"))
}

impl HashTimes {
    /// Argon2 at the server's cost, in this process: one hash alone (the median of 9),
    /// then every worker hashing at once.
    async fn measure(hashing: &HashingConfig) -> anyhow::Result<Self> {
        const HASHES: usize = 9;
        let one = LoneHasher::new(hashing)?.time(HASHES).await?;

        let workers = hashing.worker_count();
        let hasher = hashing.hasher()?;
        let all_at_once = async |hashes: usize| {
            let started = Instant::now();
            let mut all = tokio::task::JoinSet::new();
            for _ in 0..workers {
                let (hasher, password) = (hasher.clone(), bench_password()?);
                all.spawn(async move {
                    for _ in 0..hashes {
                        hasher.hash(&password).await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(done) = all.join_next().await {
                done??;
            }
            anyhow::Ok((workers * hashes) as f64 / started.elapsed().as_secs_f64())
        };
        // Unmeasured first: each worker's first hash pays for mapping its argon2 memory.
        all_at_once(2).await?;
        let all_workers_rate = all_at_once(HASHES).await?;
        Ok(Self {
            one,
            all_workers_rate,
        })
    }
}

/// An authd in this process, with rate limits out of the way of the load.
struct OwnServer {
    addr: SocketAddr,
    stop: tokio::sync::mpsc::UnboundedSender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl OwnServer {
    /// On `url`, with `cache_entries` verified tokens remembered (default: `args`').
    async fn start(
        args: &Args,
        hashing: &HashingConfig,
        url: &str,
        cache_entries: Option<usize>,
    ) -> anyhow::Result<Self> {
        let mut config = parse_config(&[
            "--database-url",
            url,
            "--listen",
            "127.0.0.1:0",
            "--login-rate-per-minute",
            "4000000000",
            "--register-rate-per-minute",
            "4000000000",
            "--login-max-failures",
            "100",
            "--jwt-algorithm",
            &args.jwt_algorithm,
            "--shutdown-drain",
            "0s",
        ])?;
        config.hashing = hashing.clone();
        if let Some(entries) = cache_entries.or(args.validate_cache_entries) {
            config.tokens.validate_cache_entries = entries;
        }
        let app = App::build(config).await?;
        let addr = app.local_addr();
        let (stop, stopped) = tokio::sync::mpsc::unbounded_channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(
            tokio_stream::wrappers::UnboundedReceiverStream::new(stopped),
        ));
        Ok(Self { addr, stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Registers one user and writes gRPC-framed request bodies for h2load.
async fn write_h2load_bodies(channel: &Channel, addr: &str, dir: &Path) -> anyhow::Result<()> {
    let email = format!("h2load-{}@example.com", std::process::id());
    let token = AuthServiceClient::new(channel.clone())
        .register(pb::RegisterRequest {
            email,
            password: PASSWORD.into(),
            name: "h2load".into(),
        })
        .await?
        .into_inner()
        .tokens
        .context("no tokens")?
        .access_token;
    std::fs::create_dir_all(dir)?;
    let health = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    std::fs::write(dir.join("health.bin"), grpc_frame(&health.encode_to_vec())?)?;
    let validate = pb::ValidateTokenRequest { token };
    std::fs::write(
        dir.join("validate.bin"),
        grpc_frame(&validate.encode_to_vec())?,
    )?;
    let dir = dir.display();
    for (file, path) in [
        ("health.bin", "/grpc.health.v1.Health/Check"),
        ("validate.bin", "/auth.v1.AuthService/ValidateToken"),
    ] {
        println!(
            "h2load -n 200000 -c 8 -m 16 -d {dir}/{file} -H 'content-type: application/grpc' \
             -H 'te: trailers' {addr}{path}"
        );
    }
    Ok(())
}

/// A gRPC length-prefixed message: no compression, 4-byte big-endian length, the bytes.
fn grpc_frame(message: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    frame.extend_from_slice(message);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_run_their_scenarios_forwards_then_backwards() {
        let order: Vec<_> = (0..3)
            .map(|round| in_turn(round, ["a", "b", "c"]))
            .collect();
        assert_eq!(order, [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]);
    }
}
