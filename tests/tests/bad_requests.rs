//! Malformed and hostile requests get a 4xx with a JSON `{code, message}`
//! that says what was wrong: never a 500, never a panic.

use sealpost_harness::{ApiResponse, TestApp, sample_mime};
use sealpost_proto::api::{ErrorBody, ErrorCode};

fn assert_client_error(response: &ApiResponse, status: u16, code: ErrorCode, context: &str) {
    assert_eq!(response.status, status, "{context}: {}", response.text());
    let body: ErrorBody = response.json();
    assert_eq!(body.code, code, "{context}");
    assert!(!body.message.is_empty(), "{context}: empty message");
}

#[tokio::test]
async fn bad_json_bodies_are_explained() {
    let app = TestApp::spawn().await;
    let http = app.api.http();
    let post = |path: &str, content_type: &str, body: &'static str| {
        app.api.send(http.post(app.api.url(path)).header("content-type", content_type).body(body))
    };
    let cases: [(&str, &str, &'static str, u16, ErrorCode); 8] = [
        ("/api/v1/verification-codes", "application/json", "{", 400, ErrorCode::BadRequest),
        ("/api/v1/verification-codes", "application/json", "{}", 400, ErrorCode::BadRequest),
        (
            "/api/v1/verification-codes",
            "text/plain",
            "{\"email\":\"a@b.c\"}",
            415,
            ErrorCode::UnsupportedMediaType,
        ),
        (
            "/api/v1/verification-codes",
            "application/json",
            "{\"email\":\"not an address\"}",
            400,
            ErrorCode::InvalidEmail,
        ),
        (
            "/api/v1/verification-codes",
            "application/json",
            "{\"email\":\"a@b.c\\r\\nBcc: x@y.z\"}",
            400,
            ErrorCode::InvalidEmail,
        ),
        (
            "/api/v1/devices",
            "application/json",
            "{\"email\":\"a@b.c\",\"device_name\":\"x\",\"credential\":{\"token\":\"1\"}}",
            400,
            ErrorCode::BadRequest,
        ),
        (
            "/api/v1/devices",
            "application/json",
            "{\"email\":\"a@b.c\",\"device_name\":\"\",\"credential\":{\"code\":\"1\"}}",
            400,
            ErrorCode::BadRequest,
        ),
        (
            "/api/v1/accounts",
            "application/json",
            "{\"email\":\"a@b.c\",\"code\":\"1\",\"password\":\"short\"}",
            400,
            ErrorCode::WeakPassword,
        ),
    ];
    for (path, content_type, body, status, code) in cases {
        let response = post(path, content_type, body).await.expect("request");
        assert_client_error(&response, status, code, &format!("POST {path} {body}"));
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_json() {
    let app = TestApp::spawn().await;
    let response = app.api.get("/no/such/path", None).await.expect("request");
    assert_client_error(&response, 404, ErrorCode::NotFound, "unknown path");
    let response =
        app.api.send(app.api.http().put(app.api.url("/api/v1/messages"))).await.expect("request");
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn malformed_uploads_are_refused_and_leave_nothing_behind() {
    let app = TestApp::spawn_with(|s| s.messages.max_size = 64 * 1024).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let token = sender.token();
    let http = app.api.http();
    let url = app.api.url("/api/v1/messages");
    let form = |parts: Vec<(&'static str, Vec<u8>)>| {
        parts.into_iter().fold(reqwest::multipart::Form::new(), |form, (name, bytes)| {
            form.part(name, reqwest::multipart::Part::bytes(bytes))
        })
    };
    let send = |form: reqwest::multipart::Form| {
        app.api.send(http.post(&url).bearer_auth(token).multipart(form))
    };
    let metadata = |json: &str| json.as_bytes().to_vec();
    let mime = sample_mime("s", "b", b"a");

    let cases: Vec<(&str, reqwest::multipart::Form, u16, ErrorCode)> = vec![
        ("no metadata", form(vec![("content", mime.clone())]), 400, ErrorCode::BadRequest),
        (
            "no content",
            form(vec![("metadata", metadata(r#"{"recipients":["a@example.test"]}"#))]),
            400,
            ErrorCode::BadRequest,
        ),
        (
            "metadata not JSON",
            form(vec![("metadata", metadata("recipients")), ("content", mime.clone())]),
            400,
            ErrorCode::BadRequest,
        ),
        (
            "no recipients",
            form(vec![("metadata", metadata(r#"{"recipients":[]}"#)), ("content", mime.clone())]),
            400,
            ErrorCode::BadRequest,
        ),
        (
            "bad recipient",
            form(vec![
                ("metadata", metadata(r#"{"recipients":["nope"]}"#)),
                ("content", mime.clone()),
            ]),
            400,
            ErrorCode::InvalidEmail,
        ),
        (
            "empty content",
            form(vec![
                ("metadata", metadata(r#"{"recipients":["a@example.test"]}"#)),
                ("content", vec![]),
            ]),
            400,
            ErrorCode::BadRequest,
        ),
        (
            "unknown part",
            form(vec![
                ("metadata", metadata(r#"{"recipients":["a@example.test"]}"#)),
                ("extra", vec![1]),
            ]),
            400,
            ErrorCode::BadRequest,
        ),
        (
            "over the size limit",
            form(vec![
                ("metadata", metadata(r#"{"recipients":["a@example.test"]}"#)),
                ("content", vec![b'x'; 65 * 1024]),
            ]),
            413,
            ErrorCode::PayloadTooLarge,
        ),
        (
            "far over the size limit",
            form(vec![
                ("metadata", metadata(r#"{"recipients":["a@example.test"]}"#)),
                ("content", vec![b'x'; 3 * 1024 * 1024]),
            ]),
            413,
            ErrorCode::PayloadTooLarge,
        ),
    ];
    for (name, form, status, code) in cases {
        let response = send(form).await.expect("request");
        assert_client_error(&response, status, code, name);
    }
    let not_multipart =
        app.api.send(http.post(&url).bearer_auth(token).body(mime.clone())).await.expect("request");
    assert_client_error(&not_multipart, 415, ErrorCode::UnsupportedMediaType, "raw body");

    let leftovers: Vec<_> = walk(&app.data_dir.join("messages")).into_iter().collect();
    assert!(leftovers.is_empty(), "refused uploads left files: {leftovers:?}");

    let exactly_at_limit = vec![b'x'; 64 * 1024];
    let ok = send(form(vec![
        ("metadata", metadata(r#"{"recipients":["a@example.test"]}"#)),
        ("content", exactly_at_limit),
    ]))
    .await
    .expect("request");
    assert_eq!(ok.status, 201, "a message at the limit is accepted: {}", ok.text());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .flat_map(
            |entry| if entry.path().is_dir() { walk(&entry.path()) } else { vec![entry.path()] },
        )
        .collect()
}

#[tokio::test]
async fn bearer_headers_of_every_shape_are_refused_cleanly() {
    let app = TestApp::spawn().await;
    for header in [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer spa_",
        "Bearer spa_\u{0}",
        "bearer spa_x",
        "Bearer spr_abc",
    ] {
        let response = app
            .api
            .send(
                app.api.http().get(app.api.url("/api/v1/devices")).header("authorization", header),
            )
            .await;
        let Ok(response) = response else { continue }; // the client refuses some header bytes itself
        assert_client_error(
            &response,
            401,
            ErrorCode::Unauthenticated,
            &format!("Authorization: {header:?}"),
        );
        assert_eq!(response.headers["www-authenticate"], "Bearer");
    }
}
