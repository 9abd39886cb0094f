use authd::{config::JwtAlgorithm, proto::auth::v1::GetJwksRequest};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};
use tonic::{Code, Request};

use crate::helpers::{TestApp, TestDb, assert_code, spawn_app};

#[tokio::test]
async fn get_jwks_publishes_the_public_key_that_verifies_access_tokens() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;

    let jwks = app
        .client
        .clone()
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();

    let [key] = jwks.keys.as_slice() else {
        panic!("one key expected: {jwks:?}")
    };
    assert_eq!(
        (
            key.kty.as_str(),
            key.crv.as_deref(),
            key.alg.as_str(),
            key.r#use.as_str()
        ),
        ("OKP", Some("Ed25519"), "EdDSA", "sig")
    );
    let header = jsonwebtoken::decode_header(&tokens.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
    // A gateway can verify locally with nothing but the JWKS.
    let decoding = DecodingKey::from_ed_components(key.x.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["authd"]);
    let claims =
        jsonwebtoken::decode::<serde_json::Value>(&tokens.access_token, &decoding, &validation)
            .unwrap();
    assert_eq!(claims.claims["iss"], "authd");
    app.stop().await;
}

#[tokio::test]
async fn get_jwks_is_empty_for_hs256() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.tokens.algorithm = JwtAlgorithm::Hs256)
        .spawn()
        .await;
    let jwks = app
        .client
        .clone()
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(jwks.keys.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn replicas_sharing_an_hs256_secret_accept_each_others_tokens() {
    let secret = SecretString::from("a shared secret of well over thirty-two bytes");
    let with_secret = |config: &mut authd::config::Config| {
        config.tokens.algorithm = JwtAlgorithm::Hs256;
        config.tokens.jwt_secret = Some(secret.clone());
    };
    let a = TestApp::builder(TestDb::fresh().await)
        .configure(with_secret)
        .spawn()
        .await;
    let b = TestApp::builder(TestDb::fresh().await)
        .configure(with_secret)
        .spawn()
        .await;
    let (_, tokens) = a.new_user().await;

    assert!(b.validate(&tokens.access_token).await.unwrap().active);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn validate_token_can_require_an_api_key() {
    let digest: [u8; 32] = Sha256::digest(b"service-key-1").into();
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.validate_api_keys = vec![digest])
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    let call = |key: Option<&'static str>, token: String| {
        let mut client = app.client.clone();
        async move {
            let mut request = Request::new(authd::proto::auth::v1::ValidateTokenRequest { token });
            if let Some(key) = key {
                request
                    .metadata_mut()
                    .insert("x-api-key", key.parse().unwrap());
            }
            client
                .validate_token(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };

    // Without a key, or with a wrong one, the caller learns nothing about the token.
    let missing = assert_code(
        call(None, tokens.access_token.clone()).await,
        Code::Unauthenticated,
    );
    let garbage = assert_code(call(None, "garbage".into()).await, Code::Unauthenticated);
    assert_eq!(missing.message(), garbage.message());
    assert_code(
        call(Some("service-key-2"), tokens.access_token.clone()).await,
        Code::Unauthenticated,
    );
    assert!(
        call(Some("service-key-1"), tokens.access_token.clone())
            .await
            .unwrap()
            .active
    );
    app.stop().await;
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    use tonic_reflection::pb::v1;
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.reflection = false)
        .spawn()
        .await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };

    let status = assert_code(
        client
            .server_reflection_info(tokio_stream::iter([request]))
            .await,
        Code::Unimplemented,
    );

    assert_eq!(status.code(), Code::Unimplemented);
    app.stop().await;
}

