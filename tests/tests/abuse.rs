//! Abuse against the real server: every rate limit holds exactly at its
//! configured value, counts per address (another address goes on
//! working), says when to come back, and opens again when its window is
//! over (the server's clock moved forward); inbound SMTP is limited per
//! envelope sender and per recipient address the same way.

use std::time::Duration;

use sealpost_harness::{ApiResponse, PageClient, TestApp, bounce_report, sample_mime};
use sealpost_proto::api::{DeviceCredential, ErrorBody, ErrorCode};
use sealpost_proto::notification::parse;
use sealpost_relay::SendError;

const PASSWORD: &str = "correct horse battery staple";

/// The answer is a 429 that says, in its header and its message, to come
/// back within `window`.
fn assert_limited(response: &ApiResponse, window: Duration) {
    assert_eq!(
        (response.status, response.error_code()),
        (429, Some(ErrorCode::RateLimited)),
        "{}",
        response.text()
    );
    let retry_after: u64 = response.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=window.as_secs()).contains(&retry_after), "Retry-After {retry_after}");
    let body: ErrorBody = response.json();
    assert!(
        body.message.contains(&format!("Try again in {retry_after} seconds")),
        "{}",
        body.message
    );
}

async fn sign_in_api(app: &TestApp, email: &str, password: &str) -> ApiResponse {
    app.enroll(email, "laptop", DeviceCredential::Password(password.into())).await
}

/// A Secure Message Center sign-in from a fresh browser: its status.
async fn sign_in_webmail(app: &TestApp, email: &str, password: &str) -> sealpost_harness::Page {
    let browser = PageClient::new(&app.base_url, &app.cert_pem).expect("browser");
    browser.get("/signin").await.expect("sign-in page");
    let csrf = browser.csrf();
    browser
        .post("/signin", &[("csrf", &csrf), ("email", email), ("password", password)])
        .await
        .expect("sign in")
}

const HOUR: Duration = Duration::from_secs(3600);
const QUARTER: Duration = Duration::from_secs(15 * 60);

