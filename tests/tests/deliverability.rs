//! Deliverability of notifications, judged by independent tools:
//! - a DKIM signature that Python's dkimpy (Debian package python3-dkim)
//!   accepts with the public key the server says to publish, and that breaks
//!   when a signed header changes;
//! - a SpamAssassin score (local rules, no network tests) of at most 1.0.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use sealpost_harness::{TestApp, sample_mime};
use sealpost_proto::notification::parse;

/// dkimpy's verdict on `email`, looking the key up in `record` instead of DNS.
fn dkimpy_verifies(email: &[u8], record: &str) -> bool {
    let script = "import sys, dkim\n\
                  record = sys.argv[1].encode()\n\
                  ok = dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: record)\n\
                  sys.exit(0 if ok else 1)\n";
    // Debian's interpreter, where python3-dkim is installed (not a pyenv shim).
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script, record])
        .stdin(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs (cargo xtask test installs python3-dkim)");
    child.stdin.take().expect("stdin").write_all(email).expect("write the email");
    child.wait().expect("dkimpy finishes").success()
}

fn rsa_key(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("dkim.pem");
    let status = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl genpkey failed");
    path
}

/// A server signing with a fresh RSA key, and one notification it sent to alice.
async fn signed_notification() -> (TestApp, tempfile::TempDir, Vec<u8>) {
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = rsa_key(keys.path());
    let app = TestApp::spawn_with(|s| {
        s.outbox.worker = false;
        s.dkim.domain = Some("example.test".into());
        s.dkim.selector = Some("sealpost1".into());
        s.dkim.private_key_file = Some(key_file.clone());
    })
    .await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let mime = sample_mime("Lab results", "Your results are attached.", b"%PDF-1.4");
    app.api
        .upload_with(sender.token(), &["alice@example.test"], mime, true)
        .await
        .expect("upload")
        .expect_status(201)
        .expect("stored");
    assert_eq!(app.outbox.step().await.expect("step").sent, 1);
    let mail = app
        .mail
        .wait_for("alice@example.test", Duration::from_secs(5), |m| parse(&m.data).is_ok())
        .await
        .expect("notification sent");
    (app, keys, mail.data)
}

#[tokio::test]
async fn notifications_are_dkim_signed_and_an_independent_verifier_agrees() {
    let (app, _keys, email) = signed_notification().await;
    let (name, record) = app.dkim_record.clone().expect("DKIM is configured");
    assert_eq!(name, "sealpost1._domainkey.example.test");
    assert!(record.starts_with("v=DKIM1; k=rsa; p="));

    let text = String::from_utf8_lossy(&email);
    assert!(text.starts_with(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=sealpost1;"
    ));
    assert!(text.contains("x-sealpost-signature"), "the Sealpost fields are signed too");
    assert!(dkimpy_verifies(&email, &record), "dkimpy rejects the signature:\n{text}");

    let tampered = text.replacen("Subject: Lab results", "Subject: Lab results!", 1);
    assert!(!dkimpy_verifies(tampered.as_bytes(), &record), "a changed subject must fail");
}

#[tokio::test]
async fn a_missing_dkim_key_stops_the_server_with_the_key_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = sealpost_server::settings::Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().expect("address");
    settings.server.data_dir = dir.path().join("data");
    settings.dkim.domain = Some("example.test".into());
    settings.dkim.selector = Some("s".into());
    settings.dkim.private_key_file = Some(dir.path().join("missing.pem"));
    let error = sealpost_server::Application::build(settings).await.err().expect("refused");
    assert!(error.to_string().contains("dkim.private_key_file"), "{error}");
}

/// The score SpamAssassin gives `email` with its local rules only.
fn spamassassin_score(email: &[u8]) -> (f64, String) {
    let mut child = Command::new("spamassassin")
        .args(["-L", "-t", "-x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spamassassin runs (cargo xtask test installs it)");
    child.stdin.take().expect("stdin").write_all(email).expect("write the email");
    let output = child.wait_with_output().expect("spamassassin finishes");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let score = report
        .lines()
        .find_map(|line| line.strip_prefix("X-Spam-Status: "))
        .and_then(|status| status.split("score=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no score in SpamAssassin's report:\n{report}"));
    let details = report.split("Content analysis details").nth(1).unwrap_or_default().to_owned();
    (score, details)
}

#[tokio::test]
async fn the_default_notification_scores_low_with_spamassassin() {
    let (_app, _keys, email) = signed_notification().await;
    let (score, details) = spamassassin_score(&email);
    println!("SpamAssassin score of the default notification: {score}\n{details}");
    assert!(score <= 1.0, "score {score} above 1.0:{details}");
}
