//! Verification codes, password accounts, device enrollment, refresh,
//! revocation and the rate limits that guard them.

use sealpost_harness::TestApp;
use sealpost_proto::api::{
    Account, CreateAccount, Device, DeviceCredential, DeviceTokens, ErrorCode, RefreshTokens,
};

async fn create_account(
    app: &TestApp,
    email: &str,
    code: String,
    password: &str,
) -> sealpost_harness::ApiResponse {
    let request = CreateAccount {
        email: email.into(),
        code,
        password: password.into(),
        display_name: Some("Alice Example".into()),
    };
    app.api.post_json("/api/v1/accounts", &request, None).await.expect("request")
}

#[tokio::test]
async fn a_password_account_signs_in_on_a_new_device() {
    let app = TestApp::spawn().await;
    let code = app.code_for("alice@example.test").await;
    let created = create_account(&app, "Alice@Example.test", code, "correct horse battery").await;
    assert_eq!(created.status, 201, "{}", created.text());
    let account: Account = created.json();
    assert_eq!(account.email, "alice@example.test");
    assert_eq!(account.display_name.as_deref(), Some("Alice Example"));

    let wrong = app
        .enroll(
            "alice@example.test",
            "browser",
            DeviceCredential::Password("wrong password".into()),
        )
        .await;
    assert_eq!((wrong.status, wrong.error_code()), (401, Some(ErrorCode::InvalidCredentials)));
    let unknown = app
        .enroll(
            "nobody@example.test",
            "browser",
            DeviceCredential::Password("whatever12345".into()),
        )
        .await;
    assert_eq!(
        unknown.text(),
        wrong.text(),
        "an unknown address is indistinguishable from a wrong password"
    );

    let signed_in = app
        .enroll(
            "alice@example.test",
            "browser",
            DeviceCredential::Password("correct horse battery".into()),
        )
        .await;
    assert_eq!(signed_in.status, 201, "{}", signed_in.text());
    let tokens: DeviceTokens = signed_in.json();
    assert!(tokens.access_token.starts_with("spa_") && tokens.refresh_token.starts_with("spr_"));
    assert!(tokens.access_expires_at < tokens.refresh_expires_at);

    let again =
        create_account(&app, "alice@example.test", "000000".into(), "another password").await;
    assert_eq!((again.status, again.error_code()), (409, Some(ErrorCode::AccountExists)));
}

#[tokio::test]
async fn a_code_works_once_and_only_for_its_address() {
    let app = TestApp::spawn().await;
    let code = app.code_for("alice@example.test").await;
    let for_bob =
        app.enroll("bob@example.test", "laptop", DeviceCredential::Code(code.clone())).await;
    assert_eq!((for_bob.status, for_bob.error_code()), (400, Some(ErrorCode::InvalidCode)));
    let first =
        app.enroll("alice@example.test", "laptop", DeviceCredential::Code(code.clone())).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let reused = app.enroll("alice@example.test", "laptop", DeviceCredential::Code(code)).await;
    assert_eq!((reused.status, reused.error_code()), (400, Some(ErrorCode::InvalidCode)));
}

#[tokio::test]
async fn a_code_dies_after_too_many_wrong_guesses_and_with_time() {
    let app = TestApp::spawn_with(|s| s.accounts.code_max_attempts = 3).await;
    let code = app.code_for("alice@example.test").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..3 {
        let guess =
            app.enroll("alice@example.test", "laptop", DeviceCredential::Code(wrong.into())).await;
        assert_eq!(guess.error_code(), Some(ErrorCode::InvalidCode));
    }
    let right = app.enroll("alice@example.test", "laptop", DeviceCredential::Code(code)).await;
    assert_eq!(
        right.error_code(),
        Some(ErrorCode::InvalidCode),
        "the code is void after 3 wrong guesses"
    );

    let fresh = app.code_for("alice@example.test").await;
    app.clock.advance(std::time::Duration::from_secs(16 * 60));
    let late = app.enroll("alice@example.test", "laptop", DeviceCredential::Code(fresh)).await;
    assert_eq!(late.error_code(), Some(ErrorCode::InvalidCode), "codes expire after 15 minutes");
}

