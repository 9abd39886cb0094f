//! The background tasks of a running server: each runs a step on a [`Periodic`] schedule
//! until the server stops.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::{Instant, Interval, MissedTickBehavior},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use super::{set_health, shutdown::Stage};
use crate::{
    auth::{
        Authenticator, Clock, KeySealer, KeySource, Keyring, Purged, Purger, Revocations,
        TokenSettings,
    },
    config::name_the_setting,
    grpc::PeerRateLimits,
    store::{DatabaseHealth, Notice, RevocationNotices, SqlStore},
};

/// A schedule that ends when the server stops.
#[derive(Debug)]
struct Periodic {
    ticker: Interval,
    stop: watch::Receiver<bool>,
}

impl Periodic {
    /// Every `period`, the first time after `first_after`. A slow step delays the next
    /// one rather than piling up behind it.
    fn new(first_after: Duration, period: Duration, stop: watch::Receiver<bool>) -> Self {
        let mut ticker = tokio::time::interval_at(Instant::now() + first_after, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { ticker, stop }
    }

    /// Waits for the next step: false once the server stops.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.ticker.tick() => true,
            _ = self.stop.changed() => false,
        }
    }
}

/// Logs a step that fails once when it starts failing and once when it recovers, not
/// at every step.
#[derive(Debug)]
struct OnChange {
    failing: bool,
    what: &'static str,
}

impl OnChange {
    fn new(what: &'static str) -> Self {
        Self {
            failing: false,
            what,
        }
    }

    fn note<E: Into<anyhow::Error>>(&mut self, result: Result<(), E>) {
        match result {
            Err(err) if !self.failing => {
                let err = err.into();
                tracing::warn!(error = %format!("{err:#}"), "{} failing", self.what);
                self.failing = true;
            }
            Ok(()) if self.failing => {
                tracing::info!("{} recovered", self.what);
                self.failing = false;
            }
            _ => {}
        }
    }
}

/// Probes the database: `database_ok` is false while it cannot be reached, and while it
/// refuses writes (out of space, read-only).
pub(super) fn health_probe(
    database_ok: Arc<AtomicBool>,
    store: SqlStore,
    interval: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut schedule = Periodic::new(Duration::ZERO, interval, stop);
        let mut serving = None;
        while schedule.next().await {
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
            database_ok.store(up, Ordering::Release);
            if serving == Some(false) && up {
                tracing::info!("database serving again");
            }
            serving = Some(up);
        }
    })
}

/// How often the health status is brought in line with the server's state.
const HEALTH_VIEW_TICK: Duration = Duration::from_millis(100);

/// The health status, as the calls see the server: SERVING while the database probe
/// passes and the revocation state is recent enough for ValidateToken to vouch for a
/// session (past that it answers UNAVAILABLE); NOT_SERVING at once when the stop begins.
pub(super) fn health_view(
    health: HealthReporter,
    database_ok: Arc<AtomicBool>,
    revocations: Arc<Revocations>,
    clock: Arc<dyn Clock>,
    mut stage: watch::Receiver<Stage>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(HEALTH_VIEW_TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut serving = None;
        loop {
            let stopping = *stage.borrow_and_update() >= Stage::Draining;
            let up = !stopping
                && database_ok.load(Ordering::Acquire)
                && revocations.is_current(clock.now());
            if serving != Some(up) {
                let status = if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                set_health(&health, status).await;
                serving = Some(up);
            }
            if stopping {
                return;
            }
            tokio::select! {
                _ = ticker.tick() => {}
                changed = stage.changed() => if changed.is_err() {
                    return;
                },
            }
        }
    })
}

