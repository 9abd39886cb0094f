//! Generating load: what a call is, and callers that send them closed- or open-loop.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use authd::proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use hdrhistogram::Histogram;
use tonic::{Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Numbers the users Register creates, across every run of this process.
static NEW_USERS: AtomicUsize = AtomicUsize::new(0);

/// One kind of RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Health,
    ValidateWarm,
    ValidateCold,
    /// ValidateToken round robin over many users' tokens, sent to a server whose
    /// verified-token cache is off: every call pays for a signature check.
    ValidateUncached,
    Login,
    Register,
    /// Register with a password crafted to make its strength estimate costly.
    CraftedRegister,
    Refresh,
}

/// Characters that each stand for several letters to zxcvbn's l33t matcher: a run of them
/// multiplies the substitutions it tries.
const CRAFTED_PASSWORD_PATTERN: &str = "$5+7|1!@4(<{[3";

impl Call {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::ValidateWarm => "validate-warm",
            Self::ValidateCold => "validate-cold",
            Self::ValidateUncached => "validate-uncached",
            Self::Login => "login",
            Self::Register => "register",
            Self::CraftedRegister => "crafted-register",
            Self::Refresh => "refresh",
        }
    }
}

/// The users and tokens the calls draw on, registered before any measurement.
pub(crate) struct Fixture {
    tokens: Vec<String>,
    emails: Vec<String>,
    password: &'static str,
    /// The latest refresh token of each user's session; a Refresh caller takes one chain
    /// and gives back its latest token when done, so chains survive from run to run.
    refresh_chains: Mutex<Vec<String>>,
}

impl Fixture {
    pub(crate) async fn prepare(
        channel: &Channel,
        users: usize,
        password: &'static str,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut tokens = Vec::with_capacity(users);
        let mut emails = Vec::with_capacity(users);
        let mut refresh_chains = Vec::with_capacity(users);
        let run = std::process::id();
        let mut client = AuthServiceClient::new(channel.clone());
        for i in 0..users.max(1) {
            let email = format!("bench-{run}-{i}@example.com");
            let response = client
                .register(pb::RegisterRequest {
                    email: email.clone(),
                    password: password.into(),
                    name: "Bench".into(),
                })
                .await
                .with_context(|| format!("registering user {i}"))?
                .into_inner();
            let pair = response.tokens.context("no tokens")?;
            tokens.push(pair.access_token);
            refresh_chains.push(pair.refresh_token);
            emails.push(email);
        }
        println!(
            "prepared {} users in {:.1?}",
            emails.len(),
            started.elapsed()
        );
        Ok(Self {
            tokens,
            emails,
            password,
            refresh_chains: Mutex::new(refresh_chains),
        })
    }

    /// The email and password of user `i` (round robin).
    pub(crate) fn credentials(&self, i: usize) -> (&str, &str) {
        (&self.emails[i % self.emails.len()], self.password)
    }

    pub(crate) fn take_refresh_chain(&self) -> Option<String> {
        self.refresh_chains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    pub(crate) fn give_back_refresh_chain(&self, token: String) {
        self.refresh_chains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(token);
    }
}

/// What a load measured.
pub(crate) struct Outcome {
    pub(crate) ok: u64,
    /// Failed calls by gRPC status.
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) latency: Histogram<u64>,
    /// How long failed calls took to fail.
    pub(crate) error_latency: Histogram<u64>,
    pub(crate) elapsed: Duration,
}

