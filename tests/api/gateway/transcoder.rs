//! REST through Envoy's gRPC-JSON transcoder (`deploy/envoy/transcoder.yaml`): JSON over
//! HTTP/1.1, as a browser-less REST client or an API gateway speaks it.

use http::StatusCode;
use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};

use super::{Envoy, envoy_binary};
use crate::helpers::{PASSWORD, spawn_app};

fn bearer(token: &Value) -> String {
    format!("Bearer {}", token.as_str().expect("a token string"))
}

#[tokio::test]
async fn a_rest_client_runs_the_whole_flow_through_envoys_transcoder() {
    let Some(binary) = envoy_binary() else { return };
    let app = spawn_app().await;
    let envoy = Envoy::transcoder(&binary, &app).await;
    let http = envoy.http();
    let email = format!("rest-{}@example.com", uuid::Uuid::now_v7().simple());

    let registered = http
        .post(
            "/v1/auth/register",
            &[],
            json!({"email": email, "password": PASSWORD, "name": "Rest Client"}),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::OK,
        "{registered:?}\n{}",
        envoy.log()
    );
    assert_eq!(registered.headers["content-type"], "application/json");
    assert_eq!(registered.json["user"]["email"], email.as_str());
    assert_eq!(registered.json["tokens"]["tokenType"], "Bearer");

    let logged_in = http
        .post(
            "/v1/auth/login",
            &[],
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(logged_in.status, StatusCode::OK, "{logged_in:?}");
    let tokens = &logged_in.json["tokens"];

    let me = http
        .get(
            "/v1/auth/me",
            &[("authorization", &bearer(&tokens["accessToken"]))],
        )
        .await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.json["user"]["email"], email.as_str());
    assert_eq!(me.json["user"]["name"], "Rest Client");

    let refreshed = http
        .post(
            "/v1/auth/refresh",
            &[],
            json!({"refreshToken": tokens["refreshToken"]}),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{refreshed:?}");
    let tokens = &refreshed.json["tokens"];

    let validated = http
        .post(
            "/v1/auth/validate",
            &[],
            json!({"token": tokens["accessToken"]}),
        )
        .await;
    assert_eq!(validated.status, StatusCode::OK, "{validated:?}");
    assert_eq!(validated.json["active"], true);
    assert_eq!(validated.json["email"], email.as_str());
    assert_eq!(validated.json["userId"], me.json["user"]["id"]);

    let logged_out = http
        .post(
            "/v1/auth/logout",
            &[],
            json!({"refreshToken": tokens["refreshToken"]}),
        )
        .await;
    assert_eq!(logged_out.status, StatusCode::OK, "{logged_out:?}");
    let after = http
        .post(
            "/v1/auth/validate",
            &[],
            json!({"token": tokens["accessToken"]}),
        )
        .await;
    // Spelled out, as RFC 7662 wants, not left for the client to infer from absence.
    assert_eq!(after.json["active"], false, "{after:?}");
    assert_eq!(after.json["reason"], "INACTIVE_REASON_REVOKED");
    app.stop().await;
}

#[tokio::test]
async fn grpc_errors_reach_a_rest_client_as_http_statuses_with_their_details() {
    let Some(binary) = envoy_binary() else { return };
    let app = spawn_app().await;
    let envoy = Envoy::transcoder(&binary, &app).await;
    let http = envoy.http();
    let (email, _) = app.new_user().await;

    let taken = http
        .post(
            "/v1/auth/register",
            &[],
            json!({"email": email.to_uppercase(), "password": PASSWORD, "name": "Again"}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{taken:?}");
    assert_eq!(taken.json["code"], 6, "ALREADY_EXISTS: {taken:?}");

    let wrong = http
        .post(
            "/v1/auth/login",
            &[],
            json!({"email": email, "password": "not the password"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
    assert!(!wrong.json.to_string().contains("not the password"));

    let no_token = http.get("/v1/auth/me", &[]).await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED, "{no_token:?}");

    let malformed = http
        .post(
            "/v1/auth/register",
            &[],
            json!({"email": "not-an-address", "password": PASSWORD, "name": "Bad"}),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{malformed:?}");
    let details = malformed.json["details"].as_array().expect("details");
    let bad_request = details
        .iter()
        .find(|detail| detail["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .unwrap_or_else(|| panic!("no BadRequest among {details:?}"));
    let fields: Vec<&str> = bad_request["fieldViolations"]
        .as_array()
        .expect("field violations")
        .iter()
        .filter_map(|violation| violation["field"].as_str())
        .collect();
    assert_eq!(fields, ["email"]);

    // AdminService is mapped too; without credentials it is refused like over gRPC.
    let users = http.get("/v1/admin/users", &[]).await;
    assert_eq!(users.status, StatusCode::UNAUTHORIZED, "{users:?}");
    app.stop().await;
}

#[tokio::test]
async fn get_v1_auth_jwks_is_a_jwks_document_a_jwt_library_verifies_tokens_with() {
    let Some(binary) = envoy_binary() else { return };
    let app = spawn_app().await;
    let envoy = Envoy::transcoder(&binary, &app).await;
    let (_, tokens) = app.new_user().await;

    let answer = envoy.http().get("/v1/auth/jwks", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    // Members of other key types are absent, not empty strings.
    let key = &answer.json["keys"][0];
    for member in ["n", "e", "y"] {
        assert!(key.get(member).is_none(), "{member} in {key}");
    }
    let jwks: JwkSet = serde_json::from_value(answer.json.clone()).expect("a JWKS document");
    let header = jsonwebtoken::decode_header(&tokens.access_token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().expect("a kid"))
        .expect("the token's key in the JWKS");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["authd"]);
    let claims = jsonwebtoken::decode::<Value>(
        &tokens.access_token,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("the token verifies with the published key");
    assert_eq!(claims.claims["iss"], "authd");
    app.stop().await;
}