#[tokio::test]
async fn code_requests_stop_at_the_limit_per_address_and_per_client_until_the_hour_is_over() {
    let app = TestApp::spawn_with(|s| {
        s.limits.code_requests_per_address_per_hour = 3;
        s.limits.code_requests_per_ip_per_hour = 6;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.request_code("alice@example.test").await.status, 202);
    }
    assert_limited(&app.request_code("alice@example.test").await, HOUR);
    let mailed = |messages: &[sealpost_harness::CapturedMail], to: &str| {
        messages.iter().filter(|m| m.rcpt_to.iter().any(|r| r == to)).count()
    };
    // Each accepted request sent its email; the refused one none.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mailed(&app.mail.messages().await, "alice@example.test") < 3 {
        assert!(tokio::time::Instant::now() < deadline, "three codes reach alice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.request_code("bob@example.test").await.status, 202, "another address");
    // The client has asked six times now (the refused one counts too).
    assert_eq!(app.request_code("carol@example.test").await.status, 202);
    assert_limited(&app.request_code("dave@example.test").await, HOUR);
    assert_eq!(mailed(&app.mail.messages().await, "alice@example.test"), 3);
    assert_eq!(mailed(&app.mail.messages().await, "dave@example.test"), 0);

    app.clock.advance(HOUR);
    assert_eq!(app.request_code("alice@example.test").await.status, 202, "a new hour");
    assert_eq!(app.request_code("dave@example.test").await.status, 202, "a new hour");
}

#[tokio::test]
async fn failed_password_sign_ins_stop_at_the_limit_on_the_api_and_in_webmail_alike() {
    let app = TestApp::spawn_with(|s| {
        s.limits.failed_logins_per_address_per_15_minutes = 3;
        s.limits.failed_logins_per_ip_per_15_minutes = 6;
    })
    .await;
    for (email, name) in [
        ("alice@example.test", "Alice"),
        ("bob@example.test", "Bob"),
        ("carol@example.test", "Carol"),
    ] {
        app.create_password_account(email, name, PASSWORD).await;
    }
    for _ in 0..3 {
        let wrong = sign_in_api(&app, "alice@example.test", "wrong password").await;
        assert_eq!(wrong.error_code(), Some(ErrorCode::InvalidCredentials), "{}", wrong.text());
    }
    // Even the right password waits now, on the API and in webmail.
    assert_limited(&sign_in_api(&app, "alice@example.test", PASSWORD).await, QUARTER);
    let webmail = sign_in_webmail(&app, "alice@example.test", PASSWORD).await;
    assert_eq!(webmail.status, 429, "{}", webmail.body);
    let retry_after: u64 = webmail.header("retry-after").expect("Retry-After").parse().expect("s");
    assert!((1..=QUARTER.as_secs()).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(sign_in_webmail(&app, "bob@example.test", PASSWORD).await.status, 303);

    // Webmail failures count against the same address as the API's.
    for _ in 0..3 {
        let wrong = sign_in_webmail(&app, "bob@example.test", "wrong password").await;
        assert_eq!(wrong.status, 401, "{}", wrong.body);
    }
    assert_limited(&sign_in_api(&app, "bob@example.test", PASSWORD).await, QUARTER);
    // Six failures from this client: every address waits, carol's too.
    assert_limited(&sign_in_api(&app, "carol@example.test", PASSWORD).await, QUARTER);

    app.clock.advance(QUARTER);
    for email in ["alice@example.test", "bob@example.test", "carol@example.test"] {
        let signed_in = sign_in_api(&app, email, PASSWORD).await;
        assert_eq!(signed_in.status, 201, "{email} after the window: {}", signed_in.text());
    }
}

#[tokio::test]
async fn wrong_code_guesses_stop_at_the_limit_and_kill_the_code() {
    let app = TestApp::spawn_with(|s| {
        s.accounts.code_max_attempts = 3;
        s.limits.failed_logins_per_address_per_15_minutes = 5;
    })
    .await;
    let enroll = |email: &'static str, code: String| {
        let app = &app;
        async move { app.enroll(email, "laptop", DeviceCredential::Code(code)).await }
    };
    let wrong_for = |code: &str| if code == "000000" { "111111" } else { "000000" }.to_owned();
    let code = app.code_for("alice@example.test").await;
    for _ in 0..3 {
        let guess = enroll("alice@example.test", wrong_for(&code)).await;
        assert_eq!(guess.error_code(), Some(ErrorCode::InvalidCode), "{}", guess.text());
    }
    let dead = enroll("alice@example.test", code).await;
    assert_eq!(dead.error_code(), Some(ErrorCode::InvalidCode), "the code died at 3 wrong guesses");

    // Four failures so far (the dead code's use is one); one more fills the window.
    let fresh = app.code_for("alice@example.test").await;
    let guess = enroll("alice@example.test", wrong_for(&fresh)).await;
    assert_eq!(guess.error_code(), Some(ErrorCode::InvalidCode));
    assert_limited(&enroll("alice@example.test", fresh).await, QUARTER);
    let bob = app.code_for("bob@example.test").await;
    assert_eq!(enroll("bob@example.test", bob).await.status, 201, "another address");

    app.clock.advance(QUARTER);
    let after = app.code_for("alice@example.test").await;
    let enrolled = enroll("alice@example.test", after).await;
    assert_eq!(enrolled.status, 201, "after the window: {}", enrolled.text());
}

#[tokio::test]
async fn inbound_mail_stops_at_the_limit_per_sender_and_per_address_until_the_hour_is_over() {
    let app = TestApp::spawn_with(|s| {
        s.outbox.worker = false;
        s.inbound.listen = Some("127.0.0.1:0".parse().expect("address"));
        s.limits.inbound_messages_per_sender_per_hour = 3;
        s.limits.inbound_messages_per_address_per_hour = 2;
    })
    .await;
    // Four notifications: four bounce addresses the listener takes mail for.
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let recipients =
        ["a@patients.example", "b@patients.example", "c@patients.example", "d@patients.example"];
    app.store_and_notify(sender.token(), &recipients, sample_mime("Results", "b", b"")).await;
    assert_eq!(app.outbox.step().await.expect("step").sent, 4);
    let mut verp = Vec::new();
    for recipient in &recipients {
        let mail = app
            .mail
            .wait_for(recipient, Duration::from_secs(5), |m| parse(&m.data).is_ok())
            .await
            .expect("notified");
        verp.push(mail.mail_from);
    }
    let deliver = |from: &'static str, to: usize| {
        let (app, to) = (&app, verp[to].clone());
        async move { app.deliver_inbound(from, &[&to], bounce_report(&to).as_bytes()).await }
    };
    let deferred = |outcome: Result<String, SendError>, what: &str| match outcome {
        Err(SendError::Temporary(reason)) => {
            assert!(reason.contains(what) && reason.contains("try again in"), "{reason}");
            let seconds: u64 = reason
                .split("try again in ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no wait in {reason}"));
            assert!((1..=HOUR.as_secs()).contains(&seconds), "{reason}");
        }
        other => panic!("expected a deferral naming {what}, got {other:?}"),
    };

    // Per address: two messages to the first bounce address, whoever sends them.
    deliver("mta@one.example", 0).await.expect("first");
    deliver("mta@two.example", 0).await.expect("second");
    deferred(deliver("mta@three.example", 0).await, "is receiving too much mail");
    deliver("mta@three.example", 1).await.expect("another address");

    // Per sender: three messages from one sender, to any addresses.
    deliver("mta@four.example", 2).await.expect("first");
    deliver("mta@four.example", 2).await.expect("second");
    deliver("mta@four.example", 3).await.expect("third");
    deferred(deliver("mta@four.example", 3).await, "Too much mail from <mta@four.example>");
    deliver("mta@five.example", 3).await.expect("another sender");

    app.clock.advance(HOUR);
    deliver("mta@four.example", 0).await.expect("a new hour, for the sender and the address");
}

