//! The harness's headless Chromium against the real server: it trusts the
//! test server's self-signed certificate by its key alone (a server with
//! another certificate is refused), shows and screenshots its pages, saves
//! downloads, and resizes to a phone's screen.

use std::time::Duration;

use sealpost_harness::{Browser, TestApp};

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_is_trusted_by_its_pinned_key_and_its_pages_shown() {
    let app = TestApp::spawn().await;
    let artifacts = tempfile::tempdir().expect("temp dir");
    let browser = Browser::launch(&app.cert_pem, artifacts.path()).await.expect("browser");

    let health = format!("{}/healthz", app.base_url);
    browser.goto(&health).await.expect("open /healthz");
    browser.wait_for_text("body", r#""status":"ok""#).await.expect("health shown");
    let text = browser.page_text().await.expect("page text");
    assert!(
        text.contains(&format!(r#""version":"{}""#, env!("CARGO_PKG_VERSION"))),
        "the page shows: {text}"
    );
    assert_eq!(browser.current_url().await.expect("address"), health);

    let screenshot = browser.screenshot("healthz").await.expect("screenshot");
    assert_eq!(screenshot, artifacts.path().join("healthz.png"));
    let png = std::fs::read(&screenshot).expect("read screenshot");
    assert!(png.starts_with(PNG_SIGNATURE), "not a PNG: {:?}", &png[..png.len().min(16)]);

    browser.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_self_signed_certificate_is_refused() {
    let app = TestApp::spawn().await;
    let unrelated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("certificate");
    let artifacts = tempfile::tempdir().expect("temp dir");
    let browser =
        Browser::launch(unrelated.cert.pem().as_bytes(), artifacts.path()).await.expect("browser");

    // Chromium shows its certificate warning instead; whether navigating
    // counts as an error is ChromeDriver's business.
    let _ = browser.goto(&format!("{}/healthz", app.base_url)).await;
    let text = browser.page_text().await.expect("page text");
    assert!(!text.contains("status"), "the untrusted server's page was shown: {text}");
    assert!(text.contains("ERR_CERT_AUTHORITY_INVALID"), "no certificate warning: {text}");

    browser.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_saved_and_the_window_resized_to_a_phone() {
    let app = TestApp::spawn().await;
    let artifacts = tempfile::tempdir().expect("temp dir");
    let browser = Browser::launch(&app.cert_pem, artifacts.path()).await.expect("browser");
    browser.goto(&format!("{}/healthz", app.base_url)).await.expect("open /healthz");

    // A link that saves the server's answer instead of showing it.
    browser
        .execute(
            "const link = document.createElement('a');
             link.href = '/healthz';
             link.download = arguments[0];
             link.id = 'save';
             link.textContent = 'Save';
             document.body.append(link);",
            vec!["health.json".into()],
        )
        .await
        .expect("add the link");
    browser.click("#save").await.expect("click the link");
    let saved = browser.downloaded("health.json", Duration::from_secs(30)).await.expect("download");
    let health: serde_json::Value = serde_json::from_slice(&saved).expect("JSON");
    assert_eq!(health["status"], "ok");

    browser.set_window_size(390, 844).await.expect("resize");
    let width = browser.execute("return window.innerWidth;", Vec::new()).await.expect("width");
    assert_eq!(width, 390);

    browser.close().await.expect("close");
}