impl Outcome {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            errors: BTreeMap::new(),
            latency: new_histogram()?,
            error_latency: new_histogram()?,
            elapsed: Duration::ZERO,
        })
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other`'s calls and time to these.
    pub(crate) fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.ok += other.ok;
        self.elapsed += other.elapsed;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        self.latency.add(other.latency)?;
        self.error_latency.add(other.error_latency)?;
        Ok(())
    }
}

/// `callers` callers sending `call` for `duration`: closed loop, or open loop at `rate`
/// calls per second in all.
pub(crate) struct Load {
    pub(crate) call: Call,
    pub(crate) callers: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) duration: Duration,
    pub(crate) channels: Vec<Channel>,
    pub(crate) fixture: Arc<Fixture>,
}

impl Load {
    pub(crate) async fn run(self) -> anyhow::Result<Outcome> {
        let callers = self.callers.max(1);
        let started = Instant::now();
        let deadline = started + self.duration;
        // Open loop: caller c sends its k-th call at started + (k * callers + c) / rate.
        let period = self
            .rate
            .filter(|rate| *rate > 0.0)
            .map(|rate| Duration::from_secs_f64(callers as f64 / rate));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(callers);
        for id in 0..callers {
            let mut caller = Caller {
                call: self.call,
                auth: AuthServiceClient::new(self.channels[id % self.channels.len()].clone()),
                health: HealthClient::new(self.channels[id % self.channels.len()].clone()),
                fixture: Arc::clone(&self.fixture),
                next: Arc::clone(&next),
                refresh_token: String::new(),
            };
            let offset = period.map(|p| p.mul_f64(id as f64 / callers as f64));
            tasks.push(tokio::spawn(async move {
                let mut outcome = Outcome::new()?;
                let mut scheduled = offset.map(|offset| started + offset);
                loop {
                    let sent = match scheduled {
                        None => Instant::now(),
                        Some(at) if at >= deadline => break,
                        // Behind schedule because the previous call took too long: the
                        // wait counts, as the user of an open system would feel it.
                        Some(at) if Instant::now() > at => at,
                        Some(at) => {
                            tokio::time::sleep_until(at.into()).await;
                            // Timer granularity is ours, not the server's: not counted.
                            Instant::now()
                        }
                    };
                    if sent >= deadline {
                        break;
                    }
                    let result = caller.send().await;
                    let took = sent.elapsed().as_micros() as u64;
                    match result {
                        Ok(()) => {
                            outcome.ok += 1;
                            outcome.latency.saturating_record(took);
                        }
                        Err(status) => {
                            *outcome
                                .errors
                                .entry(format!("{:?}", status.code()))
                                .or_default() += 1;
                            outcome.error_latency.saturating_record(took);
                        }
                    }
                    scheduled = scheduled.zip(period).map(|(at, period)| at + period);
                }
                caller.finish();
                anyhow::Ok(outcome)
            }));
        }
        let mut total = Outcome::new()?;
        for task in tasks {
            total.merge(task.await??)?;
        }
        total.elapsed = started.elapsed();
        Ok(total)
    }
}

/// One caller's clients and state.
struct Caller {
    call: Call,
    auth: AuthServiceClient<Channel>,
    health: HealthClient<Channel>,
    fixture: Arc<Fixture>,
    next: Arc<AtomicUsize>,
    /// Refresh callers each follow a rotation chain of their own.
    refresh_token: String,
}

impl Caller {
    async fn send(&mut self) -> Result<(), Status> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let fixture = &self.fixture;
        match self.call {
            Call::Health => self
                .health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(drop),
            Call::ValidateWarm => validate(&mut self.auth, &fixture.tokens[0]).await,
            Call::ValidateCold | Call::ValidateUncached => {
                let token = &fixture.tokens[i % fixture.tokens.len()];
                validate(&mut self.auth, token).await
            }
            Call::Login => self
                .auth
                .login(pb::LoginRequest {
                    email: fixture.emails[i % fixture.emails.len()].clone(),
                    password: fixture.password.into(),
                })
                .await
                .map(drop),
            Call::Register => self
                .auth
                .register(pb::RegisterRequest {
                    email: format!(
                        "bench-{}-new-{}@example.com",
                        std::process::id(),
                        NEW_USERS.fetch_add(1, Ordering::Relaxed)
                    ),
                    password: fixture.password.into(),
                    name: "Bench".into(),
                })
                .await
                .map(drop),
            Call::CraftedRegister => self
                .auth
                .register(pb::RegisterRequest {
                    email: format!(
                        "bench-{}-crafted-{}@example.com",
                        std::process::id(),
                        NEW_USERS.fetch_add(1, Ordering::Relaxed)
                    ),
                    password: CRAFTED_PASSWORD_PATTERN.chars().cycle().take(128).collect(),
                    name: "Crafted".into(),
                })
                .await
                .map(drop),
            Call::Refresh => {
                if self.refresh_token.is_empty() {
                    self.refresh_token = fixture.take_refresh_chain().ok_or_else(|| {
                        Status::failed_precondition("no refresh chain left: raise --users")
                    })?;
                }
                let response = self
                    .auth
                    .refresh(pb::RefreshRequest {
                        refresh_token: std::mem::take(&mut self.refresh_token),
                    })
                    .await?;
                self.refresh_token = refresh_token_of(response.into_inner().tokens);
                Ok(())
            }
        }
    }
}

impl Caller {
    /// Gives back the refresh chain this caller followed.
    fn finish(self) {
        if !self.refresh_token.is_empty() {
            self.fixture.give_back_refresh_chain(self.refresh_token);
        }
    }
}

fn refresh_token_of(tokens: Option<pb::TokenPair>) -> String {
    tokens.map(|t| t.refresh_token).unwrap_or_default()
}

async fn validate(auth: &mut AuthServiceClient<Channel>, token: &str) -> Result<(), Status> {
    let response = auth
        .validate_token(pb::ValidateTokenRequest {
            token: token.to_owned(),
        })
        .await?
        .into_inner();
    if response.active {
        Ok(())
    } else {
        // Not a transport error, but a wrong answer: counted as a failure.
        Err(Status::failed_precondition("token not active"))
    }
}

/// Latencies from 1 us to 60 s, to three significant figures.
pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}
