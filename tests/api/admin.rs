//! AdminService: who may call it, each RPC, role changes without logout, paging, import
//! of bcrypt and argon2 hashes with rehash on first login, and deletion.

use std::{collections::HashSet, time::Duration};

use authd::proto::auth::v1::{
    self as pb, InactiveReason, admin_service_client::AdminServiceClient,
};
use sea_orm::{ConnectionTrait as _, Statement};
use sha2::{Digest as _, Sha256};
use tonic::{Code, Request, transport::Channel};

use crate::helpers::{PASSWORD, TestApp, TestDb, assert_code, authd_bin, with_bearer};

/// The back-office key the test servers accept.
const ADMIN_KEY: &str = "back-office-key-for-tests-0123456789";

/// Made by an independent bcrypt (libxcrypt's, through Perl's `crypt`) for the password
/// `imported password <prefix> <cost>`: every prefix at three costs.
const BCRYPT_HASHES: [(&str, &str); 9] = [
    (
        "2a 04",
        "$2a$04$C/HLZjpcLRajD.USBFOj6ujXamjheXz3uvmGpWvVt5mqfi62eq1kO",
    ),
    (
        "2a 05",
        "$2a$05$MiEiRBdG/TOMbcnlHiUjQu6tHXgft.0F3iMjTR7D8R72LDc/vYFrS",
    ),
    (
        "2a 06",
        "$2a$06$MOJdx6piySn9C78hyPY4EuSdPibLwehblVR2rXRiFZirX0/1i5NAe",
    ),
    (
        "2b 04",
        "$2b$04$BYTNAs6VW7WE1b3E8xPA/umhLwx9TWichoy4LrJAUfmEJSmRdMoPK",
    ),
    (
        "2b 05",
        "$2b$05$r52QxWZnBFvyQWttXRpSBuxBsCcO4Zi.uAa5z6QlqqKtcv8qu7fS.",
    ),
    (
        "2b 06",
        "$2b$06$b12Qa6ewIOthGihvonUl.u7/POD0YpE55/PIvvrzXe2CWLUEPl68y",
    ),
    (
        "2y 04",
        "$2y$04$4uMRQJM5PATmBZQi529R8ut9DRkWL0OAwG32Ez6Fonhjbc1FCCZmC",
    ),
    (
        "2y 05",
        "$2y$05$gOLUANil9O2PK8dsoO7rSuAKtDbLEEOOa6GD.c5h0II5H/BosHzEG",
    ),
    (
        "2y 06",
        "$2y$06$RQrrYLqaEMKlcZm6vAgl5uP9/zCwoDFyNg0STwNSGQk/9f2c87YTW",
    ),
];

/// What the test servers hash new passwords with (the defaults).
const CURRENT_ARGON2: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

fn key_digest() -> [u8; 32] {
    Sha256::digest(ADMIN_KEY.as_bytes()).into()
}

/// A server that accepts [`ADMIN_KEY`] for AdminService.
async fn admin_app(db: TestDb) -> TestApp {
    TestApp::builder(db)
        .configure(|config| config.admin_api_keys = vec![key_digest()])
        .spawn()
        .await
}

fn admin(app: &TestApp) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(app.channel.clone())
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20)
}

/// A request as the back-office service sends it.
fn keyed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", ADMIN_KEY.parse().unwrap());
    request
}

