//! Health, discovery, metrics, the OpenAPI document and request ids.

use sealpost_harness::TestApp;
use sealpost_proto::api::{API_VERSION, Health};
use sealpost_proto::notification::TrustedServer;

#[tokio::test]
async fn health_and_well_known_describe_the_server() {
    let app = TestApp::spawn().await;
    let health = app.api.get("/healthz", None).await.expect("request");
    assert_eq!(health.status, 200);
    assert_eq!(health.json::<Health>().status, "ok");

    let doc = app.well_known().await;
    assert_eq!(doc.api_version, API_VERSION);
    assert_eq!(doc.origin, app.origin);
    assert_eq!(doc.signing_keys.len(), 1);
    assert!(doc.signing_keys[0].active);
    assert_eq!(doc.signing_keys[0].algorithm, "ed25519");
    TrustedServer::from_well_known(&doc).expect("the published keys are usable");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let first = app.api.get("/healthz", None).await.expect("request");
    let second = app.api.get("/no/such/path", None).await.expect("request");
    let id = |r: &sealpost_harness::ApiResponse| {
        r.headers["x-request-id"].to_str().expect("ascii").to_owned()
    };
    assert!(!id(&first).is_empty());
    assert_ne!(id(&first), id(&second));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_stored_messages() {
    let app = TestApp::spawn().await;
    let user = app.register_agent("alice@example.test", "laptop").await;
    app.store_message(&user, &["alice@example.test"], sealpost_harness::sample_mime("m", "b", b""))
        .await;
    let missing = app
        .api
        .get("/api/v1/messages/00000000000000000000000000", Some(user.token()))
        .await
        .expect("request");
    assert_eq!(missing.status, 404);
    let metrics = app.api.get("/metrics", None).await.expect("request");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(text.contains("sealpost_messages_stored_total 1"), "{text}");
    assert!(
        text.contains(r#"route="/api/v1/messages/{message_id}",status="404""#),
        "routes are patterns, not ids: {text}"
    );
    assert!(text.contains("sealpost_verification_emails_total 1"), "{text}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::spawn().await;
    let doc: serde_json::Value =
        app.api.get("/api/v1/openapi.json", None).await.expect("request").json();
    let paths = doc["paths"].as_object().expect("paths");
    let routes = [
        ("/healthz", "get"),
        ("/.well-known/sealpost", "get"),
        ("/metrics", "get"),
        ("/api/v1/verification-codes", "post"),
        ("/api/v1/accounts", "post"),
        ("/api/v1/devices", "post"),
        ("/api/v1/devices", "get"),
        ("/api/v1/devices/refresh", "post"),
        ("/api/v1/devices/{device_id}", "delete"),
        ("/api/v1/messages", "post"),
        ("/api/v1/messages/{message_id}", "get"),
        ("/api/v1/messages/{message_id}/content", "get"),
        ("/api/v1/messages/{message_id}/retrievals", "get"),
        ("/api/v1/messages/{message_id}/deliveries", "get"),
        ("/api/v1/admin/organization", "get"),
        ("/api/v1/admin/organization", "put"),
        ("/api/v1/admin/blocklists", "get"),
        ("/api/v1/admin/directory", "get"),
        ("/api/v1/admin/directory/import", "post"),
        ("/api/v1/admin/directory/{email}", "delete"),
        ("/api/v1/messages/{message_id}/recall", "post"),
        ("/api/v1/messages/{message_id}/notifications", "post"),
        ("/api/v1/recalls", "get"),
        ("/api/v1/masked-mail", "post"),
        ("/api/v1/masked-addresses/{address}", "delete"),
        ("/api/v1/admin/relay-log", "get"),
    ];
    for (path, method) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
        // Each documented route really exists: it does not fall through to the 404 fallback.
        if method == "get" && !path.contains('{') {
            let response = app.api.get(path, None).await.expect("request");
            assert!(
                response.status != 404 && response.status != 405,
                "{path} is documented but not routed"
            );
        }
    }
    let documented: usize = paths.values().map(|p| p.as_object().map_or(0, |m| m.len())).sum();
    assert_eq!(documented, routes.len(), "the document has routes this test does not know");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
