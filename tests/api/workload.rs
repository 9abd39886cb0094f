//! A writing workload for fault tests: clients that each run every writing RPC in turn,
//! a journal of what was acknowledged and what was cut off, and the check that follows a
//! fault: every acknowledged write is in the database, and every write cut off is there
//! whole or not at all.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use authd::proto::auth::v1::{self as pb, InactiveReason, auth_service_client::AuthServiceClient};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, DbBackend, Statement, Value};
use sha2::{Digest as _, Sha256};
use tokio::{sync::mpsc, task::JoinSet};
use tonic::{Code, IntoRequest, Request, Status, transport::Channel};

use crate::helpers::{PASSWORD, TestDb, with_bearer};

/// The writing RPCs, in the order each client runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rpc {
    Register,
    Login,
    Refresh,
    Logout,
    LogoutAll,
}

impl Rpc {
    pub const ALL: [Rpc; 5] = [
        Rpc::Register,
        Rpc::Login,
        Rpc::Refresh,
        Rpc::Logout,
        Rpc::LogoutAll,
    ];
}

/// A write whose answer came back OK.
#[derive(Debug)]
enum Acknowledged {
    Register { email: String, refresh: String },
    Login { refresh: String },
    Refresh { old: String, new: String },
    Logout { refresh: String, access: String },
    LogoutAll { email: String },
}

/// A write whose answer never came (or came as a fault): it may or may not have happened.
#[derive(Debug)]
enum CutOff {
    Register { email: String },
    Login { email: String, sessions_before: i64 },
    Refresh { old: String },
    Logout { refresh: String },
    LogoutAll { email: String },
}

impl CutOff {
    fn rpc(&self) -> Rpc {
        match self {
            Self::Register { .. } => Rpc::Register,
            Self::Login { .. } => Rpc::Login,
            Self::Refresh { .. } => Rpc::Refresh,
            Self::Logout { .. } => Rpc::Logout,
            Self::LogoutAll { .. } => Rpc::LogoutAll,
        }
    }
}

/// What happened to the writes cut off, per RPC, once the database is looked at.
#[derive(Debug, Default)]
struct Count {
    acknowledged: usize,
    cut_off_applied: usize,
    cut_off_not_applied: usize,
}

/// Everything the clients saw.
#[derive(Debug, Default)]
pub struct Journal {
    acknowledged: Vec<Acknowledged>,
    /// How long each acknowledged call took.
    took: Vec<(Rpc, Duration)>,
    cut_off: Vec<CutOff>,
    /// Failures that are not a fault's clear status: each one is a bug.
    wrong: Vec<String>,
}

/// How the clients run.
#[derive(Debug, Clone)]
pub struct Options {
    on_failure: OnFailure,
    /// Where each RPC's name is sent just before it is called.
    announce: Option<mpsc::UnboundedSender<Rpc>>,
    /// One call of each sequence (each RPC in turn) gets a deadline at a random fraction
    /// (0.1 to 1.5) of what such calls took so far: the server gives up on it at whatever
    /// point it has reached, a transaction's BEGIN or COMMIT included.
    deadlines: bool,
}

impl Options {
    pub fn new(on_failure: OnFailure) -> Self {
        Self {
            on_failure,
            announce: None,
            deadlines: false,
        }
    }

    pub fn announcing(mut self, announce: mpsc::UnboundedSender<Rpc>) -> Self {
        self.announce = Some(announce);
        self
    }

    pub fn deadlines(mut self) -> Self {
        self.deadlines = true;
        self
    }
}

/// How the clients react to a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The server was killed: stop.
    Stop,
    /// The database faltered: start a new sequence after a pause.
    Continue,
}

/// Clients running the workload until [`Workload::finish`].
pub struct Workload {
    journal: Arc<Mutex<Journal>>,
    stop: Arc<AtomicBool>,
    clients: JoinSet<()>,
}

impl Workload {
    /// `clients` clients on `channel`, their emails starting with `prefix`.
    pub fn start(channel: &Channel, prefix: &str, clients: usize, on_failure: OnFailure) -> Self {
        Self::start_with(channel, prefix, clients, Options::new(on_failure))
    }