async fn create(app: &TestApp, email: &str, role: &str, password: &str) -> pb::User {
    admin(app)
        .create_user(keyed(pb::CreateUserRequest {
            email: email.into(),
            password: password.into(),
            name: format!("Name of {email}"),
            role: role.into(),
            email_verified: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

/// A user of `role`, logged in: their access and refresh tokens.
async fn signed_in(app: &TestApp, email: &str, role: &str) -> (pb::User, pb::TokenPair) {
    let user = create(app, email, role, PASSWORD).await;
    let tokens = app.login(email, PASSWORD).await.unwrap().tokens.unwrap();
    (user, tokens)
}

async fn list_all(app: &TestApp, request: pb::ListUsersRequest) -> Vec<pb::User> {
    let mut users = Vec::new();
    let mut request = request;
    loop {
        let page = admin(app)
            .list_users(keyed(request.clone()))
            .await
            .unwrap()
            .into_inner();
        users.extend(page.users);
        if page.next_page_token.is_empty() {
            return users;
        }
        request.page_token = page.next_page_token;
    }
}

async fn audit_events(app: &TestApp, user_id: Option<&str>) -> Vec<pb::AuditEvent> {
    admin(app)
        .list_audit_events(keyed(pb::ListAuditEventsRequest {
            user_id: user_id.map(str::to_owned),
            page_size: 500,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn stored_hash(app: &TestApp, email: &str) -> String {
    let db = app.db.connect().await;
    let sql = format!("SELECT password_hash FROM users WHERE email = '{email}'");
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .expect("the user's row");
    row.try_get("", "password_hash").unwrap()
}

#[tokio::test]
async fn admin_tokens_and_api_keys_may_call_and_everyone_else_is_refused_and_audited() {
    let app = admin_app(TestDb::fresh().await).await;
    let (root, root_tokens) = signed_in(&app, "root@example.com", "admin").await;
    let (plain, plain_tokens) = signed_in(&app, "plain@example.com", "user").await;
    let get = || pb::GetUserRequest {
        user_id: plain.id.clone(),
        email: String::new(),
    };

    assert_code(
        admin(&app).get_user(Request::new(get())).await,
        Code::Unauthenticated,
    );
    assert_code(
        admin(&app)
            .get_user(with_bearer(get(), Some("not.a.token")))
            .await,
        Code::Unauthenticated,
    );
    let mut wrong_key = Request::new(get());
    wrong_key
        .metadata_mut()
        .insert("x-api-key", "guessed-key".parse().unwrap());
    assert_code(admin(&app).get_user(wrong_key).await, Code::Unauthenticated);
    let denied = assert_code(
        admin(&app)
            .get_user(with_bearer(get(), Some(&plain_tokens.access_token)))
            .await,
        Code::PermissionDenied,
    );
    assert!(!denied.message().contains(&plain_tokens.access_token));

    let by_admin = admin(&app)
        .get_user(with_bearer(get(), Some(&root_tokens.access_token)))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(by_admin.email, "plain@example.com");
    let by_key = admin(&app).get_user(keyed(get())).await.unwrap();
    assert_eq!(by_key.into_inner().user.unwrap().id, plain.id);

    // Changes are audited with their actor: the admin's id, or the key's digest prefix.
    let renamed = admin(&app)
        .update_user(with_bearer(
            pb::UpdateUserRequest {
                user_id: plain.id.clone(),
                name: Some("Renamed".into()),
                ..Default::default()
            },
            Some(&root_tokens.access_token),
        ))
        .await
        .unwrap();
    assert_eq!(renamed.into_inner().user.unwrap().name, "Renamed");
    // Refusals are audited in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = audit_events(&app, None).await;
    let actor_of = |kind: &str, outcome: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.kind == kind && e.outcome == outcome)
            .map(|e| e.actor.clone())
            .collect()
    };
    let key_prefix = format!("api-key:{}", &hex::encode(key_digest())[..8]);
    assert_eq!(
        actor_of("admin.create_user", "success"),
        [key_prefix.clone(), key_prefix]
    );
    assert_eq!(actor_of("admin.update_user", "success"), [root.id]);
    assert_eq!(actor_of("admin.access", "permission_denied"), [plain.id]);
    assert_eq!(actor_of("admin.access", "unauthenticated").len(), 3);
    assert!(
        events
            .iter()
            .filter(|e| e.kind == "admin.access")
            .all(|e| e.peer == "127.0.0.1")
    );
    app.stop().await;
}

#[tokio::test]
async fn an_admin_demoted_deactivated_or_logged_out_is_refused_at_once() {
    let app = admin_app(TestDb::fresh().await).await;
    let list = |token: &str| {
        with_bearer(
            pb::ListUsersRequest::default(),
            Some(token).filter(|t| !t.is_empty()),
        )
    };
    let (demoted, demoted_tokens) = signed_in(&app, "demoted@example.com", "admin").await;
    let (deactivated, deactivated_tokens) = signed_in(&app, "gone@example.com", "admin").await;
    let (_, logged_out_tokens) = signed_in(&app, "out@example.com", "admin").await;
    for token in [
        &demoted_tokens.access_token,
        &deactivated_tokens.access_token,
        &logged_out_tokens.access_token,
    ] {
        admin(&app).list_users(list(token)).await.unwrap();
    }

    admin(&app)
        .update_user(keyed(pb::UpdateUserRequest {
            user_id: demoted.id.clone(),
            role: Some("user".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_code(
        admin(&app)
            .list_users(list(&demoted_tokens.access_token))
            .await,
        Code::PermissionDenied,
    );
    admin(&app)
        .set_user_active(keyed(pb::SetUserActiveRequest {
            user_id: deactivated.id.clone(),
            active: false,
        }))
        .await
        .unwrap();
    assert_code(
        admin(&app)
            .list_users(list(&deactivated_tokens.access_token))
            .await,
        Code::Unauthenticated,
    );
    app.logout(&logged_out_tokens.refresh_token, false, None)
        .await
        .unwrap();
    assert_code(
        admin(&app)
            .list_users(list(&logged_out_tokens.access_token))
            .await,
        Code::Unauthenticated,
    );
    app.stop().await;
}

#[tokio::test]
async fn a_role_change_reaches_validate_token_on_every_replica_without_logging_out() {
    let db = TestDb::fresh().await;
    let a = admin_app(db.clone()).await;
    let b = admin_app(db).await;
    let (user, tokens) = signed_in(&a, "promoted@example.com", "user").await;
    let role_on = |app: &TestApp| {
        let token = tokens.access_token.clone();
        let mut client = app.client.clone();
        async move {
            let answer = client
                .validate_token(pb::ValidateTokenRequest { token })
                .await
                .unwrap()
                .into_inner();
            assert!(answer.active, "still signed in");
            answer.role
        }
    };
    assert_eq!(role_on(&b).await, "user");

    let updated = admin(&a)
        .update_user(keyed(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            role: Some("admin".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.role, "admin");
    // At once where it was made; within the sync interval on the other replica.
    assert_eq!(role_on(&a).await, "admin");
    let mut waited = Duration::ZERO;
    let sync = Duration::from_millis(200);
    while role_on(&b).await != "admin" {
        assert!(waited < sync * 5, "replica B still reports the old role");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    // Once B reports it, it never reports the old one again.
    for _ in 0..5 {
        assert_eq!(role_on(&b).await, "admin");
    }
    // The session goes on, and its next tokens carry the new role.
    let refreshed = b.refresh(&tokens.refresh_token).await.unwrap();
    assert_eq!(refreshed.user.unwrap().role, "admin");
    let new_access = refreshed.tokens.unwrap().access_token;
    assert_eq!(b.validate(&new_access).await.unwrap().role, "admin");
    // And the promoted user may now administer.
    admin(&b)
        .list_users(with_bearer(
            pb::ListUsersRequest::default(),
            Some(&new_access),
        ))
        .await
        .unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn users_are_created_read_updated_deactivated_and_their_sessions_revoked() {
    let app = admin_app(TestDb::fresh().await).await;
    let mut client = admin(&app);

    // Bad input: each a clear error naming its field, nothing stored.
    let bad = |email: &str, role: &str, password: &str| {
        keyed(pb::CreateUserRequest {
            email: email.into(),
            password: password.into(),
            name: "Someone".into(),
            role: role.into(),
            email_verified: false,
        })
    };
    for (request, field) in [
        (bad("a@example.com", "root", PASSWORD), "role"),
        (bad("not an email", "", PASSWORD), "email"),
        (bad("a@example.com", "", "short"), "password"),
    ] {
        let status = assert_code(client.create_user(request).await, Code::InvalidArgument);
        let violations = tonic_types::StatusExt::get_details_bad_request(&status).unwrap();
        assert_eq!(violations.field_violations[0].field, field, "{status:?}");
    }
    assert_code(
        client
            .get_user(keyed(pb::GetUserRequest {
                user_id: String::new(),
                email: "a@example.com".into(),
            }))
            .await,
        Code::NotFound,
    );

    let user = create(&app, "Carol@Example.com", "", PASSWORD).await;
    assert_eq!(
        (user.email.as_str(), user.role.as_str()),
        ("carol@example.com", "user")
    );
    assert_code(
        client
            .create_user(bad("CAROL@example.com", "", PASSWORD))
            .await,
        Code::AlreadyExists,
    );
    let by_email = client
        .get_user(keyed(pb::GetUserRequest {
            user_id: String::new(),
            email: "CAROL@example.com".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(by_email.id, user.id);
    for (user_id, email) in [("", ""), (user.id.as_str(), "carol@example.com")] {
        assert_code(
            client
                .get_user(keyed(pb::GetUserRequest {
                    user_id: user_id.into(),
                    email: email.into(),
                }))
                .await,
            Code::InvalidArgument,
        );
    }
    assert_code(
        client
            .get_user(keyed(pb::GetUserRequest {
                user_id: "not-a-uuid".into(),
                email: String::new(),
            }))
            .await,
        Code::InvalidArgument,
    );

    let updated = client
        .update_user(keyed(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            name: Some("  Carol C.  ".into()),
            role: None,
            email_verified: Some(true),
        }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        (
            updated.name.as_str(),
            updated.email_verified,
            updated.role.as_str()
        ),
        ("Carol C.", true, "user")
    );
    for (name, role) in [(Some(""), None), (None, Some("root")), (None, Some(""))] {
        assert_code(
            client
                .update_user(keyed(pb::UpdateUserRequest {
                    user_id: user.id.clone(),
                    name: name.map(str::to_owned),
                    role: role.map(str::to_owned),
                    email_verified: None,
                }))
                .await,
            Code::InvalidArgument,
        );
    }

    // Two sessions; revoking ends both, and says so.
    let first = app
        .login("carol@example.com", PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    app.login("carol@example.com", PASSWORD).await.unwrap();
    let revoked = client
        .revoke_user_sessions(keyed(pb::RevokeUserSessionsRequest {
            user_id: user.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(revoked, 2);
    let validated = app.validate(&first.access_token).await.unwrap();
    assert_eq!(
        (validated.active, validated.reason()),
        (false, InactiveReason::Revoked)
    );
    assert_code(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
    );

    // Deactivation ends sessions and refuses login; activation lets them back in.
    let session = app
        .login("carol@example.com", PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let inactive = client
        .set_user_active(keyed(pb::SetUserActiveRequest {
            user_id: user.id.clone(),
            active: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!inactive.active);
    assert!(!app.validate(&session.access_token).await.unwrap().active);
    assert_code(
        app.login("carol@example.com", PASSWORD).await,
        Code::PermissionDenied,
    );
    assert_code(
        client
            .issue_password_reset_code(keyed(pb::IssuePasswordResetCodeRequest {
                user_id: user.id.clone(),
            }))
            .await,
        Code::FailedPrecondition,
    );
    client
        .set_user_active(keyed(pb::SetUserActiveRequest {
            user_id: user.id.clone(),
            active: true,
        }))
        .await
        .unwrap();
    app.login("carol@example.com", PASSWORD).await.unwrap();

    // A reset code for a service that delivers it itself.
    let issued = client
        .issue_password_reset_code(keyed(pb::IssuePasswordResetCodeRequest {
            user_id: user.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(issued.expires_at.unwrap().seconds > chrono::Utc::now().timestamp());
    let new_password = "a brand new passphrase for carol";
    app.client
        .clone()
        .reset_password(pb::ResetPasswordRequest {
            code: issued.code,
            new_password: new_password.into(),
        })
        .await
        .unwrap();
    app.login("carol@example.com", new_password).await.unwrap();

    let unknown = uuid::Uuid::now_v7().to_string();
    assert_code(
        client
            .set_user_active(keyed(pb::SetUserActiveRequest {
                user_id: unknown.clone(),
                active: false,
            }))
            .await,
        Code::NotFound,
    );
    assert_code(
        client
            .revoke_user_sessions(keyed(pb::RevokeUserSessionsRequest { user_id: unknown }))
            .await,
        Code::NotFound,
    );
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_user_is_gone_with_their_sessions_on_every_replica_and_the_audit_stays() {
    let db = TestDb::fresh().await;
    let a = admin_app(db.clone()).await;
    let b = admin_app(db).await;
    let (user, tokens) = signed_in(&a, "deleted@example.com", "user").await;
    assert!(b.validate(&tokens.access_token).await.unwrap().active);

    admin(&a)
        .delete_user(keyed(pb::DeleteUserRequest {
            user_id: user.id.clone(),
        }))
        .await
        .unwrap();
    let revoked = |answer: pb::ValidateTokenResponse| {
        (answer.active, answer.reason()) == (false, InactiveReason::Revoked)
    };
    assert!(revoked(a.validate(&tokens.access_token).await.unwrap()));
    let mut waited = Duration::ZERO;
    while !revoked(b.validate(&tokens.access_token).await.unwrap()) {
        assert!(
            waited < Duration::from_secs(1),
            "replica B still vouches for it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_code(
        b.refresh(&tokens.refresh_token).await,
        Code::Unauthenticated,
    );
    assert_code(
        b.get_me(Some(&tokens.access_token)).await,
        Code::Unauthenticated,
    );
    assert_code(
        admin(&b)
            .get_user(keyed(pb::GetUserRequest {
                user_id: user.id.clone(),
                email: String::new(),
            }))
            .await,
        Code::NotFound,
    );
    assert_code(
        admin(&b)
            .delete_user(keyed(pb::DeleteUserRequest {
                user_id: user.id.clone(),
            }))
            .await,
        Code::NotFound,
    );

    // The address is free again; the new account is another user.
    let again = b
        .register("deleted@example.com", PASSWORD, "Second Life")
        .await
        .unwrap();
    assert_ne!(again.user.unwrap().id, user.id);
    // The trail of the deleted user stays, ending with the deletion.
    let trail = audit_events(&b, Some(&user.id)).await;
    let kinds: Vec<&str> = trail.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["admin.delete_user", "login", "admin.create_user"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn pages_of_users_see_each_exactly_once_while_others_register() {
    let app = admin_app(TestDb::fresh().await).await;
    // 1,200 users in two imports (no passwords: nothing to hash).
    let mut expected = Vec::new();
    for batch in 0..2 {
        let users: Vec<pb::ImportUser> = (0..600)
            .map(|i| pb::ImportUser {
                email: format!("paged-{batch}-{i:03}@example.com"),
                name: format!("Paged {batch} {i}"),
                ..Default::default()
            })
            .collect();
        let results = admin(&app)
            .import_users(keyed(pb::ImportUsersRequest { users }))
            .await
            .unwrap()
            .into_inner()
            .results;
        assert!(results.iter().all(|r| r.error.is_empty()), "{results:?}");
        expected.extend(results.into_iter().map(|r| r.user_id));
    }

    // Others keep registering while the pages are read.
    let writer = {
        let app_client = admin(&app);
        tokio::spawn(async move {
            let mut client = app_client;
            for i in 0..60 {
                client
                    .create_user(keyed(pb::CreateUserRequest {
                        email: format!("during-{i}@example.com"),
                        name: format!("During {i}"),
                        ..Default::default()
                    }))
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin(&app)
            .list_users(keyed(pb::ListUsersRequest {
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.users.len() <= 500);
        pages += 1;
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    assert!(pages >= 3);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a user was listed twice");
    let imported: Vec<&String> = seen.iter().filter(|id| expected.contains(id)).collect();
    assert_eq!(
        imported,
        expected.iter().collect::<Vec<_>>(),
        "each once, in order"
    );

    // The page size: default 50, at most 500, never negative.
    let size = |page_size| {
        keyed(pb::ListUsersRequest {
            page_size,
            ..Default::default()
        })
    };
    let mut client = admin(&app);
    assert_eq!(
        client
            .list_users(size(0))
            .await
            .unwrap()
            .into_inner()
            .users
            .len(),
        50
    );
    assert_eq!(
        client
            .list_users(size(5000))
            .await
            .unwrap()
            .into_inner()
            .users
            .len(),
        500
    );
    assert_code(client.list_users(size(-1)).await, Code::InvalidArgument);

    // A token is bound to its query, and cannot be forged.
    let first = client
        .list_users(keyed(pb::ListUsersRequest {
            page_size: 10,
            query: "paged-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(first.users.iter().all(|u| u.email.starts_with("paged-1-")));
    let other_query = keyed(pb::ListUsersRequest {
        page_size: 10,
        query: "paged-0".into(),
        page_token: first.next_page_token.clone(),
        ..Default::default()
    });
    assert_code(client.list_users(other_query).await, Code::InvalidArgument);
    let mut forged = first.next_page_token.clone().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    let tampered = keyed(pb::ListUsersRequest {
        page_size: 10,
        query: "paged-1".into(),
        page_token: String::from_utf8(forged).unwrap(),
        ..Default::default()
    });
    let status = assert_code(client.list_users(tampered).await, Code::InvalidArgument);
    assert!(status.message().contains("page_token"), "{status:?}");
    app.stop().await;
}

#[tokio::test]
async fn list_users_filters_by_prefix_of_email_or_name_in_any_case_by_role_and_by_activity() {
    let app = admin_app(TestDb::fresh().await).await;
    let mut client = admin(&app);
    let row = |email: &str, name: &str, role: &str, active: bool| pb::ImportUser {
        email: email.into(),
        name: name.into(),
        role: role.into(),
        active: Some(active),
        ..Default::default()
    };
    client
        .import_users(keyed(pb::ImportUsersRequest {
            users: vec![
                row("alice@example.com", "Alice Liddell", "user", true),
                row("bob@example.com", "ALIas Bob", "admin", true),
                row("carol@example.com", "Carol", "user", false),
                row("émile@example.com", "Émile Zola", "user", true),
                row("alison@example.com", "Zed", "admin", false),
            ],
        }))
        .await
        .unwrap();
    let emails = |users: Vec<pb::User>| {
        let mut emails: Vec<String> = users.into_iter().map(|u| u.email).collect();
        emails.sort();
        emails
    };
    let query = |query: &str, role: &str, active: Option<bool>| pb::ListUsersRequest {
        query: query.into(),
        role: role.into(),
        active,
        ..Default::default()
    };
    assert_eq!(
        emails(list_all(&app, query("ALI", "", None)).await),
        ["alice@example.com", "alison@example.com", "bob@example.com"]
    );
    assert_eq!(
        emails(list_all(&app, query("émi", "", None)).await),
        ["émile@example.com"]
    );
    assert_eq!(
        emails(list_all(&app, query("ÉMILE Z", "", None)).await),
        ["émile@example.com"]
    );
    assert_eq!(
        emails(list_all(&app, query("al", "admin", None)).await),
        ["alison@example.com", "bob@example.com"]
    );
    assert_eq!(
        emails(list_all(&app, query("", "user", Some(false))).await),
        ["carol@example.com"]
    );
    assert!(list_all(&app, query("%", "", None)).await.is_empty());
    assert!(list_all(&app, query("zz", "", None)).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn imported_bcrypt_and_argon2_users_log_in_and_are_rehashed_to_argon2id() {
    let app = admin_app(TestDb::fresh().await).await;
    // An argon2i PHC string at another cost, from the reference implementation's crate.
    let argon2_password = "imported argon2 password";
    let argon2_hash = {
        use argon2::{
            Algorithm, Argon2, Params, PasswordHasher as _, Version, password_hash::SaltString,
        };
        let params = Params::new(8192, 3, 1, None).unwrap();
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(argon2_password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    };
    let mut users: Vec<pb::ImportUser> = BCRYPT_HASHES
        .iter()
        .map(|(label, hash)| pb::ImportUser {
            email: format!("bcrypt-{}@example.com", label.replace(' ', "-")),
            name: format!("bcrypt {label}"),
            password_hash: (*hash).into(),
            ..Default::default()
        })
        .collect();
    users.push(pb::ImportUser {
        email: "argon2@example.com".into(),
        name: "argon2".into(),
        password_hash: argon2_hash.clone(),
        email_verified: true,
        ..Default::default()
    });
    let results = admin(&app)
        .import_users(keyed(pb::ImportUsersRequest { users }))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(
        results
            .iter()
            .all(|r| r.error.is_empty() && !r.user_id.is_empty()),
        "{results:?}"
    );

    for (label, hash) in BCRYPT_HASHES {
        let email = format!("bcrypt-{}@example.com", label.replace(' ', "-"));
        assert_eq!(stored_hash(&app, &email).await, hash, "stored as given");
        let password = format!("imported password {label}");
        assert_code(
            app.login(&email, "not the password").await,
            Code::Unauthenticated,
        );
        assert_eq!(
            stored_hash(&app, &email).await,
            hash,
            "no rehash on a failure"
        );
        app.login(&email, &password).await.unwrap();
        let rehashed = stored_hash(&app, &email).await;
        assert!(rehashed.starts_with(CURRENT_ARGON2), "{label}: {rehashed}");
        // The new hash holds the same password.
        app.login(&email, &password).await.unwrap();
    }
    assert_eq!(stored_hash(&app, "argon2@example.com").await, argon2_hash);
    let login = app
        .login("argon2@example.com", argon2_password)
        .await
        .unwrap();
    assert!(login.user.unwrap().email_verified);
    assert!(
        stored_hash(&app, "argon2@example.com")
            .await
            .starts_with(CURRENT_ARGON2)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_for_an_imported_user_is_throttled_like_any_other() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.admin_api_keys = vec![key_digest()];
            config.login.max_failures = 3;
        })
        .spawn()
        .await;
    let (label, hash) = BCRYPT_HASHES[4];
    admin(&app)
        .import_users(keyed(pb::ImportUsersRequest {
            users: vec![pb::ImportUser {
                email: "throttled@example.com".into(),
                name: "Throttled".into(),
                password_hash: hash.into(),
                ..Default::default()
            }],
        }))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_code(
            app.login("throttled@example.com", "wrong").await,
            Code::Unauthenticated,
        );
    }
    let right = format!("imported password {label}");
    assert_code(
        app.login("throttled@example.com", &right).await,
        Code::ResourceExhausted,
    );
    assert_eq!(stored_hash(&app, "throttled@example.com").await, hash);
    app.stop().await;
}

#[tokio::test]
async fn an_import_refuses_bad_rows_one_by_one_and_keeps_the_rest() {
    let app = admin_app(TestDb::fresh().await).await;
    create(&app, "existing@example.com", "", PASSWORD).await;
    let good = BCRYPT_HASHES[0].1;
    let row = |email: &str, role: &str, hash: &str| pb::ImportUser {
        email: email.into(),
        name: "Row".into(),
        role: role.into(),
        password_hash: hash.into(),
        ..Default::default()
    };
    let rows = vec![
        row("ok-1@example.com", "", good),
        row("truncated@example.com", "", &good[..40]),
        row(
            "bcrypt-2x@example.com",
            "",
            &good.replacen("$2a$", "$2x$", 1),
        ),
        row("md5@example.com", "", "$1$saltsalt$2vBdDgHmHmbQkAu7jNZNM1"),
        row("plain@example.com", "", "hunter2"),
        row(
            "bad-argon@example.com",
            "",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA",
        ),
        row("not an email", "", good),
        row("role@example.com", "root", good),
        row("EXISTING@example.com", "", good),
        row("twice@example.com", "", good),
        row("Twice@Example.com", "", good),
        row("no-password@example.com", "admin", ""),
        row("ok-2@example.com", "", good),
    ];
    let results = admin(&app)
        .import_users(keyed(pb::ImportUsersRequest { users: rows }))
        .await
        .unwrap()
        .into_inner()
        .results;
    let outcome: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            let ok = if r.user_id.is_empty() {
                "refused"
            } else {
                "created"
            };
            (
                r.email.as_str(),
                if r.error.is_empty() {
                    ok
                } else {
                    r.error.as_str()
                },
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("ok-1@example.com", "created"),
            ("truncated@example.com", "malformed bcrypt hash"),
            (
                "bcrypt-2x@example.com",
                "unsupported password hash: expected bcrypt ($2a$, $2b$, $2y$) or an argon2 PHC string"
            ),
            (
                "md5@example.com",
                "unsupported password hash: expected bcrypt ($2a$, $2b$, $2y$) or an argon2 PHC string"
            ),
            (
                "plain@example.com",
                "unsupported password hash: expected bcrypt ($2a$, $2b$, $2y$) or an argon2 PHC string"
            ),
            ("bad-argon@example.com", "malformed argon2 PHC string"),
            ("not an email", "email is not a valid address"),
            (
                "role@example.com",
                "unknown role: expected one of user, admin"
            ),
            ("EXISTING@example.com", "email already taken"),
            ("twice@example.com", "created"),
            ("Twice@Example.com", "duplicate email in this import"),
            ("no-password@example.com", "created"),
            ("ok-2@example.com", "created"),
        ]
    );
    // Nothing else changed: exactly the created rows exist, beside the one from before.
    let all = list_all(&app, pb::ListUsersRequest::default()).await;
    let mut emails: Vec<&str> = all.iter().map(|u| u.email.as_str()).collect();
    emails.sort_unstable();
    assert_eq!(
        emails,
        [
            "existing@example.com",
            "no-password@example.com",
            "ok-1@example.com",
            "ok-2@example.com",
            "twice@example.com"
        ]
    );
    // Without a password nobody logs in, until a reset sets one.
    assert_code(
        app.login("no-password@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    let id = &results[11].user_id;
    let code = admin(&app)
        .issue_password_reset_code(keyed(pb::IssuePasswordResetCodeRequest {
            user_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .code;
    app.client
        .clone()
        .reset_password(pb::ResetPasswordRequest {
            code,
            new_password: PASSWORD.into(),
        })
        .await
        .unwrap();
    let user = app
        .login("no-password@example.com", PASSWORD)
        .await
        .unwrap();
    assert_eq!(user.user.unwrap().role, "admin");

    // More than 1000 rows is refused whole.
    let too_many = (0..1001)
        .map(|i| row(&format!("many-{i}@example.com"), "", ""))
        .collect();
    let status = assert_code(
        admin(&app)
            .import_users(keyed(pb::ImportUsersRequest { users: too_many }))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("1000"), "{status:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_cli_sets_roles_and_imports_json_lines() {
    let db = TestDb::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.jsonl");
    let lines = [
        format!(
            r#"{{"email":"cli-1@example.com","name":"CLI One","password_hash":"{}"}}"#,
            BCRYPT_HASHES[3].1
        ),
        r#"{"email":"cli-2@example.com","name":"CLI Two","role":"admin","active":false}"#
            .to_owned(),
        r#"{"email":"cli-3@example.com","name":"CLI Three","password_hash":"md5-lol"}"#.to_owned(),
        r#"{"email": 42}"#.to_owned(),
        String::new(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let import = authd_bin()
        .args(["user", "import"])
        .arg(&file)
        .env("AUTHD_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&import.stdout);
    assert_eq!(import.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("line 1: cli-1@example.com: created"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 2: cli-2@example.com: created"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 3: cli-3@example.com: refused: unsupported password hash"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 4: refused: not an ImportUser JSON object"),
        "{stdout}"
    );
    assert!(stdout.contains("imported 2 users; refused 2"), "{stdout}");
    assert!(!stdout.contains(BCRYPT_HASHES[3].1));

    let set_role = |email: &str, role: &str| {
        authd_bin()
            .args(["user", "set-role", email, role])
            .env("AUTHD_DATABASE_URL", &db.url)
            .output()
            .unwrap()
    };
    let done = set_role("CLI-1@example.com", "admin");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let refused = set_role("cli-1@example.com", "root");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("role: unknown role"));
    let missing = set_role("nobody@example.com", "admin");
    assert!(!missing.status.success());

    let app = admin_app(db).await;
    let login = app
        .login("cli-1@example.com", "imported password 2b 04")
        .await
        .unwrap();
    assert_eq!(login.user.unwrap().role, "admin");
    let disabled = admin(&app)
        .get_user(keyed(pb::GetUserRequest {
            user_id: String::new(),
            email: "cli-2@example.com".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!((disabled.role.as_str(), disabled.active), ("admin", false));
    let events = audit_events(&app, None).await;
    assert!(
        events
            .iter()
            .filter(|e| e.kind.starts_with("admin."))
            .all(|e| e.actor == "cli"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.kind == "admin.update_user"));
    app.stop().await;
}

#[tokio::test]
async fn audit_events_page_newest_first_with_tokens_bound_to_their_user() {
    let app = admin_app(TestDb::fresh().await).await;
    let (user, _) = signed_in(&app, "audited@example.com", "user").await;
    for _ in 0..4 {
        app.login("audited@example.com", PASSWORD).await.unwrap();
    }
    let page = |user_id: Option<&str>, token: &str| {
        keyed(pb::ListAuditEventsRequest {
            user_id: user_id.map(str::to_owned),
            page_size: 2,
            page_token: token.into(),
        })
    };
    let mut client = admin(&app);
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let answer = client
            .list_audit_events(page(Some(&user.id), &token))
            .await
            .unwrap()
            .into_inner();
        events.extend(answer.events);
        if answer.next_page_token.is_empty() {
            break;
        }
        token = answer.next_page_token;
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "login",
            "login",
            "login",
            "login",
            "login",
            "admin.create_user"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let first = client
        .list_audit_events(page(Some(&user.id), ""))
        .await
        .unwrap()
        .into_inner();
    assert_code(
        client
            .list_audit_events(page(None, &first.next_page_token))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        client.list_audit_events(page(Some("nope"), "")).await,
        Code::InvalidArgument,
    );
    app.stop().await;
}

#[tokio::test]
async fn a_prefix_search_is_served_by_the_email_and_name_indexes() {
    let app = admin_app(TestDb::fresh().await).await;
    // Enough rows that MySQL's and MariaDB's optimizer prefers the indexes to a scan.
    for batch in 0..2 {
        let users = (0..1000)
            .map(|i| pb::ImportUser {
                email: format!("indexed-{batch}-{i:04}@example.com"),
                name: format!("Indexed {batch} {i:04}"),
                ..Default::default()
            })
            .collect();
        admin(&app)
            .import_users(keyed(pb::ImportUsersRequest { users }))
            .await
            .unwrap();
    }
    let db = app.db.connect().await;
    let backend = db.get_database_backend();
    if backend == sea_orm::DbBackend::MySql {
        db.execute_unprepared("ANALYZE TABLE users").await.unwrap();
    }
    let config = crate::helpers::test_config(&app.db);
    let settings = config.database.settings().unwrap();
    let store = authd::store::SqlStore::new(db, &settings);
    let filter = authd::store::UserFilter {
        prefix: Some("indexed-1-00".into()),
        ..Default::default()
    };
    let plan = store
        .explain_user_listing(&filter)
        .await
        .unwrap()
        .join("\n");
    // Both indexes searched by range, never the whole table.
    let served = match backend {
        sea_orm::DbBackend::Sqlite => {
            plan.contains("SEARCH users USING INDEX idx_users_name_key")
                && plan.contains("SEARCH users USING INDEX sqlite_autoindex_users")
                && !plan.contains("SCAN users")
        }
        sea_orm::DbBackend::Postgres => {
            plan.contains("Index Scan on idx_users_name_key")
                && plan.contains("Index Scan on users_email_key")
                && !plan.contains("Seq Scan")
        }
        _ => {
            plan.contains("| index_merge |")
                && plan.contains("idx_users_name_key")
                && plan.contains("sort_union")
        }
    };
    assert!(served, "{plan}");
    let found = list_all(
        &app,
        pb::ListUsersRequest {
            query: "Indexed 1 00".into(),
            ..Default::default()
        },
    )
    .await;
    // The names "Indexed 1 0000" to "Indexed 1 0099", whatever the letter case asked.
    assert_eq!(found.len(), 100);
    assert!(found.iter().all(|u| u.name.starts_with("Indexed 1 00")));
    app.stop().await;
}
