//! The cache-memory scenario: what the server's verified-token cache costs in resident
//! memory per token.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::Context as _;
use authd::proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

use crate::{load::Fixture, report::status_kib};

/// The server's resident memory before and after it verified (and so cached) `tokens`
/// distinct access tokens.
pub(crate) struct CacheMemory {
    pub(crate) tokens: usize,
    pub(crate) before_kib: u64,
    pub(crate) after_kib: u64,
}

impl CacheMemory {
    pub(crate) fn bytes_per_token(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) * 1024.0 / self.tokens as f64
    }
}

/// Mints `count` distinct access tokens with Refresh (each caller along a rotation chain
/// of its own), reads the server's RSS, has it verify each token once, and reads it again.
pub(crate) async fn measure(
    channels: &[Channel],
    fixture: &Arc<Fixture>,
    count: usize,
    callers: usize,
    pid: u32,
) -> anyhow::Result<CacheMemory> {
    let minted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for caller in 0..callers.max(1) {
        let mut client = AuthServiceClient::new(channels[caller % channels.len()].clone());
        let (fixture, minted) = (Arc::clone(fixture), Arc::clone(&minted));
        tasks.push(tokio::spawn(async move {
            let mut chain = fixture
                .take_refresh_chain()
                .context("no refresh chain left: raise --users to --concurrency")?;
            let mut tokens = Vec::new();
            while minted.fetch_add(1, Ordering::Relaxed) < count {
                let request = pb::RefreshRequest {
                    refresh_token: std::mem::take(&mut chain),
                };
                let pair = client.refresh(request).await?.into_inner().tokens;
                let pair = pair.context("Refresh returned no tokens")?;
                chain = pair.refresh_token;
                tokens.push(pair.access_token);
            }
            fixture.give_back_refresh_chain(chain);
            anyhow::Ok(tokens)
        }));
    }
    let mut minted = Vec::with_capacity(count);
    for task in tasks {
        minted.push(task.await??);
    }
    let tokens = minted.iter().map(Vec::len).sum();

    let before_kib = status_kib(pid, "VmRSS")?;
    let mut tasks = Vec::new();
    for (caller, tokens) in minted.into_iter().enumerate() {
        let mut client = AuthServiceClient::new(channels[caller % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            for token in tokens {
                let answer = client
                    .validate_token(pb::ValidateTokenRequest { token })
                    .await?;
                anyhow::ensure!(answer.into_inner().active, "a minted token is not active");
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let after_kib = status_kib(pid, "VmRSS")?;
    Ok(CacheMemory {
        tokens,
        before_kib,
        after_kib,
    })
}
