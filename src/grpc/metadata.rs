//! Reading the caller's credentials from request metadata.

use tonic::Request;

use crate::auth::AuthError;

/// The access token from `authorization: Bearer <token>`.
pub(super) fn bearer_token<T>(request: &Request<T>) -> Result<String, AuthError> {
    let Some(value) = request.metadata().get("authorization") else {
        return Err(AuthError::AccessTokenMissing);
    };
    let value = value.to_str().map_err(|_| AuthError::AccessTokenInvalid)?;
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
