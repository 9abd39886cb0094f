//! Opaque refresh tokens: 256 bits from the OS CSPRNG, url-safe base64. Only a SHA-256 of
//! the token is stored; a fast hash is right here because the token has full entropy
//! (nothing to brute-force), unlike a password.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};

use super::random_bytes;

const TOKEN_BYTES: usize = 32;
/// 32 bytes in unpadded base64.
const TOKEN_LEN: usize = 43;

/// A new refresh token and the hash to store.
pub(super) fn new_refresh_token() -> anyhow::Result<(SecretString, String)> {
    let bytes: [u8; TOKEN_BYTES] = random_bytes()?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    Ok((SecretString::from(token), hash))
}

/// The stored form of a presented token, or `None` if it cannot be one of ours.
pub(super) fn refresh_token_hash(token: &str) -> Option<String> {
    let decoded = URL_SAFE_NO_PAD.decode(token).ok()?;
    (token.len() == TOKEN_LEN && decoded.len() == TOKEN_BYTES).then(|| hash_token(token))
}

fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn tokens_are_url_safe_unique_and_hash_to_what_is_stored() {
        let (a, hash_a) = new_refresh_token().unwrap();
        let (b, _) = new_refresh_token().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), TOKEN_LEN);
        assert!(
            a.expose_secret()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(refresh_token_hash(a.expose_secret()), Some(hash_a.clone()));
        assert_eq!(hash_a.len(), 64);
    }

    #[test]
    fn malformed_tokens_have_no_hash() {
        for token in [
            "",
            "short",
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            &"A".repeat(44),
        ] {
            assert_eq!(refresh_token_hash(token), None, "{token:?}");
        }
    }
}