#[tokio::test]
async fn private_keys_are_sealed_at_rest_with_the_master_key() {
    use sea_orm::{ConnectionTrait as _, Statement};

    const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let db = TestDb::fresh().await;
    let with_master = |key: Option<&str>| {
        let mut config = crate::helpers::test_config(&db);
        config.tokens.master_key = key.map(SecretString::from);
        config
    };
    let app = crate::helpers::TestApp::builder(db.clone())
        .config(with_master(Some(MASTER)))
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    app.stop().await;

    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT private_key FROM signing_keys",
        ))
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(rows.len(), 2, "the signing key and the refresh key");
    for row in rows {
        let stored: Vec<u8> = row.try_get("", "private_key").unwrap();
        assert!(stored.starts_with(b"authd-sealed-v1"), "stored unsealed");
    }

    // Without the master key, or with another, the keys cannot be opened: start-up fails.
    for wrong in [None, Some("ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=")] {
        let err = authd::startup::App::build(with_master(wrong))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("AUTHD_MASTER_KEY"), "{err:#}");
    }
    let app = crate::helpers::TestApp::builder(db.clone())
        .config(with_master(Some(MASTER)))
        .spawn()
        .await;
    assert!(app.validate(&tokens.access_token).await.unwrap().active);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_rotate_with_overlap_and_retire_after_their_tokens_expire() {
    use std::time::{Duration, Instant};

    use authd::proto::auth::v1::InactiveReason;

    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.key_rotation = Duration::from_secs(1);
            config.tokens.key_reload_interval = Duration::from_millis(200);
            // The first token must outlive the wait for rotation below, on a loaded machine
            // too (expiry is in whole seconds: it lives between TTL - 1 and TTL seconds).
            config.tokens.access_ttl = Duration::from_secs(6);
            config.tokens.clock_leeway = Duration::ZERO;
        })
        .spawn()
        .await;
    let (email, first) = app.new_user().await;
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwks_kids = || async {
        let jwks = app
            .client
            .clone()
            .get_jwks(GetJwksRequest {})
            .await
            .unwrap()
            .into_inner();
        jwks.keys.into_iter().map(|k| k.kid).collect::<Vec<_>>()
    };
    let old_kid = kid(&first.access_token);

    // A new key takes over signing...
    let started = Instant::now();
    let second = loop {
        let tokens = app
            .login(&email, crate::helpers::PASSWORD)
            .await
            .unwrap()
            .tokens
            .unwrap();
        if kid(&tokens.access_token) != old_kid {
            break tokens;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the signing key never rotated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // ...while the old one still verifies what it signed, and both are published.
    assert!(app.validate(&first.access_token).await.unwrap().active);
    assert!(app.validate(&second.access_token).await.unwrap().active);
    let published = jwks_kids().await;
    assert!(
        published.contains(&old_kid) && published.contains(&kid(&second.access_token)),
        "{published:?}"
    );

    // Once every token of the old key has expired (with a reload interval and the allowed
    // clock skew for replicas that switch late), it is retired and no longer published.
    let started = Instant::now();
    while jwks_kids().await.contains(&old_kid) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the old key was never retired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.validate(&first.access_token).await.unwrap().reason(),
        InactiveReason::Invalid
    );
    app.stop().await;
}

/// Verifies a token against a JWKS with PyJWT (and `cryptography`): another JWT
/// implementation than authd's, as a gateway or a service in another language would.
/// Prints the verified header's alg and the subject; fails on any error.
const PYJWT_VERIFY: &str = r#"
import json, sys
import jwt
jwks, token, issuer, audience = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
header = jwt.get_unverified_header(token)
key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
claims = jwt.decode(token, key=key, algorithms=[key.algorithm_name], issuer=issuer, audience=audience)
print(header["alg"], header["typ"], claims["sub"])
"#;

/// A Python with PyJWT: AUTHD_TEST_PYJWT (`.ci/run` installs one, pinned), else `python3` if
/// it has it; `None` (the independent check is skipped, with a note) otherwise.
fn python_with_pyjwt() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("AUTHD_TEST_PYJWT") {
        return Some(path.into());
    }
    let has_it = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_it {
        eprintln!("skipped: no Python with PyJWT (set AUTHD_TEST_PYJWT; .ci/run installs it)");
    }
    has_it.then(|| "python3".into())
}

/// The JWKS document GetJwks' JSON mapping stands for: present members only.
fn jwks_json(keys: &[authd::proto::auth::v1::JsonWebKey]) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|key| {
            let mut jwk = serde_json::json!({
                "kid": key.kid, "kty": key.kty, "alg": key.alg, "use": key.r#use,
            });
            for (name, value) in [
                ("crv", &key.crv),
                ("x", &key.x),
                ("y", &key.y),
                ("n", &key.n),
                ("e", &key.e),
            ] {
                if let Some(value) = value {
                    jwk[name] = value.clone().into();
                }
            }
            jwk
        })
        .collect();
    serde_json::json!({ "keys": keys })
}

