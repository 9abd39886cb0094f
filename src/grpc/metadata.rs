//! Reading the caller's credentials from request metadata.

use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};
use tonic::Request;

use crate::auth::AuthError;

/// Accepted API keys, kept as SHA-256 digests (`x-api-key` metadata).
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

// Digests of secrets: not for printing.
impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.digests.len())
            .finish()
    }
}

impl ApiKeys {
    /// Keys with these SHA-256 digests.
    pub fn new(digests: Vec<[u8; 32]>) -> Self {
        Self { digests }
    }

    fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The digest of the request's `x-api-key` if it is an accepted key.
    pub(super) fn presented<T>(&self, request: &Request<T>) -> Option<[u8; 32]> {
        let presented: [u8; 32] =
            Sha256::digest(request.metadata().get("x-api-key")?.as_bytes()).into();
        // Every digest is compared in constant time, so timing says nothing about near
        // misses or about which key matched.
        let accepted: bool = self
            .digests
            .iter()
            .fold(Choice::from(0), |found, known| {
                found | known[..].ct_eq(&presented)
            })
            .into();
        accepted.then_some(presented)
    }
}

/// Who may call ValidateToken (RFC 7662 2.1: an introspection endpoint open to anyone
/// invites token scanning): holders of an API key and, when mTLS is on and required,
/// holders of a client certificate the TLS layer verified against AUTHD_TLS_CLIENT_CA.
/// With neither configured, anyone.
#[derive(Debug, Clone, Default)]
pub struct ValidateCallers {
    keys: ApiKeys,
    accept_client_certs: bool,
}

impl ValidateCallers {
    /// Callers holding an API key with one of these SHA-256 digests.
    pub fn with_api_key_digests(digests: Vec<[u8; 32]>) -> Self {
        Self {
            keys: ApiKeys::new(digests),
            accept_client_certs: false,
        }
    }

    /// Also accepts callers that presented a verified client certificate, and makes
    /// caller authentication required even without API keys.
    pub fn accepting_client_certs(mut self) -> Self {
        self.accept_client_certs = true;
        self
    }

    /// Ok when caller authentication is off, the `x-api-key` metadata is an accepted
    /// key, or the connection carries a verified client certificate that is accepted.
    pub(super) fn check<T>(&self, request: &Request<T>) -> Result<(), AuthError> {
        if self.keys.is_empty() && !self.accept_client_certs {
            return Ok(());
        }
        // rustls only hands over certificates that chained to AUTHD_TLS_CLIENT_CA.
        if self.accept_client_certs && request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
            return Ok(());
        }
        match self.keys.presented(request) {
            Some(_) => Ok(()),
            None => Err(AuthError::CallerUnauthenticated),
        }
    }
}

/// The access token from `authorization: Bearer <token>`.
pub(super) fn bearer_token<T>(request: &Request<T>) -> Result<String, AuthError> {
    let Some(value) = request.metadata().get("authorization") else {
        return Err(AuthError::AccessTokenMissing);
    };
    parse_bearer(value.to_str().map_err(|_| AuthError::AccessTokenInvalid)?)
}

/// The token of an `authorization` header's value, `Bearer <token>` (any letter case).
pub(super) fn parse_bearer(value: &str) -> Result<String, AuthError> {
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::AccessTokenInvalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::AccessTokenInvalid);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::AccessTokenMissing);
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        request
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&request("bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&request("Bearer abc")).unwrap(), "abc");
    }

    #[test]
    fn missing_or_foreign_schemes_are_refused() {
        assert!(matches!(
            bearer_token(&Request::new(())),
            Err(AuthError::AccessTokenMissing)
        ));
        assert!(matches!(
            bearer_token(&request("Basic abc")),
            Err(AuthError::AccessTokenInvalid)
        ));
        assert!(matches!(
            bearer_token(&request("Bearer ")),
            Err(AuthError::AccessTokenInvalid | AuthError::AccessTokenMissing)
        ));
    }
}