/// How a slow connection ended: how long after it was opened the server
/// closed it, and what the server said before.
struct Ended {
    after: Duration,
    said: String,
}

/// Writes `payload` a byte every `every` (nothing when empty) and reads
/// whatever comes, until the server closes the connection; `None` when it
/// is still open after `give_up`.
async fn trickle<S>(
    mut stream: S,
    payload: &[u8],
    every: Duration,
    give_up: Duration,
) -> Option<Ended>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let opened = tokio::time::Instant::now();
    let mut said = Vec::new();
    let mut unsent = payload.iter();
    let mut buffer = [0u8; 4096];
    while opened.elapsed() < give_up {
        match tokio::time::timeout(every, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => {
                let said = String::from_utf8_lossy(&said).into_owned();
                return Some(Ended { after: opened.elapsed(), said });
            }
            Ok(Ok(read)) => said.extend_from_slice(&buffer[..read]),
            Err(_) => {
                if let Some(byte) = unsent.next()
                    && stream.write_all(&[*byte]).await.is_err()
                {
                    let said = String::from_utf8_lossy(&said).into_owned();
                    return Some(Ended { after: opened.elapsed(), said });
                }
            }
        }
    }
    None
}

async fn tls_connect(
    address: std::net::SocketAddr,
    cert_pem: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = sealpost_agent::tls::client_config(Some(cert_pem)).expect("TLS client");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_while_real_ones_are_served() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    // The TLS handshake's own limit is fixed at ten seconds.
    const HANDSHAKE: Duration = sealpost_server::connections::TLS_HANDSHAKE_TIMEOUT;
    // Room for a loaded machine between a timeout and the close seen here.
    const SLACK: Duration = Duration::from_secs(6);
    let app = TestApp::spawn_with(|s| {
        s.outbox.worker = false;
        s.inbound.listen = Some("127.0.0.1:0".parse().expect("address"));
        s.inbound.timeout_seconds = TIMEOUT.as_secs();
        s.server.request_header_timeout_seconds = TIMEOUT.as_secs();
        s.server.request_body_timeout_seconds = TIMEOUT.as_secs();
    })
    .await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    app.store_and_notify(sender.token(), &["a@patients.example"], sample_mime("s", "b", b"")).await;
    assert_eq!(app.outbox.step().await.expect("step").sent, 1);
    let verp = app
        .mail
        .wait_for("a@patients.example", Duration::from_secs(5), |m| parse(&m.data).is_ok())
        .await
        .expect("notified")
        .mail_from;
    let https: std::net::SocketAddr =
        app.base_url.trim_start_matches("https://").parse().expect("address");
    let smtp = app.inbound_addr.expect("SMTP listener");

    let slow_header =
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let slow_body = format!(
        "POST /api/v1/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n",
        sender.token()
    );
    let give_up = HANDSHAKE + SLACK + Duration::from_secs(10);
    let mut slow = tokio::task::JoinSet::new();
    // Never start the TLS handshake.
    for _ in 0..100 {
        let tcp = tokio::net::TcpStream::connect(https).await.expect("connect");
        slow.spawn(async move {
            ("stalled handshake", HANDSHAKE, trickle(tcp, b"", TIMEOUT, give_up).await)
        });
    }
    // Headers a byte at a time, well within the idle time between bytes.
    for _ in 0..100 {
        let tls = tls_connect(https, &app.cert_pem).await;
        slow.spawn(async move {
            let ended = trickle(tls, slow_header, Duration::from_millis(300), give_up).await;
            ("headers a byte at a time", TIMEOUT, ended)
        });
    }
    // A first request at once, the next one's headers a byte at a time.
    for _ in 0..20 {
        let mut tls = tls_connect(https, &app.cert_pem).await;
        tokio::io::AsyncWriteExt::write_all(
            &mut tls,
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await
        .expect("first request");
        slow.spawn(async move {
            let ended = trickle(tls, slow_header, Duration::from_millis(300), give_up).await;
            ("second request's headers a byte at a time", TIMEOUT, ended)
        });
    }
    // An upload whose body stops after its headers, a byte now and then.
    for _ in 0..50 {
        let tls = tls_connect(https, &app.cert_pem).await;
        let mut request = slow_body.clone().into_bytes();
        request.extend_from_slice(b"--b\r\n");
        slow.spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut tls = tls;
            let head = request.len() - 5;
            tls.write_all(&request[..head]).await.expect("request head");
            let ended = trickle(tls, &request[head..], TIMEOUT + TIMEOUT, give_up).await;
            ("a body that stalls", TIMEOUT, ended)
        });
    }
    // SMTP clients that never say anything, or a command a byte at a time.
    for index in 0..120 {
        let tcp = tokio::net::TcpStream::connect(smtp).await.expect("connect");
        let (what, payload): (&str, &[u8]) = if index < 100 {
            ("silent SMTP client", b"")
        } else {
            ("SMTP command a byte at a time", b"EHLO slow.example\r\n")
        };
        slow.spawn(async move {
            let ended = trickle(tcp, payload, Duration::from_millis(300), give_up).await;
            (what, TIMEOUT, ended)
        });
    }

    // Meanwhile, real clients are served at once.
    let promptly = Duration::from_secs(10);
    let health = tokio::time::timeout(promptly, app.api.get("/healthz", None)).await;
    assert_eq!(health.expect("health in time").expect("health").status, 200);
    let upload =
        app.api.upload(sender.token(), &["b@patients.example"], sample_mime("u", "b", b""));
    let upload = tokio::time::timeout(promptly, upload).await.expect("upload in time");
    assert_eq!(upload.expect("upload").status, 201);
    let bounce = bounce_report(&verp);
    let to = [verp.as_str()];
    let delivered = app.deliver_inbound("", &to, bounce.as_bytes());
    let delivered = tokio::time::timeout(promptly, delivered).await.expect("SMTP in time");
    assert!(delivered.expect("bounce taken").starts_with("250"));

    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    while let Some(joined) = slow.join_next().await {
        let (what, timeout, ended) = joined.expect("slow client task");
        let ended = ended.unwrap_or_else(|| panic!("a {what} connection was never closed"));
        assert!(
            ended.after <= timeout + SLACK,
            "a {what} connection was closed only after {:?}",
            ended.after
        );
        if what == "silent SMTP client" {
            assert!(ended.said.contains("421 4.4.2"), "{what}: {}", ended.said);
        }
        *counts.entry(what).or_default() += 1;
    }
    eprintln!("slow connections closed by the server: {counts:?}");
}

#[tokio::test]
async fn connections_over_the_cap_are_told_to_come_back_and_served_once_others_close() {
    const CAP: usize = 20;
    let app = TestApp::spawn_with(|s| s.server.max_connections = CAP).await;
    let https: std::net::SocketAddr =
        app.base_url.trim_start_matches("https://").parse().expect("address");
    // A fresh client per request: a pooled connection would hold a place.
    let health = || async {
        let client =
            sealpost_harness::ApiClient::new(&app.base_url, &app.cert_pem).expect("client");
        client.get("/healthz", None).await
    };
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(tokio::net::TcpStream::connect(https).await.expect("connect"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        match health().await {
            Ok(answer) if answer.status == 503 => break answer,
            other => assert!(tokio::time::Instant::now() < deadline, "never refused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.error_code(), Some(ErrorCode::Unavailable), "{}", refused.text());
    assert_eq!(refused.headers["retry-after"], "5");
    let body: ErrorBody = refused.json();
    assert!(body.message.contains("Try again in 5 seconds"), "{}", body.message);

    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match health().await {
            Ok(answer) if answer.status == 200 => break,
            other => assert!(tokio::time::Instant::now() < deadline, "still refused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
