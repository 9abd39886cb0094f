//! Envoy external authorization (`envoy.service.auth.v3.Authorization/Check`): Envoy asks
//! before each request it proxies, and authd answers from the ValidateToken path (in
//! memory: the same cache, revocations and role view, no database query), telling Envoy
//! which identity headers to set upstream or which 401/403 to answer instead.

use std::sync::Arc;

use envoy_types::ext_authz::v3::{
    CheckRequestExt as _, CheckResponseExt as _, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
    pb::{Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode},
};
use tonic::{Code, Request, Response, Status};

use super::metadata::{ValidateCallers, parse_bearer};
use crate::auth::{Authenticator, Introspection, VerifiedToken};

/// The headers upstream services read the caller's identity from. Whatever the client
/// sent under these names is overwritten, and any other `x-auth-*` header it sent is
/// removed, so an upstream can trust them.
const USER_ID: &str = "x-auth-user-id";
const SESSION_ID: &str = "x-auth-session-id";
const EMAIL: &str = "x-auth-email";
const ROLE: &str = "x-auth-role";
const IDENTITY_PREFIX: &str = "x-auth-";

/// A route's context extension: the roles (comma-separated) that may pass.
const REQUIRED_ROLES: &str = "required_roles";

/// The Authorization service.
#[derive(Debug)]
pub struct ExtAuthz {
    auth: Arc<Authenticator>,
    callers: ValidateCallers,
}

impl ExtAuthz {
    /// Envoy is a ValidateToken caller like any other: the same caller authentication.
    pub fn new(auth: Arc<Authenticator>, callers: ValidateCallers) -> Self {
        Self { auth, callers }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        self.callers.check(&request)?;
        let check = request.into_inner();
        let headers = check.get_client_headers();
        let Some(authorization) = headers.and_then(|headers| headers.get("authorization")) else {
            // RFC 6750 3.1: no error code when the request carried no credentials.
            return Ok(Response::new(denied(Code::Unauthenticated, "Bearer")));
        };
        let token = match parse_bearer(authorization) {
            Ok(token) => token,
            Err(_) => return Ok(Response::new(invalid_token())),
        };
        let token = match self.auth.validate(&token)? {
            Introspection::Active(token) => token,
            Introspection::Inactive(_) => return Ok(Response::new(invalid_token())),
        };
        let required = check
            .attributes
            .as_ref()
            .and_then(|attributes| attributes.context_extensions.get(REQUIRED_ROLES));
        if let Some(required) = required
            && !required
                .split(',')
                .map(str::trim)
                .any(|role| role == token.role)
        {
            return Ok(Response::new(denied(
                Code::PermissionDenied,
                "Bearer error=\"insufficient_scope\"",
            )));
        }
        let sent: Vec<&String> = headers
            .map(|headers| headers.keys().collect())
            .unwrap_or_default();
        Ok(Response::new(allowed(&token, &sent)))
    }
}

/// Allowed: the identity headers set upstream, overwriting what the client sent.
fn allowed(token: &VerifiedToken, sent: &[&String]) -> CheckResponse {
    let mut ok = OkHttpResponseBuilder::new();
    let identity = [
        (USER_ID, token.user_id.hyphenated().to_string()),
        (SESSION_ID, token.session_id.hyphenated().to_string()),
        (EMAIL, token.email.clone()),
        (ROLE, token.role.clone()),
    ];
    for (name, value) in &identity {
        ok.add_header(
            *name,
            value.as_str(),
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            true,
        );
    }
    for name in sent {
        let ours = identity
            .iter()
            .any(|(ours, _)| name.eq_ignore_ascii_case(ours));
        if !ours && name.to_ascii_lowercase().starts_with(IDENTITY_PREFIX) {
            ok.remove_header(name.as_str());
        }
    }
    let mut response = CheckResponse::with_status(Status::new(Code::Ok, ""));
    response.set_http_response(ok);
    response
}

/// A bad, expired or revoked token (RFC 6750 3.1).
fn invalid_token() -> CheckResponse {
    denied(Code::Unauthenticated, "Bearer error=\"invalid_token\"")
}

/// Refused: 401 or 403 to the client, with the challenge RFC 6750 asks for.
fn denied(code: Code, challenge: &str) -> CheckResponse {
    let status = if code == Code::PermissionDenied {
        HttpStatusCode::Forbidden
    } else {
        HttpStatusCode::Unauthorized
    };
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(status)
        .add_header("www-authenticate", challenge, None, false);
    let mut response = CheckResponse::with_status(Status::new(code, ""));
    response.set_http_response(http);
    response
}
