use std::path::PathBuf;

use authd::proto::auth::v1::{ValidateTokenRequest, auth_service_client::AuthServiceClient};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tempfile::TempDir;
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use crate::helpers::{TestApp, TestDb, test_config};

/// A CA, a server certificate for "localhost" and a client certificate, as PEM files.
struct Pki {
    dir: TempDir,
    ca_pem: String,
    client: Identity,
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf("localhost");
        let (client_cert, client_key) = leaf("billing-service");
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key).unwrap();
        Self {
            dir,
            ca_pem,
            client: Identity::from_pem(client_cert, client_key),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost")
    }
}

async fn spawn_tls(pki: &Pki, mtls: bool) -> TestApp {
    let db = TestDb::fresh().await;
    let mut config = test_config(&db);
    config.tls.cert = Some(pki.path("server.pem"));
    config.tls.key = Some(pki.path("server.key"));
    if mtls {
        config.tls.client_ca = Some(pki.path("ca.pem"));
        config.tls.validate_require_client_cert = true;
    }
    TestApp::builder(db)
        .config(config)
        .client_tls(Some(pki.client_tls()))
        .spawn()
        .await
}

async fn client(
    app: &TestApp,
    tls: Option<ClientTlsConfig>,
) -> Result<AuthServiceClient<Channel>, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{}", app.addr)).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(AuthServiceClient::new(endpoint.connect().await?))
}

#[tokio::test]
async fn the_server_speaks_tls_and_refuses_plaintext() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;

    let (_, tokens) = app.new_user().await;
    assert!(app.validate(&tokens.access_token).await.unwrap().active);

    let plaintext = match client(&app, None).await {
        Err(_) => true,
        Ok(mut c) => c
            .validate_token(ValidateTokenRequest {
                token: tokens.access_token.clone(),
            })
            .await
            .is_err(),
    };
    assert!(plaintext, "a plaintext client must not get an answer");
    app.stop().await;
}

#[tokio::test]
async fn with_mtls_validate_token_needs_a_client_certificate_and_login_does_not() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, true).await;
    // The helper's own client has no certificate: an end user.
    let (_, tokens) = app.new_user().await;
    let request = || ValidateTokenRequest {
        token: tokens.access_token.clone(),
    };

    let anonymous = app.client.clone().validate_token(request()).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);

    let mut service = client(&app, Some(pki.client_tls().identity(pki.client.clone())))
        .await
        .unwrap();
    assert!(
        service
            .validate_token(request())
            .await
            .unwrap()
            .into_inner()
            .active
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let app = spawn_tls(&pki, true).await;
    let (_, tokens) = app.new_user().await;

    let refused = match client(
        &app,
        Some(pki.client_tls().identity(stranger.client.clone())),
    )
    .await
    {
        Err(_) => true,
        Ok(mut c) => c
            .validate_token(ValidateTokenRequest {
                token: tokens.access_token.clone(),
            })
            .await
            .is_err(),
    };

    assert!(refused);
    app.stop().await;
}

#[tokio::test]
async fn healthcheck_can_speak_tls() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let (addr, ca) = (app.addr.to_string(), pki.path("ca.pem"));

    let output = tokio::task::spawn_blocking(move || {
        crate::helpers::authd_bin()
            .args(["healthcheck", "--listen", &addr, "--tls-ca"])
            .arg(ca)
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(output.status.success(), "{output:?}");
    app.stop().await;
}

#[tokio::test]
async fn healthcheck_follows_the_servers_tls_settings_and_fails_in_one_readable_line() {
    let pki = Pki::new();
    // A chain file as cert-manager writes one: the server's certificate, then its CA's.
    let chain = pki.path("chain.pem");
    let leaf = std::fs::read_to_string(pki.path("server.pem")).unwrap();
    std::fs::write(&chain, format!("{leaf}{}", pki.ca_pem)).unwrap();
    let db = TestDb::fresh().await;
    let mut config = test_config(&db);
    config.tls.cert = Some(chain.clone());
    config.tls.key = Some(pki.path("server.key"));
    let app = TestApp::builder(db)
        .config(config)
        .client_tls(Some(pki.client_tls()))
        .spawn()
        .await;
    let addr = app.addr.to_string();
    let check = move |tls_cert: Option<PathBuf>| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = crate::helpers::authd_bin();
            command.args(["healthcheck", "--listen", &addr]);
            if let Some(cert) = tls_cert {
                // The very variable `serve` reads, as the Docker image's HEALTHCHECK has it.
                command.env("AUTHD_TLS_CERT", cert);
            }
            command.output().unwrap()
        })
    };

    let same_settings = check(Some(chain)).await.unwrap();
    assert!(same_settings.status.success(), "{same_settings:?}");
    assert_eq!(
        String::from_utf8_lossy(&same_settings.stdout).trim(),
        "SERVING"
    );

    let plaintext = check(None).await.unwrap();
    assert!(!plaintext.status.success());
    let stderr = String::from_utf8_lossy(&plaintext.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: health check against http://"),
        "{stderr}"
    );
    assert!(stderr.contains("AUTHD_TLS_CERT"), "{stderr}");
    assert!(!stderr.contains("hyper::Error"), "{stderr}");
    app.stop().await;
}

