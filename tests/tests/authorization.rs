//! Who may do what with a message: every message endpoint against every kind
//! of caller. Anyone who is neither sender nor recipient gets 404, never 403,
//! so message ids cannot be probed.

use std::time::Duration;

use sealpost_harness::{TestApp, TestUser, sample_mime};
use sealpost_proto::api::ErrorCode;

#[derive(Debug, Clone, Copy)]
enum Caller {
    Anonymous,
    WrongUser,
    Recipient,
    Sender,
    RevokedDevice,
    ExpiredToken,
}

struct World {
    app: TestApp,
    sender: TestUser,
    recipient: TestUser,
    stranger: TestUser,
    revoked: TestUser,
    message_id: String,
}

async fn world() -> World {
    let app = TestApp::spawn().await;
    let sender = app.register_agent("sender@example.test", "sender laptop").await;
    let recipient = app.register_agent("alice@example.test", "alice laptop").await;
    let stranger = app.register_agent("mallory@example.test", "mallory laptop").await;
    // A second device of the recipient, signed out from the first.
    let revoked = app.register_agent("alice@example.test", "alice old phone").await;
    let response = app
        .api
        .delete(&format!("/api/v1/devices/{}", revoked.tokens.device_id), Some(recipient.token()))
        .await
        .expect("revoke");
    assert_eq!(response.status, 204, "{}", response.text());
    let stored = app
        .store_message(&sender, &["alice@example.test"], sample_mime("Matrix", "secret", b"x"))
        .await;
    World { app, sender, recipient, stranger, revoked, message_id: stored.message_id }
}

impl World {
    fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::Anonymous => None,
            Caller::WrongUser => Some(self.stranger.token().to_owned()),
            Caller::Recipient | Caller::ExpiredToken => Some(self.recipient.token().to_owned()),
            Caller::Sender => Some(self.sender.token().to_owned()),
            Caller::RevokedDevice => Some(self.revoked.token().to_owned()),
        }
    }
}

/// (status, error code) expected for a caller on an endpoint the sender and
/// (when `recipient_allowed`) the recipient may use.
fn expected(caller: Caller, recipient_allowed: bool) -> (u16, Option<ErrorCode>) {
    match caller {
        Caller::Anonymous => (401, Some(ErrorCode::Unauthenticated)),
        Caller::WrongUser => (404, Some(ErrorCode::NotFound)),
        Caller::Recipient if recipient_allowed => (200, None),
        Caller::Recipient => (404, Some(ErrorCode::NotFound)),
        Caller::Sender => (200, None),
        Caller::RevokedDevice => (401, Some(ErrorCode::DeviceRevoked)),
        Caller::ExpiredToken => (401, Some(ErrorCode::TokenExpired)),
    }
}

const CALLERS_BEFORE_EXPIRY: [Caller; 5] = [
    Caller::Anonymous,
    Caller::WrongUser,
    Caller::Recipient,
    Caller::Sender,
    Caller::RevokedDevice,
];