    pub fn start_with(channel: &Channel, prefix: &str, clients: usize, options: Options) -> Self {
        let journal = Arc::new(Mutex::new(Journal::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for id in 0..clients {
            let client = Client {
                api: AuthServiceClient::new(channel.clone()),
                journal: Arc::clone(&journal),
                prefix: format!("{prefix}-{id}"),
                options: options.clone(),
                calling: None,
                random: 0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1),
                cutting: None,
                deadline: false,
            };
            tasks.spawn(client.run(Arc::clone(&stop)));
        }
        Self {
            journal,
            stop,
            clients: tasks,
        }
    }

    /// Stops the clients and returns what they saw.
    pub async fn finish(mut self) -> Journal {
        self.stop.store(true, Ordering::SeqCst);
        while let Some(joined) = self.clients.join_next().await {
            joined.unwrap();
        }
        std::mem::take(&mut *self.journal.lock().unwrap())
    }

    /// How many writes were acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.journal.lock().unwrap().acknowledged.len()
    }

    /// Whether a call of every RPC was cut off so far.
    pub fn cut_off_every_rpc(&self) -> bool {
        let journal = self.journal.lock().unwrap();
        Rpc::ALL
            .iter()
            .all(|rpc| journal.cut_off.iter().any(|cut| cut.rpc() == *rpc))
    }
}

impl Journal {
    /// The median time an acknowledged call of `rpc` took, if any was.
    pub fn typical(&self, rpc: Rpc) -> Option<Duration> {
        let mut took: Vec<Duration> = self
            .took
            .iter()
            .filter(|(r, _)| *r == rpc)
            .map(|(_, d)| *d)
            .collect();
        took.sort();
        took.get(took.len() / 2).copied()
    }

    /// How many calls of `rpc` were cut off.
    pub fn cut_off(&self, rpc: Rpc) -> usize {
        self.cut_off.iter().filter(|cut| cut.rpc() == rpc).count()
    }

    pub fn absorb(&mut self, other: Journal) {
        self.acknowledged.extend(other.acknowledged);
        self.took.extend(other.took);
        self.cut_off.extend(other.cut_off);
        self.wrong.extend(other.wrong);
    }

