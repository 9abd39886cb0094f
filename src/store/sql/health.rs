//! Whether the database serves: it answers, and it takes writes. A database that is out of
//! space or read-only still answers reads, so a ping alone would call it healthy.

use std::{path::PathBuf, sync::Mutex};

use chrono::Utc;
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, DbErr, EntityTrait as _, QueryFilter as _, Set,
    TransactionTrait as _,
};
use uuid::Uuid;

use super::super::{StoreError, entities::write_probe};
use crate::sync;

/// What the health check found.
#[derive(Debug)]
pub enum DatabaseHealth {
    Serving,
    /// It answers, but refused a write since the last check, or refuses the check's own.
    RefusingWrites,
    Unreachable(StoreError),
}

/// Refused writes as the store meets them, for the health check.
#[derive(Debug)]
pub(super) struct WriteHealth {
    /// The database, as log lines name it.
    database: String,
    /// Where an on-disk SQLite database lives.
    sqlite_directory: Option<PathBuf>,
    state: Mutex<State>,
}

/// The free space a SQLite database's disk needs before writes count as back: a write that
/// passes may only reuse room a failed larger one left in the write-ahead log, so the
/// probe alone would call a full disk writable. About one log's worth before SQLite folds
/// it into the database file (1000 pages).
const SQLITE_FREE_BYTES: u64 = 4 << 20;

#[derive(Debug, Default)]
struct State {
    refusing: bool,
    /// Writes refused so far, and that count when the health check last looked.
    refusals: u64,
    seen: u64,
}

/// What the check learns without writing.
#[derive(Debug)]
pub(super) enum Look {
    Known(DatabaseHealth),
    /// Writes were refused; a write of the check's own must tell whether they are back.
    /// Holds the refusal count at the start, which the probe's success must find unchanged.
    Probe(u64),
}

impl WriteHealth {
    pub(super) fn new(database: String, sqlite_directory: Option<PathBuf>) -> Self {
        Self {
            database,
            sqlite_directory,
            state: Mutex::default(),
        }
    }

    /// Whether the disk of a SQLite database has room for writes to come back; always for
    /// other databases, whose disks are not ours to see.
    pub(super) fn room_on_disk(&self) -> bool {
        let Some(directory) = &self.sqlite_directory else {
            return true;
        };
        match rustix::fs::statvfs(directory) {
            Ok(fs) => fs.f_bavail.saturating_mul(fs.f_frsize) >= SQLITE_FREE_BYTES,
            // Cannot tell: let the probe's write decide.
            Err(_) => true,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Notes a store error; the first refused write of a spell is logged, naming the
    /// database.
    pub(super) fn observe(&self, err: &StoreError) {
        let reason = match err {
            StoreError::Full(_) => "it is out of space",
            StoreError::WritesFailing(_) => "it is read-only or its storage fails",
            _ => return,
        };
        let mut state = self.state();
        state.refusals += 1;
        if !state.refusing {
            state.refusing = true;
            tracing::error!(
                "the {} refuses writes: {reason}; calls that write fail and health reports \
                 NOT_SERVING until a write goes through again",
                self.database,
            );
        }
    }

    /// What the check can say without writing. A refusal since the last look keeps health
    /// NOT_SERVING for a whole interval before any probe, so clients' failing writes and
    /// the probe's passing one do not flap it back at once.
    pub(super) fn look(&self) -> Look {
        let mut state = self.state();
        if state.refusals != state.seen {
            state.seen = state.refusals;
            return Look::Known(DatabaseHealth::RefusingWrites);
        }
        if !state.refusing {
            return Look::Known(DatabaseHealth::Serving);
        }
        Look::Probe(state.refusals)
    }

    /// A probe's write went through: writes are back, unless another was refused meanwhile.
    pub(super) fn probed(&self, refusals_at_start: u64) -> DatabaseHealth {
        let mut state = self.state();
        if state.refusals != refusals_at_start {
            return DatabaseHealth::RefusingWrites;
        }
        state.refusing = false;
        tracing::info!("the {} accepts writes again", self.database);
        DatabaseHealth::Serving
    }
}

/// A write of the size a call makes: a row with 16 KiB of random bytes (no page has room
/// for it by chance, and no compression shrinks it), deleted in the same transaction.
pub(super) async fn probe_write(db: &DatabaseConnection) -> Result<(), DbErr> {
    let mut payload = vec![0; 16 * 1024];
    getrandom::fill(&mut payload).map_err(|err| DbErr::Custom(format!("random bytes: {err}")))?;
    let id = Uuid::now_v7();
    let txn = db.begin().await?;
    write_probe::Entity::insert(write_probe::ActiveModel {
        id: Set(id),
        written_at: Set(Utc::now()),
        payload: Set(payload),
    })
    .exec_without_returning(&txn)
    .await?;
    write_probe::Entity::delete_many()
        .filter(write_probe::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    txn.commit().await
}
