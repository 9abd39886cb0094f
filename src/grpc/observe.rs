//! Seeing how a call ends: its gRPC status is in the headers of a trailers-only answer,
//! else in the trailers at the end of the body, and an answer dropped before either was
//! sent means the client went away. The metrics and the access log both watch for it here.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::Frame;
use tonic::{Code, body::Body};
use tower::BoxError;

/// Awaits the answer to a call, then calls `on_finish` once with the call's code: at once
/// when the answer fails (a refusal for load: RESOURCE_EXHAUSTED) or its headers carry the
/// status, else when the trailers pass, else CANCELLED when the answer is dropped first
/// (the client went away, or the request timeout ended the call).
pub(crate) async fn observed<Fut, E, F>(
    answer: Fut,
    on_finish: F,
) -> Result<Response<Body>, BoxError>
where
    Fut: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
    F: FnOnce(Code) + Send + 'static,
{
    let mut finish = Finish(Some(on_finish));
    let response = match answer.await {
        Ok(response) => response,
        Err(err) => {
            let err = err.into();
            finish.finish(error_code(&*err));
            return Err(err);
        }
    };
    if let Some(code) = grpc_status(response.headers()) {
        finish.finish(code);
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        Body::new(Watched { body, finish }),
    ))
}

/// The code tonic answers a failed call with (see `tonic::Status::from_error`).
fn error_code(err: &(dyn std::error::Error + 'static)) -> Code {
    if err.is::<tower::load_shed::error::Overloaded>() {
        Code::ResourceExhausted
    } else if let Some(status) = err.downcast_ref::<tonic::Status>() {
        status.code()
    } else {
        Code::Unknown
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let status = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(status))
}

/// The names gRPC gives the codes (Go's `codes.Code.String()`), as metrics and logs show
/// them.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The callback, called at most once; dropped uncalled, the call was abandoned.
struct Finish<F: FnOnce(Code)>(Option<F>);

impl<F: FnOnce(Code)> Finish<F> {
    fn finish(&mut self, code: Code) {
        if let Some(on_finish) = self.0.take() {
            on_finish(code);
        }
    }
}

impl<F: FnOnce(Code)> Drop for Finish<F> {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// An answer's body, watched for the trailers that carry the status.
struct Watched<F: FnOnce(Code)> {
    body: Body,
    finish: Finish<F>,
}

// The callback is only ever moved, never pinned.
impl<F: FnOnce(Code)> Unpin for Watched<F> {}

impl<F: FnOnce(Code)> http_body::Body for Watched<F> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame
            && let Some(code) = frame.trailers_ref().and_then(grpc_status)
        {
            this.finish.finish(code);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
