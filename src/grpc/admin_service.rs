//! `auth.v1.AdminService`: [`AdminGate`] decides who may call it, once for the whole
//! service; [`AdminGrpc`] translates between proto messages and `auth::Accounts`.

use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, service::Interceptor};
use uuid::Uuid;

use super::{
    convert::{caller, timestamp, user_to_proto},
    metadata::{ApiKeys, bearer_token},
    rate_limit::{Bucket, PeerRateLimits},
};
use crate::{
    auth::{
        AccountChange, Accounts, Actor, AuditOutcome, AuthError, Authenticator, Caller,
        FieldViolation, ImportedAccount, Introspection, NewAccount, PageTokens, UserQuery, UserRef,
    },
    proto::auth::v1::{self as pb, admin_service_server::AdminService},
    store::StoredAuditEvent,
};

/// Page size when none is asked for, and the most one page holds.
const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 500;
/// Refused calls being audited at once; beyond, a refusal is only logged, so a flood of
/// bad credentials cannot queue unbounded writes.
const REFUSALS_AUDITED_AT_ONCE: usize = 64;

/// Admits AdminService calls: a bearer access token whose (current) role is an admin role,
/// or an accepted `x-api-key`. The actor goes into the request's extensions for the
/// handlers and the audit trail; a refusal is audited and answered UNAUTHENTICATED (no or
/// a bad credential) or PERMISSION_DENIED (a valid token of another role).
#[derive(Debug, Clone)]
pub struct AdminGate {
    auth: Arc<Authenticator>,
    accounts: Arc<Accounts>,
    admin_roles: Arc<[String]>,
    keys: ApiKeys,
    /// Refusals are audited within the caller's Login budget: a flood of bad credentials
    /// costs no more writes than a flood of failed logins.
    rate_limits: Arc<PeerRateLimits>,
    auditing: Arc<Semaphore>,
}

impl AdminGate {
    pub fn new(
        auth: Arc<Authenticator>,
        accounts: Arc<Accounts>,
        admin_roles: Vec<String>,
        keys: ApiKeys,
        rate_limits: Arc<PeerRateLimits>,
    ) -> Self {
        Self {
            auth,
            accounts,
            admin_roles: admin_roles
                .into_iter()
                .map(|r| r.trim().to_owned())
                .collect(),
            keys,
            rate_limits,
            auditing: Arc::new(Semaphore::new(REFUSALS_AUDITED_AT_ONCE)),
        }
    }

    /// Who is calling, if they may. A presented bearer token decides; without one, the
    /// API key does.
    fn admit<T>(&self, request: &Request<T>) -> Result<Actor, (AuthError, Option<Actor>)> {
        if request.metadata().contains_key("authorization") {
            let token =
                bearer_token(request).map_err(|_| (AuthError::AdminUnauthenticated, None))?;
            // The role as it is now (ValidateToken's view), not as the token was issued.
            return match self.auth.validate(&token) {
                Ok(Introspection::Active(verified)) => {
                    let actor = Actor::User(verified.user_id);
                    if self.admin_roles.contains(&verified.role) {
                        Ok(actor)
                    } else {
                        Err((AuthError::AdminRoleRequired, Some(actor)))
                    }
                }
                Ok(Introspection::Inactive(_)) => Err((AuthError::AdminUnauthenticated, None)),
                Err(err @ AuthError::RevocationStale) => Err((err, None)),
                Err(_) => Err((AuthError::AdminUnauthenticated, None)),
            };
        }
        match self.keys.presented(request) {
            Some(digest) => Ok(Actor::ApiKey(hex::encode(&digest[..4]))),
            None => Err((AuthError::AdminUnauthenticated, None)),
        }
    }