#[tokio::test]
async fn tokens_of_every_algorithm_verify_from_the_published_jwks_with_another_library() {
    let python = python_with_pyjwt();
    for (algorithm, kty, crv) in [
        (JwtAlgorithm::EdDsa, "OKP", Some("Ed25519")),
        (JwtAlgorithm::Es256, "EC", Some("P-256")),
        (JwtAlgorithm::Rs256, "RSA", None),
    ] {
        let app = TestApp::builder(TestDb::fresh().await)
            .configure(|config| config.tokens.algorithm = algorithm)
            .spawn()
            .await;
        let (_, tokens) = app.new_user().await;
        let me = app.get_me(Some(&tokens.access_token)).await.unwrap();
        let jwks = app
            .client
            .clone()
            .get_jwks(GetJwksRequest {})
            .await
            .unwrap();
        let [key] = jwks.get_ref().keys.as_slice() else {
            panic!("one key expected: {jwks:?}")
        };
        assert_eq!((key.kty.as_str(), key.crv.as_deref()), (kty, crv));
        let members = [&key.x, &key.y, &key.n, &key.e].map(Option::is_some);
        let expected = match kty {
            "OKP" => [true, false, false, false],
            "EC" => [true, true, false, false],
            _ => [false, false, true, true],
        };
        assert_eq!(members, expected, "{algorithm:?}: {key:?}");
        let jwks = jwks_json(&jwks.get_ref().keys).to_string();

        // authd's own library, from nothing but the published members.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(
            serde_json::from_str::<serde_json::Value>(&jwks).unwrap()["keys"][0].clone(),
        )
        .unwrap();
        let alg = jsonwebtoken::decode_header(&tokens.access_token)
            .unwrap()
            .alg;
        let mut validation = Validation::new(alg);
        validation.set_audience(&["authd"]);
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        jsonwebtoken::decode::<serde_json::Value>(&tokens.access_token, &decoding, &validation)
            .unwrap();

        if let Some(python) = &python {
            let verify = |token: &str| {
                std::process::Command::new(python)
                    .args(["-c", PYJWT_VERIFY, &jwks, token, "authd", "authd"])
                    .output()
                    .unwrap()
            };
            let out = verify(&tokens.access_token);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "PyJWT refused a {algorithm:?} token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let alg = key.alg.as_str();
            assert_eq!(stdout.trim(), format!("{alg} at+jwt {}", me.id));
            // And it does check the signature: one changed byte of it is refused.
            let mut forged = tokens.access_token.clone().into_bytes();
            let last = forged.len() - 10;
            forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
            let out = verify(std::str::from_utf8(&forged).unwrap());
            assert!(!out.status.success(), "PyJWT took a forged {alg} token");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn changing_the_algorithm_keeps_the_old_algorithms_tokens_valid() {
    use std::time::{Duration, Instant};

    let db = TestDb::fresh().await;
    let with = |algorithm| {
        move |config: &mut authd::config::Config| {
            config.tokens.algorithm = algorithm;
            config.tokens.key_reload_interval = Duration::from_millis(200);
        }
    };
    let eddsa = TestApp::builder(db.clone())
        .configure(with(JwtAlgorithm::EdDsa))
        .spawn()
        .await;
    let (email, old) = eddsa.new_user().await;
    eddsa.stop().await;

    let es256 = TestApp::builder(db.clone())
        .configure(with(JwtAlgorithm::Es256))
        .spawn()
        .await;
    let alg = |token: &str| jsonwebtoken::decode_header(token).unwrap().alg;
    // Published at once, signing after two reloads (every replica verifies it first).
    let jwks = es256
        .client
        .clone()
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap();
    let mut ktys: Vec<&str> = jwks.get_ref().keys.iter().map(|k| k.kty.as_str()).collect();
    ktys.sort_unstable();
    assert_eq!(ktys, ["EC", "OKP"]);
    let started = Instant::now();
    let new = loop {
        let tokens = es256.login(&email, crate::helpers::PASSWORD).await.unwrap();
        let tokens = tokens.tokens.unwrap();
        if alg(&tokens.access_token) == Algorithm::ES256 {
            break tokens;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never switched"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alg(&old.access_token), Algorithm::EdDSA);
    for token in [&old.access_token, &new.access_token] {
        assert!(es256.validate(token).await.unwrap().active);
    }
    es256.stop().await;
}

/// Fetches the key set from its URL, as gateways and other services' libraries do, and
/// verifies a token with it; prints the subject.
const PYJWT_FROM_URL: &str = r#"
import sys
import jwt
url, token = sys.argv[1], sys.argv[2]
key = jwt.PyJWKClient(url).get_signing_key_from_jwt(token)
claims = jwt.decode(token, key=key, algorithms=[key.algorithm_name], issuer="authd", audience="authd")
print(claims["sub"])
"#;

// Several threads: PyJWT's fetch blocks this one while the server answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_served_over_http_for_gateways_that_fetch_it_by_url() {
    use authd::grpc::JWKS_PATH;
    use http::{Method, StatusCode};

    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let me = app.get_me(Some(&tokens.access_token)).await.unwrap();
    let http = crate::gateway::Http::to(app.addr.port());

    let answer = http.get(JWKS_PATH, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/jwk-set+json");
    // Cacheable for half a key reload interval (60 s): well within the two a new key is
    // published ahead of its turn.
    assert_eq!(header("cache-control"), "public, max-age=30");
    let etag = header("etag");
    // The very keys GetJwks publishes.
    let jwks = app
        .client
        .clone()
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap();
    assert_eq!(answer.json, jwks_json(&jwks.get_ref().keys));
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(answer.json["keys"][0].clone()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["authd"]);
    jsonwebtoken::decode::<serde_json::Value>(
        &tokens.access_token,
        &DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .unwrap();

    // Revalidation: unchanged keys cost no body.
    let again = http.get(JWKS_PATH, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.json, serde_json::Value::Null);
    let other = http.get(JWKS_PATH, &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(other.status, StatusCode::OK);
    let (status, headers, _) = http
        .send(Method::POST, JWKS_PATH, &[], bytes::Bytes::new())
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers.get("allow").unwrap(), "GET, HEAD");

    if let Some(python) = python_with_pyjwt() {
        let url = format!("http://{}{JWKS_PATH}", app.addr);
        let out = std::process::Command::new(python)
            .args(["-c", PYJWT_FROM_URL, &url, &tokens.access_token])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PyJWT could not verify from the URL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), me.id);
    }
    app.stop().await;
}
