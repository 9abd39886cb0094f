//! Where the store lives and how it is reached, as the edge (the configuration) hands it
//! over, checked.

use std::time::Duration;

use secrecy::SecretString;

/// The database engine, from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// The engine a URL names, if it is one authd runs on.
    pub fn of_url(url: &str) -> Option<Self> {
        match url.split_once(':')?.0 {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" => Some(Self::MySql),
            _ => None,
        }
    }

    /// Safe to log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    /// Its name in traces (OpenTelemetry's `db.system.name`).
    pub fn system_name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgresql",
            // MariaDB speaks MySQL's protocol; the driver cannot tell them apart.
            Self::MySql => "mysql",
        }
    }
}

/// When SQLite syncs its write-ahead log to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSync {
    /// At every commit: an answered call survives a power cut.
    EveryCommit,
    /// At checkpoints: a crash of authd loses nothing, a power cut the last commits.
    AtCheckpoints,
}

/// Where the store lives and how it is reached.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// May carry a password: never printed.
    pub url: SecretString,
    pub backend: Backend,
    /// Pooled connections; `None` for the engine's default.
    pub max_connections: Option<u32>,
    /// How long a call waits for a connection.
    pub acquire_timeout: Duration,
    /// How long a statement may run; a store call gives up a moment later.
    pub statement_timeout: Duration,
    pub sqlite_sync: SqliteSync,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("backend", &self.backend)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("sqlite_sync", &self.sqlite_sync)
            .finish_non_exhaustive()
    }
}

impl DatabaseSettings {
    pub(super) fn backend(&self) -> &'static str {
        self.backend.as_str()
    }
}