#[test]
fn tls_files_holding_the_wrong_thing_are_named_by_their_setting() {
    let pki = Pki::new();
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let cases = [
        (&junk, &key, None, "AUTHD_TLS_CERT: "),
        (&cert, &junk, None, "AUTHD_TLS_KEY: "),
        (&cert, &key, Some(&junk), "AUTHD_TLS_CLIENT_CA: "),
        // A key where the CA should be: no certificate in it either.
        (&cert, &key, Some(&key), "AUTHD_TLS_CLIENT_CA: "),
    ];
    for (cert, key, client_ca, named) in cases {
        let mut command = crate::helpers::authd_bin();
        command
            .arg("serve")
            .env("AUTHD_LISTEN", "127.0.0.1:0")
            .env("AUTHD_DATABASE_URL", "sqlite::memory:")
            .env("AUTHD_TLS_CERT", cert)
            .env("AUTHD_TLS_KEY", key);
        if let Some(ca) = client_ca {
            command.env("AUTHD_TLS_CLIENT_CA", ca);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with(&format!("error: {named}")), "{stderr}");
        assert!(stderr.contains("holds no PEM"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_certificate_files_are_served_from_the_next_connection() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let before = app.client.clone();
    // A renewal, as cert-manager makes one: new files renamed over the old. From another
    // CA here, so which certificate a client got shows in whom it must trust.
    let renewed = Pki::new();
    for name in ["server.key", "server.pem"] {
        std::fs::copy(pki.path(name), pki.path(&format!("{name}.first"))).unwrap();
        let staged = pki.path(&format!("{name}.new"));
        std::fs::copy(renewed.path(name), &staged).unwrap();
        std::fs::rename(&staged, pki.path(name)).unwrap();
    }
    let connect = |tls: ClientTlsConfig| {
        let addr = app.addr;
        async move {
            let channel = Channel::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await?;
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map_err(|status| anyhow::anyhow!("{status}"))?;
            anyhow::Ok(())
        }
    };
    connect(renewed.client_tls())
        .await
        .expect("a new connection gets the renewed certificate");
    assert!(
        connect(pki.client_tls()).await.is_err(),
        "the old certificate is no longer served"
    );
    // A connection made before the renewal goes on with the certificate it began with.
    let mut before = before;
    before
        .validate_token(ValidateTokenRequest {
            token: "not a token".to_owned(),
        })
        .await
        .unwrap();

    // A rewrite that does not load (a chain cut off half-way) keeps the last good
    // certificate...
    let chain = std::fs::read_to_string(renewed.path("server.pem")).unwrap();
    std::fs::write(
        pki.path("server.pem"),
        format!("{chain}-----BEGIN CERTIFICATE-----\ntrunc"),
    )
    .unwrap();
    connect(renewed.client_tls())
        .await
        .expect("the last good certificate stays in use");
    // ...and the next good one is taken up: the change was seen, not missed.
    for name in ["server.key", "server.pem"] {
        std::fs::copy(pki.path(&format!("{name}.first")), pki.path(name)).unwrap();
    }
    connect(pki.client_tls())
        .await
        .expect("the files written back are served");
    app.stop().await;
}

/// A Kubernetes secret volume: each file a symlink through `..data`, a symlink to a
/// directory of this version's files, which the kubelet swaps for a new one in one rename.
struct SecretVolume {
    dir: TempDir,
}

impl SecretVolume {
    const FILES: [&str; 3] = ["server.pem", "server.key", "ca.pem"];

    fn new(first: &Pki) -> Self {
        let volume = Self {
            dir: TempDir::new().unwrap(),
        };
        volume.publish(first, "..v1");
        for name in Self::FILES {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.path(name)).unwrap();
        }
        volume
    }

    /// Writes `pki`'s files into the directory `version` and points `..data` at it.
    fn publish(&self, pki: &Pki, version: &str) {
        std::fs::create_dir(self.path(version)).unwrap();
        for name in Self::FILES {
            std::fs::copy(pki.path(name), self.path(version).join(name)).unwrap();
        }
        std::os::unix::fs::symlink(version, self.path("..data_tmp")).unwrap();
        std::fs::rename(self.path("..data_tmp"), self.path("..data")).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_secret_volume_renews_the_certificate_and_the_client_ca_under_mtls() {
    let first = Pki::new();
    let volume = SecretVolume::new(&first);
    let db = TestDb::fresh().await;
    let mut config = test_config(&db);
    config.tls.cert = Some(volume.path("server.pem"));
    config.tls.key = Some(volume.path("server.key"));
    config.tls.client_ca = Some(volume.path("ca.pem"));
    config.tls.validate_require_client_cert = true;
    let app = TestApp::builder(db)
        .config(config)
        .client_tls(Some(first.client_tls()))
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    // ValidateToken on a new connection that trusts `server` and shows `client`'s
    // certificate.
    let validate = |server: &Pki, client_cert: Identity| {
        let tls = server.client_tls().identity(client_cert);
        let request = ValidateTokenRequest {
            token: tokens.access_token.clone(),
        };
        let app = &app;
        async move {
            let mut service = client(app, Some(tls)).await?;
            service.validate_token(request).await?;
            anyhow::Ok(())
        }
    };
    validate(&first, first.client.clone())
        .await
        .expect("the first certificates");

    let renewed = Pki::new();
    volume.publish(&renewed, "..v2");
    validate(&renewed, renewed.client.clone())
        .await
        .expect("the renewed server certificate, and a client certificate of the new CA");
    assert!(
        validate(&renewed, first.client.clone()).await.is_err(),
        "a client certificate of the CA taken out is refused"
    );
    assert!(
        validate(&first, renewed.client.clone()).await.is_err(),
        "the old server certificate is no longer served"
    );
    app.stop().await;
}