    /// Checks the database against the journal and returns the counts, per RPC. Panics on
    /// an acknowledged write that is missing, a write applied in part, or a wrong answer.
    pub async fn verify(&self, db: &TestDb, channel: &Channel) -> Report {
        assert!(
            self.wrong.is_empty(),
            "calls failed with something other than a fault's clear status: {:?}",
            self.wrong
        );
        let store = Db(db.connect().await);
        let mut counts: BTreeMap<Rpc, Count> = BTreeMap::new();
        for ack in &self.acknowledged {
            let (rpc, kept) = match ack {
                Acknowledged::Register { email, refresh } => (
                    Rpc::Register,
                    store.user_exists(email).await && store.refresh_known(refresh).await,
                ),
                Acknowledged::Login { refresh } => (Rpc::Login, store.refresh_known(refresh).await),
                Acknowledged::Refresh { old, new } => (
                    Rpc::Refresh,
                    store.refresh_spent(old).await && store.refresh_known(new).await,
                ),
                Acknowledged::Logout { refresh, access } => {
                    let validated = AuthServiceClient::new(channel.clone())
                        .validate_token(pb::ValidateTokenRequest {
                            token: access.clone(),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    let revoked = !validated.active
                        && validated.reason() == InactiveReason::Revoked
                        && store.session_revoked(refresh).await;
                    (Rpc::Logout, revoked)
                }
                Acknowledged::LogoutAll { email } => {
                    (Rpc::LogoutAll, store.live_sessions(email).await == 0)
                }
            };
            assert!(kept, "acknowledged but not in the database: {ack:?}");
            counts.entry(rpc).or_default().acknowledged += 1;
        }
        for cut in &self.cut_off {
            let (rpc, applied) = match cut {
                CutOff::Register { email } => (Rpc::Register, store.user_exists(email).await),
                CutOff::Login {
                    email,
                    sessions_before,
                } => {
                    let sessions = store.sessions(email).await;
                    assert!(
                        sessions == *sessions_before || sessions == sessions_before + 1,
                        "{email}: {sessions} sessions after {sessions_before} and one login"
                    );
                    (Rpc::Login, sessions > *sessions_before)
                }
                CutOff::Refresh { old } => {
                    let spent = store.refresh_spent(old).await;
                    assert!(
                        spent || store.refresh_current(old).await,
                        "a token cut off mid-rotation is neither current nor spent"
                    );
                    (Rpc::Refresh, spent)
                }
                CutOff::Logout { refresh } => (Rpc::Logout, store.session_revoked(refresh).await),
                CutOff::LogoutAll { email } => {
                    // Two sessions were live before it: both end, or neither.
                    let live = store.live_sessions(email).await;
                    assert!(live != 1, "{email}: logout of all sessions applied in part");
                    (Rpc::LogoutAll, live == 0)
                }
            };
            let count = counts.entry(rpc).or_default();
            if applied {
                count.cut_off_applied += 1;
            } else {
                count.cut_off_not_applied += 1;
            }
        }
        store.assert_whole().await;
        store.0.close().await.unwrap();
        Report(counts)
    }
}

/// The counts of a verified run, printed in the test's output.
pub struct Report(BTreeMap<Rpc, Count>);

impl Report {
    /// Calls of this RPC cut off by the fault.
    pub fn cut_off(&self, rpc: Rpc) -> usize {
        self.0
            .get(&rpc)
            .map_or(0, |c| c.cut_off_applied + c.cut_off_not_applied)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (rpc, c) in &self.0 {
            writeln!(
                f,
                "  {rpc:?}: {} acknowledged, all kept; cut off: {} applied whole, {} not applied",
                c.acknowledged, c.cut_off_applied, c.cut_off_not_applied,
            )?;
        }
        Ok(())
    }
}

struct Client {
    api: AuthServiceClient<Channel>,
    journal: Arc<Mutex<Journal>>,
    prefix: String,
    options: Options,
    /// The call in flight, and when it started.
    calling: Option<(Rpc, Instant)>,
    /// xorshift64 state, for deadlines.
    random: u64,
    /// The RPC whose call gets a deadline in this sequence.
    cutting: Option<Rpc>,
    /// Whether the call in flight has a deadline.
    deadline: bool,
}

/// The statuses a fault may answer with: the database gone, refusing writes or full; where
/// the server itself was killed, the client's own transport error; for a call given a
/// deadline, running out of time. Anything else, a server-sent UNKNOWN or INTERNAL
/// included, is a wrong answer.
fn is_fault(status: &Status, options: &Options, had_deadline: bool) -> bool {
    // The client makes a status up from a failed connection, with that failure as its
    // source; a status the server sent has none.
    let transport = matches!(status.code(), Code::Unknown | Code::Cancelled)
        && std::error::Error::source(status).is_some();
    let out_of_time = matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded);
    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
        || (transport && options.on_failure == OnFailure::Stop)
        || (out_of_time && had_deadline)
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let email = format!("{}-{n}@example.com", self.prefix);
            self.cutting = Some(Rpc::ALL[n % Rpc::ALL.len()]);
            n += 1;
            if self.sequence(&email).await.is_err() {
                if self.options.on_failure == OnFailure::Stop {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Announces a call of `rpc` and makes its request, with a deadline if there are.
    fn calling<T>(&mut self, rpc: Rpc, message: impl IntoRequest<T>) -> Request<T> {
        if let Some(announce) = &self.options.announce {
            let _ = announce.send(rpc);
        }
        let mut request = message.into_request();
        let typical = self.journal.lock().unwrap().typical(rpc);
        let cut = self.options.deadlines && Some(rpc) == self.cutting;
        self.deadline = false;
        if let Some(typical) = typical.filter(|_| cut) {
            self.deadline = true;
            self.random ^= self.random << 13;
            self.random ^= self.random >> 7;
            self.random ^= self.random << 17;
            let tenths = 1 + self.random % 15;
            request.set_timeout(typical * u32::try_from(tenths).unwrap() / 10);
        }
        self.calling = Some((rpc, Instant::now()));
        request
    }

    fn ack(&self, ack: Acknowledged) {
        let mut journal = self.journal.lock().unwrap();
        journal.acknowledged.push(ack);
        if let Some((rpc, started)) = self.calling {
            journal.took.push((rpc, started.elapsed()));
        }
    }

    /// Records a failed call: a cut-off write when the failure is a fault's.
    fn failed(&self, status: Status, cut: CutOff) -> Result<(), ()> {
        let mut journal = self.journal.lock().unwrap();
        if is_fault(&status, &self.options, self.deadline) {
            journal.cut_off.push(cut);
        } else {
            journal.wrong.push(format!("{cut:?}: {status:?}"));
        }
        Err(())
    }

    /// Register, log in twice, refresh five times, log one session out, then all of them.
    async fn sequence(&mut self, email: &str) -> Result<(), ()> {
        let request = self.calling(
            Rpc::Register,
            pb::RegisterRequest {
                email: email.to_owned(),
                password: PASSWORD.to_owned(),
                name: "Fault".to_owned(),
            },
        );
        let registered = match self.api.register(request).await {
            Ok(r) => r.into_inner().tokens.unwrap(),
            Err(s) => {
                return self.failed(
                    s,
                    CutOff::Register {
                        email: email.into(),
                    },
                );
            }
        };
        self.ack(Acknowledged::Register {
            email: email.to_owned(),
            refresh: registered.refresh_token.clone(),
        });
        let mut logins = Vec::new();
        for sessions_before in [1, 2] {
            let request = pb::LoginRequest {
                email: email.to_owned(),
                password: PASSWORD.to_owned(),
            };
            let request = self.calling(Rpc::Login, request);
            let tokens = match self.api.login(request).await {
                Ok(r) => r.into_inner().tokens.unwrap(),
                Err(s) => {
                    let email = email.to_owned();
                    return self.failed(
                        s,
                        CutOff::Login {
                            email,
                            sessions_before,
                        },
                    );
                }
            };
            self.ack(Acknowledged::Login {
                refresh: tokens.refresh_token.clone(),
            });
            logins.push(tokens);
        }
        let mut current = registered.refresh_token;
        for _ in 0..5 {
            let request = pb::RefreshRequest {
                refresh_token: current.clone(),
            };
            let request = self.calling(Rpc::Refresh, request);
            let new = match self.api.refresh(request).await {
                Ok(r) => r.into_inner().tokens.unwrap().refresh_token,
                Err(s) => return self.failed(s, CutOff::Refresh { old: current }),
            };
            self.ack(Acknowledged::Refresh {
                old: std::mem::replace(&mut current, new.clone()),
                new,
            });
        }
        let first = &logins[0];
        let request = pb::LogoutRequest {
            refresh_token: first.refresh_token.clone(),
            all_sessions: false,
        };
        let request = self.calling(Rpc::Logout, request);
        if let Err(s) = self.api.logout(request).await {
            let refresh = first.refresh_token.clone();
            return self.failed(s, CutOff::Logout { refresh });
        }
        self.ack(Acknowledged::Logout {
            refresh: first.refresh_token.clone(),
            access: first.access_token.clone(),
        });
        let request = with_bearer(
            pb::LogoutRequest {
                refresh_token: String::new(),
                all_sessions: true,
            },
            Some(&logins[1].access_token),
        );
        let request = self.calling(Rpc::LogoutAll, request);
        if let Err(s) = self.api.logout(request).await {
            return self.failed(
                s,
                CutOff::LogoutAll {
                    email: email.into(),
                },
            );
        }
        self.ack(Acknowledged::LogoutAll {
            email: email.to_owned(),
        });
        Ok(())
    }
}

/// The test's own view of the database.
struct Db(DatabaseConnection);

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Db {
    async fn count(&self, sql: &str, values: Vec<Value>) -> i64 {
        let backend = self.0.get_database_backend();
        let sql = if backend == DbBackend::Postgres {
            // $1, $2, ... in place of each ?
            let mut numbered = String::new();
            for (i, part) in sql.split('?').enumerate() {
                if i > 0 {
                    numbered.push_str(&format!("${i}"));
                }
                numbered.push_str(part);
            }
            numbered
        } else {
            sql.to_owned()
        };
        let row = self
            .0
            .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    async fn user_exists(&self, email: &str) -> bool {
        self.count(
            "SELECT COUNT(*) FROM users WHERE email = ?",
            vec![email.into()],
        )
        .await
            == 1
    }

    async fn refresh_current(&self, token: &str) -> bool {
        let sql = "SELECT COUNT(*) FROM sessions WHERE refresh_hash = ?";
        self.count(sql, vec![token_hash(token).into()]).await == 1
    }

    async fn refresh_spent(&self, token: &str) -> bool {
        let sql = "SELECT COUNT(*) FROM spent_refresh_tokens WHERE token_hash = ?";
        self.count(sql, vec![token_hash(token).into()]).await == 1
    }

    /// Current or spent: the session it started or rotated into was stored.
    async fn refresh_known(&self, token: &str) -> bool {
        self.refresh_current(token).await || self.refresh_spent(token).await
    }

    async fn session_revoked(&self, token: &str) -> bool {
        let sql = "SELECT COUNT(*) FROM sessions WHERE refresh_hash = ? AND revoked_at IS NOT NULL";
        self.count(sql, vec![token_hash(token).into()]).await == 1
    }

    async fn sessions(&self, email: &str) -> i64 {
        let sql = "SELECT COUNT(*) FROM sessions s JOIN users u ON s.user_id = u.id \
                   WHERE u.email = ?";
        self.count(sql, vec![email.into()]).await
    }

    async fn live_sessions(&self, email: &str) -> i64 {
        let sql = "SELECT COUNT(*) FROM sessions s JOIN users u ON s.user_id = u.id \
                   WHERE u.email = ? AND s.revoked_at IS NULL";
        self.count(sql, vec![email.into()]).await
    }

    /// What every write leaves whole or not at all, over the whole database: a user with
    /// its first session and its event; a session with the event of the call that started
    /// it; one spent token and one event per rotation; an event for every session logged
    /// out, and a logged-out session for every event.
    async fn assert_whole(&self) {
        let checks = [
            (
                "users without a session or a register event",
                "SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
                 (SELECT 1 FROM sessions s WHERE s.user_id = u.id) OR NOT EXISTS \
                 (SELECT 1 FROM audit_events a WHERE a.user_id = u.id AND a.kind = 'register')",
            ),
            (
                "sessions without the event that started them",
                "SELECT COUNT(*) FROM sessions s WHERE NOT EXISTS \
                 (SELECT 1 FROM audit_events a WHERE a.session_id = s.id \
                  AND a.kind IN ('register', 'login') AND a.outcome = 'success')",
            ),
            (
                "events of sessions that were never stored",
                "SELECT COUNT(*) FROM audit_events a \
                 WHERE a.kind IN ('register', 'login') AND a.outcome = 'success' \
                 AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = a.session_id)",
            ),
            (
                "rotations without their spent token or their event",
                "SELECT COUNT(*) FROM sessions s WHERE s.generation <> \
                 (SELECT COUNT(*) FROM spent_refresh_tokens t WHERE t.session_id = s.id) \
                 OR s.generation <> (SELECT COUNT(*) FROM audit_events a \
                  WHERE a.session_id = s.id AND a.kind = 'refresh')",
            ),
            (
                "sessions logged out without an event",
                "SELECT COUNT(*) FROM sessions s WHERE s.revoked_reason = 'logout' \
                 AND NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.kind = 'logout' \
                  AND (a.session_id = s.id OR (a.outcome = 'all_sessions' \
                       AND a.user_id = s.user_id)))",
            ),
            (
                "logout events whose sessions are live",
                "SELECT COUNT(*) FROM audit_events a JOIN sessions s \
                 ON (a.outcome = 'success' AND s.id = a.session_id) \
                 OR (a.outcome = 'all_sessions' AND s.user_id = a.user_id) \
                 WHERE a.kind = 'logout' AND s.revoked_at IS NULL",
            ),
        ];
        for (what, sql) in checks {
            let found = self.count(sql, Vec::new()).await;
            assert_eq!(found, 0, "{what}: {found}");
        }
    }
}
