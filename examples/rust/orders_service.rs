//! A service that lets in only callers with a valid authd access token.
//!
//! Every request's `authorization: Bearer <token>` is checked by authd's ValidateToken
//! (the service holds no signing key), with the API key authd expects of ValidateToken
//! callers. The client is the one tonic generates from `proto/auth/v1/auth.proto`; here
//! authd's own, in a service of yours your build.rs would make it. Run:
//!
//!     AUTHD_ADDR=127.0.0.1:50051 AUTHD_API_KEY=... PORT=8080 \
//!       cargo run --example orders_service

use std::{convert::Infallible, time::Duration};

use authd::proto::auth::v1::{ValidateTokenRequest, auth_service_client::AuthServiceClient};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tonic::{metadata::MetadataValue, transport::Channel};

type ApiKey = MetadataValue<tonic::metadata::Ascii>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let addr = format!("http://{}", var("AUTHD_ADDR", "127.0.0.1:50051"));
    let authd = Channel::from_shared(addr)?.connect_lazy();
    let authd = AuthServiceClient::new(authd);
    let api_key: ApiKey = std::env::var("AUTHD_API_KEY")?.parse()?;
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", var("PORT", "8080").parse()?)).await?;
    println!("listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let (authd, api_key) = (authd.clone(), api_key.clone());
        let service = service_fn(move |request| orders(request, authd.clone(), api_key.clone()));
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

async fn orders(
    request: Request<Incoming>,
    mut authd: AuthServiceClient<Channel>,
    api_key: ApiKey,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = |status: StatusCode, body: String| {
        let response = Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)));
        Ok(response.unwrap_or_default())
    };
    let token = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.is_empty());
    let Some((_, token)) = token else {
        return answer(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required\n".into(),
        );
    };
    let mut call = tonic::Request::new(ValidateTokenRequest {
        token: token.to_owned(),
    });
    call.metadata_mut().insert("x-api-key", api_key);
    call.set_timeout(Duration::from_secs(2));
    match authd
        .validate_token(call)
        .await
        .map(tonic::Response::into_inner)
    {
        // authd unreachable, or this service's key refused: not the caller's fault.
        Err(status) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check the token: {:?}\n", status.code()),
        ),
        Ok(claims) if !claims.active => answer(
            StatusCode::UNAUTHORIZED,
            format!("token not accepted: {}\n", claims.reason().as_str_name()),
        ),
        Ok(claims) => answer(
            StatusCode::OK,
            format!("orders of {} ({})\n", claims.email, claims.role),
        ),
    }
}