    /// Audits a refused call in the background: the answer does not wait for it.
    fn audit_refusal(&self, mut caller: Caller, error: &AuthError, actor: Option<Actor>) {
        let outcome = match error {
            AuthError::AdminRoleRequired => AuditOutcome::PermissionDenied,
            AuthError::AdminUnauthenticated => AuditOutcome::Unauthenticated,
            _ => return,
        };
        caller.actor = actor;
        let Ok(slot) = Arc::clone(&self.auditing).try_acquire_owned() else {
            tracing::warn!(outcome = ?outcome, "refused admin call not audited: too many at once");
            return;
        };
        let accounts = Arc::clone(&self.accounts);
        tokio::spawn(async move {
            accounts.audit_refusal(&caller, outcome).await;
            drop(slot);
        });
    }
}

impl Interceptor for AdminGate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.admit(&request) {
            Ok(actor) => {
                request.extensions_mut().insert(actor);
                Ok(request)
            }
            Err((error, actor)) => {
                if self.rate_limits.check(Bucket::Login, &request).is_ok() {
                    self.audit_refusal(caller(&request), &error, actor);
                } else {
                    tracing::debug!("refused admin call not audited: the caller's budget is spent");
                }
                Err(error.into())
            }
        }
    }
}

/// The gRPC handler of `auth.v1.AdminService`; every call has passed [`AdminGate`].
#[derive(Debug, Clone)]
pub struct AdminGrpc {
    accounts: Arc<Accounts>,
    pages: PageTokens,
}

