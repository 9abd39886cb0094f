//! Revocations pushed by PostgreSQL: a statement trigger on `sessions.revoked_at` and on
//! `user_changes` runs `pg_notify('authd_revocations', '')`, which the server delivers when
//! the revoking transaction commits (see the migration). A notice carries nothing: it only
//! tells a replica to sync now rather than at its next poll, so the poll stays the one
//! way a revocation is read, and a notice lost with a dropped connection costs time, not
//! a revocation.

use std::{str::FromStr as _, time::Duration};

use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use secrecy::{ExposeSecret as _, SecretString};

use super::{Backend, DatabaseSettings};

/// The channel the trigger notifies.
const CHANNEL: &str = "authd_revocations";
/// The listening connection's `application_name`, which names it in `pg_stat_activity`.
pub const LISTENER_NAME: &str = "authd revocation listener";
/// The first pause before listening again after the connection dropped; it doubles up to
/// [`MAX_RETRY_PAUSE`] while connecting fails. The poll covers the gap.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(500);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// Notices of revocations committed by any replica, on a connection of their own.
#[derive(Clone)]
pub struct RevocationNotices {
    url: SecretString,
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
        (settings.backend == Backend::Postgres).then(|| Self {
            url: settings.url.clone(),
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
                        match listener.try_recv().await {
                            Ok(Some(_)) => on(Notice::Revoked),
                            Ok(None) => break anyhow::anyhow!("the connection was lost"),
                            Err(err) => break anyhow::Error::from(err),
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
        let options =
            PgConnectOptions::from_str(self.url.expose_secret())?.application_name(LISTENER_NAME);
        // A pool of one, for this connection alone; the listener reconnects through it.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options)
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        // Reconnecting is done here, with a pause and a fresh sync: a drop must be seen.
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }
}
