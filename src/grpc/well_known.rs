//! `GET /.well-known/jwks.json` on the gRPC port, over HTTP/1.1 or HTTP/2: the keys
//! GetJwks publishes, for gateways that fetch a JWKS by URL (Envoy's `jwt_authn`, Kong,
//! nginx) rather than over gRPC.
//!
//! Caches may keep it for `max-age` = half the key reload interval. A new key is published
//! two reload intervals before it signs; a replica serves it at most one interval after
//! it is published; so whoever caches the set has it, with half an interval to spare,
//! before any token it signed arrives.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use sha2::{Digest as _, Sha256};
use tonic::body::Body;

use crate::auth::Authenticator;

/// Where the key set is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Answers [`JWKS_PATH`]; passes everything else on.
#[derive(Debug, Clone)]
pub struct JwksLayer {
    auth: Arc<Authenticator>,
    cache_control: HeaderValue,
}

impl JwksLayer {
    /// Serves `auth`'s public keys, cacheable for `max_age`.
    pub fn new(auth: Arc<Authenticator>, max_age: Duration) -> Self {
        let cache_control = format!("public, max-age={}", max_age.as_secs());
        Self {
            auth,
            cache_control: HeaderValue::from_str(&cache_control)
                .unwrap_or(HeaderValue::from_static("no-cache")),
        }
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Body> {
        let response = Response::builder()
            // Public keys, for anyone: a browser page may fetch them too.
            .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return response
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET, HEAD")
                .body(Body::empty())
                .unwrap_or_default();
        }
        let keys: Vec<_> = self.auth.public_keys();
        let set =
            serde_json::json!({ "keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>() });
        let body = Bytes::from(serde_json::to_vec(&set).unwrap_or_default());
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        let response = response
            .header(header::CACHE_CONTROL, self.cache_control.clone())
            .header(header::ETAG, &etag);
        let unchanged = request
            .headers()
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == etag
            });
        if unchanged {
            return response
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .unwrap_or_default();
        }
        let response = response
            .header(header::CONTENT_TYPE, "application/jwk-set+json")
            .header(header::CONTENT_LENGTH, body.len());
        let body = if request.method() == Method::HEAD {
            Body::empty()
        } else {
            Body::new(Full::new(body))
        };
        response.body(body).unwrap_or_default()
    }
}

impl<S> tower::Layer<S> for JwksLayer {
    type Service = Jwks<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Jwks {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Jwks<S> {
    inner: S,
    layer: JwksLayer,
}

impl<S, B> tower::Service<Request<B>> for Jwks<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path() == JWKS_PATH {
            let answer = self.layer.answer(&request);
            return Box::pin(std::future::ready(Ok(answer)));
        }
        Box::pin(self.inner.call(request))
    }
}
