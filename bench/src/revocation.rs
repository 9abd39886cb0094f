//! The revocation scenario: how soon a logout answered by one replica is REVOKED on
//! another on the same database (pushed at once on PostgreSQL, polled elsewhere).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use authd::proto::auth::v1::{self as pb, InactiveReason, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

use crate::load::{Fixture, Outcome};

/// Longer than this and the trial counts as failed: no replica may take this long.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// `trials` times: a fixture user logs in on `first`, logs out there, and `second` is
/// asked about the access token, over and over, until it says REVOKED. Each trial's
/// latency runs from the logout's answer to that REVOKED.
pub(crate) async fn trials(
    first: &Channel,
    second: &Channel,
    fixture: &Fixture,
    trials: usize,
) -> anyhow::Result<Outcome> {
    let mut first = AuthServiceClient::new(first.clone());
    let mut second = AuthServiceClient::new(second.clone());
    let mut outcome = Outcome::new()?;
    let started = Instant::now();
    for trial in 0..trials {
        let (email, password) = fixture.credentials(trial);
        let login = pb::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        let tokens = first.login(login).await?.into_inner().tokens;
        let tokens = tokens.context("Login returned no tokens")?;
        let validate = || pb::ValidateTokenRequest {
            token: tokens.access_token.clone(),
        };
        // The other replica takes the token before the logout, so REVOKED is news to it.
        let before = second.validate_token(validate()).await?.into_inner();
        anyhow::ensure!(
            before.active,
            "a fresh token is not active on the other replica"
        );
        let logout = pb::LogoutRequest {
            refresh_token: tokens.refresh_token.clone(),
            all_sessions: false,
        };
        first.logout(logout).await?;
        let logged_out = Instant::now();
        loop {
            let seen = second.validate_token(validate()).await?.into_inner();
            if !seen.active && seen.reason() == InactiveReason::Revoked {
                let took = logged_out.elapsed().as_micros() as u64;
                outcome.ok += 1;
                outcome.latency.saturating_record(took);
                break;
            }
            if logged_out.elapsed() > GIVE_UP_AFTER {
                *outcome.errors.entry("NeverRevoked".to_owned()).or_default() += 1;
                break;
            }
        }
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}
