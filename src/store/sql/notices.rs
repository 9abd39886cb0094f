//! Revocations pushed by PostgreSQL: a statement trigger on `sessions.revoked_at` and on
//! `user_changes` runs `pg_notify('authd_revocations', '')`, which the server delivers when
//! the revoking transaction commits (see the migration). A notice carries nothing: it only
//! tells a replica to sync now rather than at its next poll, so the poll stays the one
//! way a revocation is read, and a notice lost with a dropped connection costs time, not
//! a revocation.

use std::{str::FromStr as _, time::Duration};

use sea_orm::sqlx::{
    self,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use secrecy::ExposeSecret as _;

use super::{Backend, DatabaseSettings};

/// The channel the trigger notifies.
const CHANNEL: &str = "authd_revocations";
/// The listening connection's `application_name`, which names it in `pg_stat_activity`.
pub const LISTENER_NAME: &str = "authd revocation listener";
/// The first pause before listening again after the connection dropped; it doubles up to
/// [`MAX_RETRY_PAUSE`] while connecting fails. The poll covers the gap.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(500);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);
/// A connection quiet this long is asked a `SELECT 1`: one dropped without a word (a
/// NAT's or a failover's) would otherwise wait for notices for ever.
const QUIET_CHECK_AFTER: Duration = Duration::from_secs(30);

/// Notices of revocations committed by any replica, on a connection of their own (one
/// more than the pool's).
#[derive(Clone)]
pub struct RevocationNotices {
    /// Hold the password, if the URL has one: never printed.
    options: PgConnectOptions,
    /// How long connecting, and the quiet check, may take.
    timeout: Duration,
}

impl std::fmt::Debug for RevocationNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevocationNotices")
    }
}

/// What happened to the listening connection.
#[derive(Debug)]
pub enum Notice {
    /// Listening, on a new connection: notices sent before were missed.
    Listening,
    /// A revocation was committed somewhere.
    Revoked,
    /// The connection dropped or could not be made; listening again after `retry_in`.
    Lost {
        error: anyhow::Error,
        retry_in: Duration,
    },
}

impl RevocationNotices {
    /// On PostgreSQL; other databases have no push and rely on the poll.
    pub fn of(settings: &DatabaseSettings) -> Option<Self> {
        if settings.backend != Backend::Postgres {
            return None;
        }
        // The URL was opened as the pool's already: it parses.
        let options = PgConnectOptions::from_str(settings.url.expose_secret()).ok()?;
        Some(Self {
            options: options.application_name(LISTENER_NAME),
            timeout: settings.acquire_timeout,
        })
    }

    /// Listens for ever, telling `on` what happens, reconnecting after a pause whenever
    /// the connection is lost (the server restarted, the backend was terminated). Runs
    /// until dropped.
    pub async fn listen(self, mut on: impl FnMut(Notice)) {
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let error = match self.connect().await {
                Ok(mut listener) => {
                    on(Notice::Listening);
                    pause = FIRST_RETRY_PAUSE;
                    loop {
                        let quiet = QUIET_CHECK_AFTER;
                        match tokio::time::timeout(quiet, listener.try_recv()).await {
                            Ok(Ok(Some(_))) => on(Notice::Revoked),
                            Ok(Ok(None)) => break anyhow::anyhow!("the connection was lost"),
                            Ok(Err(err)) => break anyhow::Error::from(err),
                            Err(_) => {
                                if let Err(err) = self.check(&mut listener).await {
                                    break err;
                                }
                            }
                        }
                    }
                }
                Err(err) => err,
            };
            on(Notice::Lost {
                error,
                retry_in: pause,
            });
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    async fn connect(&self) -> anyhow::Result<PgListener> {
        let connect = async {
            // A pool of one, for this connection alone; the listener connects through it.
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(self.timeout)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_with(self.options.clone())
                .await?;
            let mut listener = PgListener::connect_with(&pool).await?;
            // Reconnecting is done here, with a pause and a fresh sync: a drop must be seen.
            listener.eager_reconnect(false);
            listener.ignore_pool_close_event(true);
            listener.listen(CHANNEL).await?;
            anyhow::Ok(listener)
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| anyhow::anyhow!("connecting took over {:?}", self.timeout))?
    }

    /// Whether a quiet connection still answers; notices that arrive meanwhile are kept
    /// for the next receive.
    async fn check(&self, listener: &mut PgListener) -> anyhow::Result<()> {
        let check = sqlx::raw_sql("SELECT 1").execute(&mut *listener);
        match tokio::time::timeout(self.timeout, check).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => anyhow::bail!(
                "a quiet connection did not answer within {:?}",
                self.timeout
            ),
        }
    }
}