#[tokio::test]
async fn code_requests_and_failed_sign_ins_are_rate_limited() {
    let app = TestApp::spawn_with(|s| {
        s.limits.code_requests_per_address_per_hour = 2;
        s.limits.failed_logins_per_address_per_15_minutes = 3;
    })
    .await;
    assert_eq!(app.request_code("alice@example.test").await.status, 202);
    assert_eq!(app.request_code("alice@example.test").await.status, 202);
    let limited = app.request_code("alice@example.test").await;
    assert_eq!((limited.status, limited.error_code()), (429, Some(ErrorCode::RateLimited)));
    let retry_after: u64 =
        limited.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=3600).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        app.request_code("bob@example.test").await.status,
        202,
        "other addresses are unaffected"
    );

    for _ in 0..3 {
        let failed = app
            .enroll("bob@example.test", "x", DeviceCredential::Password("wrong password".into()))
            .await;
        assert_eq!(failed.error_code(), Some(ErrorCode::InvalidCredentials));
    }
    let blocked = app
        .enroll("bob@example.test", "x", DeviceCredential::Password("wrong password".into()))
        .await;
    assert_eq!((blocked.status, blocked.error_code()), (429, Some(ErrorCode::RateLimited)));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_revoked_devices_stay_out() {
    let app = TestApp::spawn().await;
    let laptop = app.register_agent("alice@example.test", "laptop").await;
    let phone = app.register_agent("alice@example.test", "phone").await;

    let refresh = |token: String| {
        let app = &app;
        async move {
            app.api
                .post_json("/api/v1/devices/refresh", &RefreshTokens { refresh_token: token }, None)
                .await
                .expect("request")
        }
    };
    let rotated = refresh(laptop.tokens.refresh_token.clone()).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let rotated: DeviceTokens = rotated.json();
    let replay = refresh(laptop.tokens.refresh_token.clone()).await;
    assert_eq!(
        (replay.status, replay.error_code()),
        (401, Some(ErrorCode::Unauthenticated)),
        "a refresh token works once"
    );

    let devices: Vec<Device> =
        app.api.get("/api/v1/devices", Some(&rotated.access_token)).await.expect("list").json();
    assert_eq!(devices.len(), 2);
    assert!(devices.iter().any(|d| d.name == "laptop" && d.current));
    assert!(devices.iter().any(|d| d.name == "phone" && !d.current));

    let revoke = app
        .api
        .delete(&format!("/api/v1/devices/{}", phone.tokens.device_id), Some(&rotated.access_token))
        .await
        .expect("revoke");
    assert_eq!(revoke.status, 204);
    let using_phone = app.api.get("/api/v1/devices", Some(phone.token())).await.expect("list");
    assert_eq!(using_phone.error_code(), Some(ErrorCode::DeviceRevoked));
    let refreshing_phone = refresh(phone.tokens.refresh_token.clone()).await;
    assert_eq!(refreshing_phone.status, 401);

    let stranger = app.register_agent("mallory@example.test", "laptop").await;
    let foreign = app
        .api
        .delete(&format!("/api/v1/devices/{}", rotated.device_id), Some(stranger.token()))
        .await
        .expect("revoke");
    assert_eq!(foreign.status, 404, "nobody revokes another account's device");
}

#[tokio::test]
async fn the_verification_email_carries_the_code_and_the_organization_footer() {
    let app = TestApp::spawn().await;
    app.code_for("alice@example.test").await;
    let mail = app.mail.messages().await.pop().expect("an email");
    assert_eq!(mail.rcpt_to, vec!["alice@example.test"]);
    assert_eq!(mail.mail_from, "sealpost@example.test");
    let text = String::from_utf8_lossy(&mail.data);
    assert!(text.contains("Sent by Example Clinic, 1 Test Street, Testville"), "{text}");
}

/// Everything the server stored, as bytes: every file of its data
/// directory (the SQLite database and its write-ahead log), or PostgreSQL's
/// data as dumped.
async fn everything_stored(app: &TestApp) -> Vec<u8> {
    let mut stored = Vec::new();
    if let Some(postgres) = &app.postgres {
        stored.extend(postgres.dump().await.expect("dump").into_bytes());
    }
    let mut dirs = vec![app.data_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("data directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                stored.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    stored
}

#[tokio::test]
async fn no_password_or_token_is_stored_in_clear() {
    let app = TestApp::spawn().await;
    let password = "correct horse battery staple";
    app.create_password_account("alice@example.test", "Alice", password).await;
    let laptop = app.register_agent("alice@example.test", "laptop").await;
    let refreshed: DeviceTokens = app
        .api
        .post_json(
            "/api/v1/devices/refresh",
            &RefreshTokens { refresh_token: laptop.tokens.refresh_token.clone() },
            None,
        )
        .await
        .expect("request")
        .json();
    let signed_in = app
        .enroll("alice@example.test", "phone", DeviceCredential::Password(password.into()))
        .await;
    assert_eq!(signed_in.status, 201, "{}", signed_in.text());
    let phone: DeviceTokens = signed_in.json();

    let stored = everything_stored(&app).await;
    assert!(
        stored.windows(b"alice@example.test".len()).any(|w| w == b"alice@example.test"),
        "the search reads what the server stored"
    );
    let secrets = [
        ("the password", password),
        ("the first access token", laptop.tokens.access_token.as_str()),
        ("the first refresh token", laptop.tokens.refresh_token.as_str()),
        ("the refreshed access token", refreshed.access_token.as_str()),
        ("the refreshed refresh token", refreshed.refresh_token.as_str()),
        ("a password sign-in's access token", phone.access_token.as_str()),
        ("a password sign-in's refresh token", phone.refresh_token.as_str()),
    ];
    for (what, secret) in secrets {
        let found = stored.windows(secret.len()).any(|window| window == secret.as_bytes());
        assert!(!found, "{what} is stored in clear");
    }
}