impl AdminGrpc {
    pub fn new(accounts: Arc<Accounts>, pages: PageTokens) -> Self {
        Self { accounts, pages }
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let account = NewAccount {
            email: &req.email,
            name: &req.name,
            role: &req.role,
            password: SecretString::from(req.password),
            email_verified: req.email_verified,
        };
        let user = self.accounts.create_user(&caller, account).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        admin(&request)?;
        let req = request.get_ref();
        let user = match (req.user_id.is_empty(), req.email.is_empty()) {
            (false, true) => UserRef::Id(user_id("user_id", &req.user_id)?),
            (true, false) => UserRef::Email(&req.email),
            _ => {
                return Err(invalid(
                    "user_id",
                    "exactly one of user_id and email is required",
                ));
            }
        };
        let user = self.accounts.get_user(user).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        admin(&request)?;
        let req = request.get_ref();
        let limit = page_size("page_size", req.page_size)?;
        let query = UserQuery {
            query: &req.query,
            role: &req.role,
            active: req.active,
        };
        // Every filter, each with its length, so that a token only pages the query it
        // came from.
        let fingerprint = format!(
            "users {}:{} {}:{} {:?}",
            req.query.len(),
            req.query,
            req.role.len(),
            req.role,
            req.active
        );
        let after = self
            .pages
            .open("page_token", &fingerprint, &req.page_token)?;
        let (users, next) = self.accounts.list_users(&query, after, limit).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(user_to_proto).collect(),
            next_page_token: next
                .map(|last| self.pages.token(&fingerprint, last))
                .unwrap_or_default(),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.get_ref();
        let id = user_id("user_id", &req.user_id)?;
        let change = AccountChange {
            name: req.name.as_deref(),
            role: req.role.as_deref(),
            email_verified: req.email_verified,
        };
        let user = (self.accounts)
            .update_user(&caller, UserRef::Id(id), change)
            .await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn set_user_active(
        &self,
        request: Request<pb::SetUserActiveRequest>,
    ) -> Result<Response<pb::SetUserActiveResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.get_ref();
        let id = user_id("user_id", &req.user_id)?;
        let (user, _) = (self.accounts)
            .set_active(&caller, UserRef::Id(id), req.active)
            .await?;
        Ok(Response::new(pb::SetUserActiveResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = admin(&request)?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        self.accounts.delete_user(&caller, UserRef::Id(id)).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
        let caller = admin(&request)?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        let revoked = (self.accounts)
            .revoke_sessions(&caller, UserRef::Id(id))
            .await?;
        Ok(Response::new(pb::RevokeUserSessionsResponse {
            revoked: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }

    async fn issue_password_reset_code(
        &self,
        request: Request<pb::IssuePasswordResetCodeRequest>,
    ) -> Result<Response<pb::IssuePasswordResetCodeResponse>, Status> {
        let caller = admin(&request)?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        let (code, expires_at) = (self.accounts)
            .issue_reset_code(&caller, UserRef::Id(id))
            .await?;
        Ok(Response::new(pb::IssuePasswordResetCodeResponse {
            code: code.expose_secret().to_owned(),
            expires_at: Some(timestamp(expires_at)),
        }))
    }

    async fn import_users(
        &self,
        request: Request<pb::ImportUsersRequest>,
    ) -> Result<Response<pb::ImportUsersResponse>, Status> {
        let caller = admin(&request)?;
        let rows = request.into_inner().users;
        let emails: Vec<String> = rows.iter().map(|row| row.email.clone()).collect();
        let accounts = rows
            .into_iter()
            .map(|row| ImportedAccount {
                email: row.email,
                name: row.name,
                role: row.role,
                password_hash: SecretString::from(row.password_hash),
                email_verified: row.email_verified,
                active: row.active.unwrap_or(true),
            })
            .collect();
        let results = self.accounts.import(&caller, accounts).await?;
        let results = emails
            .into_iter()
            .zip(results)
            .map(|(email, result)| match result {
                Ok(id) => pb::ImportResult {
                    email,
                    user_id: id.hyphenated().to_string(),
                    error: String::new(),
                },
                Err(error) => pb::ImportResult {
                    email,
                    user_id: String::new(),
                    error,
                },
            })
            .collect();
        Ok(Response::new(pb::ImportUsersResponse { results }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        admin(&request)?;
        let req = request.get_ref();
        let limit = page_size("page_size", req.page_size)?;
        let user = match req.user_id.as_deref() {
            Some(id) => Some(user_id("user_id", id)?),
            None => None,
        };
        let fingerprint = format!("audit {user:?}");
        let before = self
            .pages
            .open("page_token", &fingerprint, &req.page_token)?;
        let (events, next) = self.accounts.audit_events(user, before, limit).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.into_iter().map(audit_event_to_proto).collect(),
            next_page_token: next
                .map(|last| self.pages.token(&fingerprint, last))
                .unwrap_or_default(),
        }))
    }
}

/// The caller of a call [`AdminGate`] let through, with its actor.
fn admin<T>(request: &Request<T>) -> Result<Caller, Status> {
    let actor = request
        .extensions()
        .get::<Actor>()
        .cloned()
        .ok_or_else(|| {
            Status::from(AuthError::Unexpected(anyhow::anyhow!(
                "an AdminService call reached its handler without passing AdminGate"
            )))
        })?;
    Ok(caller(request).acting_as(actor))
}

fn user_id(field: &'static str, raw: &str) -> Result<Uuid, Status> {
    if raw.trim().is_empty() {
        return Err(invalid(field, "user_id is required"));
    }
    Uuid::parse_str(raw.trim()).map_err(|_| invalid(field, "user_id must be a UUID"))
}

/// A listing's page size: 0 is the default, above the maximum is the maximum.
fn page_size(field: &'static str, requested: i32) -> Result<u64, Status> {
    match u64::try_from(requested) {
        Err(_) => Err(invalid(field, "page_size must not be negative")),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
    }
}

fn invalid(field: &'static str, description: &str) -> Status {
    AuthError::InvalidInput(vec![FieldViolation::new(field, description)]).into()
}

fn audit_event_to_proto(event: StoredAuditEvent) -> pb::AuditEvent {
    let id = |id: Option<Uuid>| id.map(|id| id.hyphenated().to_string()).unwrap_or_default();
    pb::AuditEvent {
        id: event.id.hyphenated().to_string(),
        kind: event.kind,
        outcome: event.outcome,
        user_id: id(event.user_id),
        session_id: id(event.session_id),
        peer: event.peer.unwrap_or_default(),
        actor: event.actor.unwrap_or_default(),
        request_id: event.request_id.unwrap_or_default(),
        created_at: Some(timestamp(event.occurred_at)),
    }
}