#[tokio::test]
async fn every_message_endpoint_answers_each_caller_as_specified() {
    let world = world().await;
    let id = world.message_id.clone();
    let endpoints = [
        (format!("/api/v1/messages/{id}"), true),
        (format!("/api/v1/messages/{id}/content"), true),
        (format!("/api/v1/messages/{id}/retrievals"), false),
    ];
    let mut table = Vec::new();
    let check = |table: &mut Vec<String>,
                 path: &str,
                 caller: Caller,
                 allowed: bool,
                 status: u16,
                 code: Option<ErrorCode>| {
        let (want_status, want_code) = expected(caller, allowed);
        if status != want_status || code != want_code {
            table.push(format!(
                "{path} as {caller:?}: got {status} {code:?}, want {want_status} {want_code:?}"
            ));
        }
    };
    for caller in CALLERS_BEFORE_EXPIRY {
        for (path, allowed) in &endpoints {
            let response =
                world.app.api.get(path, world.token(caller).as_deref()).await.expect("request");
            check(&mut table, path, caller, *allowed, response.status, response.error_code());
        }
        let upload = world
            .app
            .api
            .upload(
                world.token(caller).as_deref().unwrap_or("spa_none"),
                &["alice@example.test"],
                sample_mime("u", "b", b""),
            )
            .await
            .expect("upload");
        let want_upload = match caller {
            Caller::Anonymous => (401, Some(ErrorCode::Unauthenticated)),
            Caller::RevokedDevice => (401, Some(ErrorCode::DeviceRevoked)),
            _ => (201, None),
        };
        if (upload.status, upload.error_code()) != want_upload {
            table.push(format!(
                "upload as {caller:?}: got {} {:?}, want {want_upload:?}",
                upload.status,
                upload.error_code()
            ));
        }
    }

    // Past the access token's lifetime every valid token has expired.
    world.app.clock.advance(Duration::from_secs(2 * 3600));
    for (path, allowed) in &endpoints {
        let response = world
            .app
            .api
            .get(path, world.token(Caller::ExpiredToken).as_deref())
            .await
            .expect("request");
        check(
            &mut table,
            path,
            Caller::ExpiredToken,
            *allowed,
            response.status,
            response.error_code(),
        );
    }
    let upload = world
        .app
        .api
        .upload(world.recipient.token(), &["x@example.test"], sample_mime("u", "b", b""))
        .await
        .expect("upload");
    if (upload.status, upload.error_code()) != (401, Some(ErrorCode::TokenExpired)) {
        table.push(format!(
            "upload with expired token: got {} {:?}",
            upload.status,
            upload.error_code()
        ));
    }
    assert!(table.is_empty(), "authorization matrix mismatches:\n{}", table.join("\n"));
}

const REFUSED_CALLERS: [(Caller, ErrorCode); 2] = [
    (Caller::Anonymous, ErrorCode::Unauthenticated),
    (Caller::RevokedDevice, ErrorCode::DeviceRevoked),
];

#[tokio::test]
async fn unknown_and_malformed_message_ids_look_the_same_as_hidden_ones() {
    let world = world().await;
    for id in
        ["00000000000000000000000000", "not-an-id", "%2e%2e", &world.message_id.to_uppercase()]
    {
        for suffix in ["", "/content", "/retrievals"] {
            let response = world
                .app
                .api
                .get(&format!("/api/v1/messages/{id}{suffix}"), Some(world.sender.token()))
                .await
                .expect("request");
            assert_eq!(response.status, 404, "{id}{suffix}: {}", response.text());
            assert_eq!(response.error_code(), Some(ErrorCode::NotFound));
            // A refused caller is told so before anything about the id
            // (`%2e%2e` reaches no message route at all).
            let refused_callers = if id == "%2e%2e" { &[][..] } else { &REFUSED_CALLERS[..] };
            for &(caller, code) in refused_callers {
                let path = format!("/api/v1/messages/{id}{suffix}");
                let response = world
                    .app
                    .api
                    .get(&path, world.token(caller).as_deref())
                    .await
                    .expect("request");
                assert_eq!(response.status, 401, "{path} as {caller:?}: {}", response.text());
                assert_eq!(response.error_code(), Some(code), "{path} as {caller:?}");
            }
        }
    }
}

#[tokio::test]
async fn an_expired_access_token_is_renewed_with_the_refresh_token() {
    let world = world().await;
    world.app.clock.advance(Duration::from_secs(2 * 3600));
    let refreshed = world
        .app
        .api
        .post_json(
            "/api/v1/devices/refresh",
            &sealpost_proto::api::RefreshTokens {
                refresh_token: world.recipient.tokens.refresh_token.clone(),
            },
            None,
        )
        .await
        .expect("refresh");
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let tokens: sealpost_proto::api::DeviceTokens = refreshed.json();
    assert_eq!(tokens.device_id, world.recipient.tokens.device_id, "same device");
    let content = world.app.content(Some(&tokens.access_token), &world.message_id).await;
    assert_eq!(content.status, 200);
    let old = world.app.content(Some(world.recipient.token()), &world.message_id).await;
    assert_eq!(
        old.error_code(),
        Some(ErrorCode::Unauthenticated),
        "the old access token was replaced"
    );
}
