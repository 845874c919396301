//! The real `sealpost-server` binary on embedded defaults: it creates its
//! certificate, signing key and database on first start, keeps them across
//! restarts, refuses bad configuration naming the key, and stops on SIGTERM.

use std::time::Duration;

use sealpost_harness::{ApiClient, ServerProcess};

/// Embedded defaults except the port, which must be free: the environment
/// override is itself under test here.
fn port_zero() -> Vec<(&'static str, String)> {
    vec![("SEALPOST_SERVER__LISTEN", "127.0.0.1:0".into())]
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_creates_its_state_and_a_restart_keeps_it() {
    sealpost_server::install_crypto_provider();
    let binary = ServerProcess::binary().expect("server binary");
    let dir = tempfile::tempdir().expect("temp dir");

    let server =
        ServerProcess::start(&binary, dir.path(), &[], &port_zero()).expect("server starts");
    let data = dir.path().join("sealpost-data");
    // The signing key is in the database, which every instance shares.
    for file in ["tls/cert.pem", "tls/key.pem", "sealpost.db"] {
        assert!(data.join(file).is_file(), "{file} was not created; banner: {:#?}", server.banner);
    }
    assert!(server.origin.starts_with("https://localhost:"), "{}", server.origin);
    assert!(
        server.banner.iter().any(|l| l.contains("mail-pickup")),
        "the banner says where mail goes: {:#?}",
        server.banner
    );
    let key_mode = std::fs::metadata(data.join("tls/key.pem")).expect("key").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o077,
        0,
        "private key readable by others"
    );

    let cert = std::fs::read(data.join("tls/cert.pem")).expect("certificate");
    let client = ApiClient::new(&server.base_url, &cert).expect("client");
    assert_eq!(client.get("/healthz", None).await.expect("healthz").status, 200);
    let keys = signing_keys(&client).await;
    let fingerprint = server.fingerprint.clone();

    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(15)))
        .await
        .expect("join")
        .expect("stops");
    assert!(status.success(), "SIGTERM ends the server cleanly: {status}");

    let again =
        ServerProcess::start(&binary, dir.path(), &[], &port_zero()).expect("server restarts");
    assert_eq!(again.fingerprint, fingerprint, "the certificate is kept");
    let client = ApiClient::new(&again.base_url, &cert).expect("client");
    assert_eq!(signing_keys(&client).await, keys, "the signing key is kept");
}

async fn signing_keys(client: &ApiClient) -> Vec<sealpost_proto::api::PublicSigningKey> {
    let doc: sealpost_proto::api::WellKnown =
        client.get("/.well-known/sealpost", None).await.expect("well-known").json();
    doc.signing_keys
}

#[test]
fn bad_configuration_is_refused_at_start_naming_the_key() {
    let binary = ServerProcess::binary().expect("server binary");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sealpost.toml");
    std::fs::write(&config, "[messages]\nmax_size = -3\n").expect("write");
    let output = std::process::Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_size"), "{stderr}");

    let output = std::process::Command::new(&binary)
        .arg("serve")
        .env("SEALPOST_SMTP__FROM_ADDRESS", "not an address")
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("smtp.from_address"));
    assert!(
        !dir.path().join("sealpost-data").exists(),
        "nothing is created when the configuration is refused"
    );
}
