//! A bounded memory of access tokens whose signatures have already been verified.
//!
//! Internal services call ValidateToken with the same token on every request they serve,
//! for the token's whole lifetime, and the signature check (tens of microseconds for
//! Ed25519) is most of what a call costs. So a token that verified is remembered with its
//! claims, and the next call with it skips the signature and the JSON parse.
//!
//! What keeps this safe:
//! - only tokens that verified are stored: garbage and forgeries are never remembered, so
//!   they cannot push the tokens in use out;
//! - the key is the whole token, compared in full on a hit: no digest of it stands in, so
//!   no other string can ever hit a token's entry;
//! - everything that can change after signing is checked on every hit by the keyring
//!   (the signing key must still be one of ours, expiry) and by the caller (revocation);
//! - S3-FIFO eviction (quick_cache) resists scans: a burst of one-off tokens does not
//!   flush the ones in steady use;
//! - entries are tokens, so they are never printed: Debug shows only counts.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::VerifiedToken;

/// Verified tokens by their full text; `None` when configured off.
pub(super) struct VerifiedCache {
    entries: Option<Cache<Box<str>, Arc<VerifiedToken>>>,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("VerifiedCache");
        if let Some(entries) = &self.entries {
            debug
                .field("len", &entries.len())
                .field("capacity", &entries.capacity());
        }
        debug.finish_non_exhaustive()
    }
}

impl VerifiedCache {
    /// Holds up to `capacity` tokens; 0 remembers nothing.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    pub(super) fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        self.entries.as_ref()?.get(token)
    }

    pub(super) fn insert(&self, token: &str, verified: &Arc<VerifiedToken>) {
        if let Some(entries) = &self.entries {
            entries.insert(token.into(), Arc::clone(verified));
        }
    }

    /// Lookups that found a token and that did not, since start.
    pub(super) fn hits_and_misses(&self) -> (u64, u64) {
        self.entries
            .as_ref()
            .map_or((0, 0), |entries| (entries.hits(), entries.misses()))
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn claims() -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            key_id: "kid".into(),
            user_id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            email: "a@example.com".into(),
            role: "user".into(),
            issued_at: 0,
            expires_at: 900,
        })
    }

    #[test]
    fn a_hit_needs_the_whole_token() {
        let cache = VerifiedCache::new(10);
        cache.insert("header.payload.signature", &claims());
        assert!(cache.get("header.payload.signature").is_some());
        assert!(cache.get("header.payload.signatur").is_none());
        assert!(cache.get("header.payload.signature2").is_none());
    }

    #[test]
    fn it_stays_within_its_capacity() {
        let cache = VerifiedCache::new(100);
        for i in 0..10_000 {
            cache.insert(&format!("token-{i}"), &claims());
        }
        assert!(cache.len() <= 100, "{} entries", cache.len());
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let cache = VerifiedCache::new(0);
        cache.insert("token", &claims());
        assert!(cache.get("token").is_none());
    }

    #[test]
    fn debug_shows_no_token() {
        let cache = VerifiedCache::new(10);
        cache.insert("secret-token-text", &claims());
        let printed = format!("{cache:?}");
        assert!(!printed.contains("secret-token-text"), "{printed}");
        assert!(printed.contains("len: 1"), "{printed}");
    }
}
