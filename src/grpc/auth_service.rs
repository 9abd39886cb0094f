//! `auth.v1.AuthService`: translates between proto messages and `auth::Authenticator`.

use std::sync::Arc;

use secrecy::ExposeSecret as _;
use tonic::{Request, Response, Status};

use super::{
    convert::{caller, jwk_to_proto, timestamp, user_to_proto},
    metadata::{ValidateCallers, bearer_token},
    rate_limit::{Bucket, PeerRateLimits},
};
use crate::{
    auth::{self, Authenticated, Authenticator, Introspection, LogoutTarget},
    proto::auth::v1::{self as pb, auth_service_server::AuthService},
};

/// The gRPC handler of `auth.v1.AuthService`.
#[derive(Debug, Clone)]
pub struct AuthGrpc {
    auth: Arc<Authenticator>,
    validate_callers: ValidateCallers,
    rate_limits: Arc<PeerRateLimits>,
}

impl AuthGrpc {
    pub fn new(
        auth: Arc<Authenticator>,
        validate_callers: ValidateCallers,
        rate_limits: Arc<PeerRateLimits>,
    ) -> Self {
        Self {
            auth,
            validate_callers,
            rate_limits,
        }
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.rate_limits.check(Bucket::Register, &request)?;
        let caller = caller(&request);
        let req = request.into_inner();
        let out = self
            .auth
            .register(caller, &req.email, req.password, &req.name)
            .await?;
        let (user, tokens) = authenticated_to_proto(out);
        Ok(Response::new(pb::RegisterResponse { user, tokens }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        self.rate_limits.check(Bucket::Login, &request)?;
        let caller = caller(&request);
        let req = request.into_inner();
        let out = self.auth.login(caller, &req.email, req.password).await?;
        let (user, tokens) = authenticated_to_proto(out);
        Ok(Response::new(pb::LoginResponse { user, tokens }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let out = self.auth.refresh(caller, &req.refresh_token).await?;
        let (user, tokens) = authenticated_to_proto(out);
        Ok(Response::new(pb::RefreshResponse { user, tokens }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let target = if request.get_ref().refresh_token.is_empty() {
            LogoutTarget::AccessToken(bearer_token(&request)?)
        } else {
            LogoutTarget::RefreshToken(request.get_ref().refresh_token.clone())
        };
        self.auth
            .logout(caller(&request), target, request.get_ref().all_sessions)
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::GetMeResponse>, Status> {
        let token = bearer_token(&request)?;
        let user = self.auth.me(&token).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        // The caller is checked before the token is even looked at.
        self.validate_callers.check(&request)?;
        let introspection = self.auth.validate(&request.get_ref().token)?;
        Ok(Response::new(introspection_to_proto(introspection)))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .auth
            .public_keys()
            .into_iter()
            .map(|key| jwk_to_proto(&key))
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn update_me(
        &self,
        request: Request<pb::UpdateMeRequest>,
    ) -> Result<Response<pb::UpdateMeResponse>, Status> {
        let (token, caller) = (bearer_token(&request)?, caller(&request));
        let user = self
            .auth
            .update_me(caller, &token, &request.get_ref().name)
            .await?;
        Ok(Response::new(pb::UpdateMeResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let token = bearer_token(&request)?;
        let sessions = self.auth.list_sessions(&token).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(session_to_proto).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let (token, caller) = (bearer_token(&request)?, caller(&request));
        self.auth
            .revoke_session(caller, &token, &request.get_ref().session_id)
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        // A password is checked: the same per-client budget as Login.
        self.rate_limits.check(Bucket::Login, &request)?;
        let (token, caller) = (bearer_token(&request)?, caller(&request));
        let req = request.into_inner();
        let tokens = self
            .auth
            .change_password(caller, &token, req.current_password, req.new_password)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            tokens: Some(token_pair_to_proto(&tokens)),
        }))
    }

    async fn change_email(
        &self,
        request: Request<pb::ChangeEmailRequest>,
    ) -> Result<Response<pb::ChangeEmailResponse>, Status> {
        // A password is checked: the same per-client budget as Login.
        self.rate_limits.check(Bucket::Login, &request)?;
        let (token, caller) = (bearer_token(&request)?, caller(&request));
        let req = request.into_inner();
        let user = self
            .auth
            .change_email(caller, &token, &req.new_email, req.current_password)
            .await?;
        Ok(Response::new(pb::ChangeEmailResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        self.rate_limits.check(Bucket::Login, &request)?;
        let caller = caller(&request);
        self.auth
            .request_password_reset(caller, &request.get_ref().email)
            .await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        self.rate_limits.check(Bucket::Login, &request)?;
        let caller = caller(&request);
        let req = request.into_inner();
        self.auth
            .reset_password(caller, &req.code, req.new_password)
            .await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn request_email_verification(
        &self,
        request: Request<pb::RequestEmailVerificationRequest>,
    ) -> Result<Response<pb::RequestEmailVerificationResponse>, Status> {
        let (token, caller) = (bearer_token(&request)?, caller(&request));
        self.auth.request_email_verification(caller, &token).await?;
        Ok(Response::new(pb::RequestEmailVerificationResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        self.rate_limits.check(Bucket::Login, &request)?;
        let caller = caller(&request);
        let user = self
            .auth
            .verify_email(caller, &request.get_ref().code)
            .await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            user: Some(user_to_proto(&user)),
        }))
    }
}

fn authenticated_to_proto(out: Authenticated) -> (Option<pb::User>, Option<pb::TokenPair>) {
    (
        Some(user_to_proto(&out.user)),
        Some(token_pair_to_proto(&out.tokens)),
    )
}

fn token_pair_to_proto(tokens: &auth::TokenPair) -> pb::TokenPair {
    pb::TokenPair {
        access_token: tokens.access_token.expose_secret().to_owned(),
        refresh_token: tokens.refresh_token.expose_secret().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: tokens.expires_in,
        refresh_expires_in: tokens.refresh_expires_in,
    }
}

fn session_to_proto(session: auth::SessionView) -> pb::Session {
    pb::Session {
        id: session.id.hyphenated().to_string(),
        created_at: Some(timestamp(session.created_at)),
        last_used_at: Some(timestamp(session.last_used_at)),
        expires_at: Some(timestamp(session.expires_at)),
        user_agent: session.user_agent.unwrap_or_default(),
        peer: session.peer.unwrap_or_default(),
        current: session.current,
    }
}

fn introspection_to_proto(introspection: Introspection) -> pb::ValidateTokenResponse {
    match introspection {
        Introspection::Active(token) => pb::ValidateTokenResponse {
            active: true,
            reason: pb::InactiveReason::Unspecified.into(),
            user_id: token.user_id.hyphenated().to_string(),
            session_id: token.session_id.hyphenated().to_string(),
            email: token.email.clone(),
            role: token.role.clone(),
            issued_at: Some(unix_timestamp(token.issued_at)),
            expires_at: Some(unix_timestamp(token.expires_at)),
        },
        // RFC 7662: an inactive token gets no claims at all.
        Introspection::Inactive(reason) => pb::ValidateTokenResponse {
            active: false,
            reason: match reason {
                auth::InactiveReason::Expired => pb::InactiveReason::Expired,
                auth::InactiveReason::Revoked => pb::InactiveReason::Revoked,
                auth::InactiveReason::Invalid => pb::InactiveReason::Invalid,
            }
            .into(),
            ..Default::default()
        },
    }
}

fn unix_timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}
