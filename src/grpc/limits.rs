//! Status codes for requests that break the transport limits.

use tonic::{Request, Status, service::interceptor::InterceptedService};

use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::{
    Code,
    body::Body,
    codegen::http::{self, HeaderMap, HeaderValue},
};

/// tonic rejects an oversize request message with OUT_OF_RANGE; authd's contract says
/// RESOURCE_EXHAUSTED (as gRPC's C core does), so the status is rewritten here, in the
/// headers of a trailers-only response or in the trailers. Only tonic's decode-limit
/// error is touched: no handler of ours returns OUT_OF_RANGE.
pub fn oversize_message_is_resource_exhausted(
    response: http::Response<Body>,
) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    rewrite(&mut parts.headers);
    let body = body.map_frame(|frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            rewrite(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    });
    http::Response::from_parts(parts, Body::new(body))
}

fn rewrite(headers: &mut HeaderMap) {
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"11");
    // grpc-message travels percent-encoded.
    let too_large = headers.get("grpc-message").is_some_and(|message| {
        message
            .as_bytes()
            .starts_with(b"Error,%20decoded%20message%20length%20too%20large")
    });
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("request%20message%20too%20large"),
        );
    }
}

/// `service` behind [`metadata_limit`].
pub fn capped<S>(
    service: S,
    max_metadata_bytes: usize,
) -> InterceptedService<S, impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone> {
    InterceptedService::new(service, metadata_limit(max_metadata_bytes))
}

/// Refuses a call whose metadata exceeds `max_bytes` with RESOURCE_EXHAUSTED. HTTP/2's
/// own header-list limit sits above this as a backstop, but hyper answers it with HTTP
/// 431, which gRPC clients can only report as UNKNOWN; checking here first gives them the
/// status the contract promises.
fn metadata_limit(
    max_bytes: usize,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let size: usize = request
            .metadata()
            .as_ref()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if size > max_bytes {
            return Err(Status::resource_exhausted("request metadata too large"));
        }
        Ok(request)
    }
}
