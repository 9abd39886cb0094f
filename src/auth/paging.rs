//! Page tokens for the administrative listings: opaque to clients, and bound to the query
//! they page through, so a tampered token or one from another query is refused instead of
//! silently paging through something else. A token is the last row's id and a MAC over it
//! and the query, keyed by a key every replica shares (derived from the refresh key), so a
//! token from one replica pages on any other.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::FieldViolation;

/// Bytes of the MAC kept in a token.
const TAG_BYTES: usize = 16;

/// Makes and checks page tokens.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens([REDACTED])")
    }
}

impl PageTokens {
    pub(super) fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The token of the page after `last`, for `query` (every filter of the listing, in a
    /// fixed form).
    pub fn token(&self, query: &str, last: Uuid) -> String {
        let mut token = last.as_bytes().to_vec();
        token.extend_from_slice(&self.tag(query, last));
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Where a page starts: `None` for the first (an empty token), or the id after which
    /// the page continues. A token not made by [`Self::token`] for this same `query` is an
    /// INVALID_ARGUMENT for `field`.
    pub fn open(
        &self,
        field: &'static str,
        query: &str,
        token: &str,
    ) -> Result<Option<Uuid>, FieldViolation> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            FieldViolation::new(
                field,
                "page_token is malformed, or belongs to another query: start again without one",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let (id, tag) = bytes.split_at_checked(16).ok_or_else(invalid)?;
        let last = Uuid::from_slice(id).map_err(|_| invalid())?;
        if tag.ct_eq(&self.tag(query, last)).into() {
            Ok(Some(last))
        } else {
            Err(invalid())
        }
    }

    fn tag(&self, query: &str, last: Uuid) -> [u8; TAG_BYTES] {
        // The key is 32 bytes: HMAC takes any length.
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(&(query.len() as u64).to_be_bytes());
        mac.update(query.as_bytes());
        mac.update(last.as_bytes());
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_BYTES]);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_pages_only_the_query_it_was_made_for() {
        let tokens = PageTokens::new([7; 32]);
        let last = Uuid::now_v7();
        let token = tokens.token("users\0al\0\0", last);
        assert_eq!(
            tokens.open("page_token", "users\0al\0\0", &token).unwrap(),
            Some(last)
        );
        assert!(tokens.open("page_token", "users\0bo\0\0", &token).is_err());
        assert_eq!(tokens.open("page_token", "x", "").unwrap(), None);
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let tokens = PageTokens::new([7; 32]);
        let token = tokens.token("q", Uuid::now_v7());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[3] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        assert!(tokens.open("page_token", "q", &tampered).is_err());
        assert!(tokens.open("page_token", "q", "not base64!").is_err());
        assert!(tokens.open("page_token", "q", "AAAA").is_err());
        let other_key = PageTokens::new([8; 32]);
        assert!(other_key.open("page_token", "q", &token).is_err());
    }
}
