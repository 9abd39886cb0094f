//! gRPC-Web for browsers, on the same port as gRPC: which origins may call, and what their
//! pages may send and read.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS policy for the origins in AUTHD_CORS_ORIGINS; `None` (no CORS headers at all,
/// so browsers refuse every cross-origin page) when there are none.
pub fn cors_layer(origins: Vec<HeaderValue>) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            // gRPC-Web is always a POST.
            .allow_methods([Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
            ])
            // The status travels in trailers, which gRPC-Web puts in the body, except for
            // a trailers-only answer, whose status is in these headers.
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
            ])
            // Browsers cap it lower anyway; saves a preflight per call.
            .max_age(Duration::from_secs(600)),
    )
}