/// Polls the database for revocations made elsewhere (see `auth::revocation`): every
/// sync interval, and at once when the database pushes a notice (PostgreSQL).
pub(super) fn revocation_sync(
    revocations: Arc<Revocations>,
    store: SqlStore,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let pushed = Arc::new(Notify::new());
        let listener = store
            .revocation_notices()
            .map(|notices| tokio::spawn(listen(notices, Arc::clone(&pushed))));
        let mut schedule = Periodic::new(Duration::ZERO, revocations.interval(), stop);
        let mut log = OnChange::new("revocation sync");
        loop {
            let was_pushed = tokio::select! {
                more = schedule.next() => match more {
                    true => false,
                    false => break,
                },
                () = pushed.notified() => true,
            };
            log.note(revocations.sync(&store, &store, clock.now()).await);
            if was_pushed {
                // Notices arriving meanwhile make one more poll, not one each.
                tokio::time::sleep(PUSHED_SYNC_GAP).await;
            }
        }
        if let Some(listener) = listener {
            listener.abort();
        }
    })
}

/// The least time between two polls woken by notices: a burst of revocations costs every
/// replica at most one poll per gap, and each waits at most this long.
const PUSHED_SYNC_GAP: Duration = Duration::from_millis(25);

/// Wakes the revocation sync at every notice, and once listening (again): notices sent
/// while the connection was down are gone, but a poll finds what they were about.
async fn listen(notices: RevocationNotices, pushed: Arc<Notify>) {
    let mut log = OnChange::new("listening for revocation notices");
    notices
        .listen(|notice| match notice {
            Notice::Listening => {
                log.note(anyhow::Ok(()));
                pushed.notify_one();
            }
            Notice::Revoked => pushed.notify_one(),
            Notice::Lost { error, retry_in } => {
                let retry_in = humantime::format_duration(retry_in);
                log.note(Err(error.context(format!("listening again in {retry_in}"))));
            }
        })
        .await;
}

/// What the key reload task needs.
#[derive(Debug)]
pub(super) struct KeyReload {
    pub(super) sealer: KeySealer,
    pub(super) settings: TokenSettings,
}

impl KeyReload {
    /// How long a fetched key set may be cached: half a reload interval. A new key is
    /// published two intervals before it signs and a replica serves it within one, which
    /// leaves a cache one interval, and half of it is kept as a margin (see
    /// `grpc::well_known`). A shared secret publishes no keys that could change.
    pub(super) fn jwks_max_age(&self) -> Duration {
        match &self.settings.keys {
            KeySource::Rotating(schedule) => schedule.reload_interval / 2,
            _ => Duration::from_secs(3600),
        }
    }
}

/// Re-reads the signing keys every reload interval, applying the rotation schedule, so
/// every replica publishes, uses and retires keys on time. The first reload comes one
/// interval after start-up, which has just loaded them.
pub(super) fn key_reload(
    keys: KeyReload,
    auth: Arc<Authenticator>,
    store: SqlStore,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let KeySource::Rotating(schedule) = &keys.settings.keys else {
            // A shared secret never changes.
            return;
        };
        let period = schedule.reload_interval;
        let mut schedule = Periodic::new(period, period, stop);
        while schedule.next().await {
            match Keyring::load(&store, &keys.settings, &keys.sealer, clock.now()).await {
                Ok(keyring) => auth.replace_keyring(keyring),
                Err(err) => {
                    let err = name_the_setting(err);
                    tracing::warn!(error = %format!("{err:#}"), "reloading signing keys failed")
                }
            }
        }
    })
}

/// Purges what can no longer matter every `interval` (see `auth::purge`); every replica
/// does, which costs nothing but a few empty deletes.
pub(super) fn purge(
    purger: Purger,
    interval: Duration,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut schedule = Periodic::new(Duration::ZERO, interval, stop);
        while schedule.next().await {
            let (purged, failed) = match purger.run_once(clock.now()).await {
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
pub(super) fn rate_limit_cleanup(
    limits: Arc<PeerRateLimits>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let minute = Duration::from_secs(60);
        let mut schedule = Periodic::new(Duration::ZERO, minute, stop);
        while schedule.next().await {
            limits.forget_idle();
        }
    })
}
