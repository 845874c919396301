//! `cargo xtask demo`: the Sealpost flow on loopback, on embedded defaults,
//! printing each step with its time.
//!
//! It runs the real `sealpost-server` binary in a fresh directory with no
//! configuration (only a free port instead of 8443). With no SMTP relay set,
//! the server writes its email to `<data>/mail-pickup/`, where the demo reads
//! the verification codes, as a desktop agent would read them from its inbox.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sealpost_harness::{ApiClient, ServerProcess, sample_mime};
use sealpost_proto::ContentDigest;
use sealpost_proto::api::{
    CodeRequest, DeviceCredential, DeviceTokens, EnrollDevice, RetrievalLog, StoredMessage,
    WellKnown,
};
use sealpost_proto::notification::{EmailEnvelope, TrustedServer, compose_email, parse};
use sealpost_proto::verification::find_code;

struct Steps {
    started: Instant,
    step: usize,
}

impl Steps {
    fn run<T>(&mut self, title: &str, outcome: anyhow::Result<(T, String)>) -> anyhow::Result<T> {
        self.step += 1;
        let elapsed = self.started.elapsed();
        match outcome {
            Ok((value, detail)) => {
                println!(
                    "{:>2}. {title:<46} {:>7.1} ms",
                    self.step,
                    elapsed.as_secs_f64() * 1000.0
                );
                for line in detail.lines().filter(|l| !l.is_empty()) {
                    println!("      {line}");
                }
                self.started = Instant::now();
                Ok(value)
            }
            Err(error) => Err(error.context(format!("step {}: {title}", self.step))),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sealpost_server::install_crypto_provider();
    println!(
        "Sealpost demo: server on embedded defaults, one secure message stored and retrieved\n"
    );
    let binary = ServerProcess::binary()?;
    let dir = tempfile::Builder::new().prefix("sealpost-demo-").tempdir()?;
    let mut steps = Steps { started: Instant::now(), step: 0 };

    let env =
        [("SEALPOST_SERVER__LISTEN", "127.0.0.1:0".to_owned()), ("RUST_LOG", "warn".to_owned())];
    let server = steps.run("start sealpost-server (no configuration)", {
        ServerProcess::start(&binary, dir.path(), &[], &env).map(|server| {
            let banner = server.banner.join("\n");
            (server, banner)
        })
    })?;
    let data = dir.path().join("sealpost-data");
    let cert =
        std::fs::read(data.join("tls/cert.pem")).context("reading the generated certificate")?;
    let api = ApiClient::new(&server.base_url, &cert)?;

    let well_known: WellKnown = steps.run(
        "discover /.well-known/sealpost",
        async {
            let doc: WellKnown =
                api.get("/.well-known/sealpost", None).await?.expect_status(200)?.json();
            let detail =
                format!("origin {}, signing key {}", doc.origin, doc.signing_keys[0].key_id);
            Ok((doc, detail))
        }
        .await,
    )?;

    let sender = steps.run(
        "register sender@demo.test (code by email)",
        register(&api, &data, &server.origin, "sender@demo.test", "demo sender").await,
    )?;
    let alice = steps.run(
        "register alice@demo.test (code by email)",
        register(&api, &data, &server.origin, "alice@demo.test", "demo recipient").await,
    )?;

    let attachment: Vec<u8> = (0..48_000u32).map(|i| (i % 251) as u8).collect();
    let mime = sample_mime(
        "Your lab results",
        "Dear Alice, your results are attached. Dr. Sender",
        &attachment,
    );
    let stored: StoredMessage = steps.run(
        "store a secure message for alice",
        async {
            let stored: StoredMessage = api
                .upload(&sender.access_token, &["alice@demo.test"], mime.clone())
                .await?
                .expect_status(201)?
                .json();
            let headers = stored.notifications[0]
                .headers
                .iter()
                .map(|h| format!("{}: {}", h.name, h.value))
                .collect::<Vec<_>>()
                .join("\n");
            let detail = format!(
                "message {} ({} bytes, sha256 {}…)\nsigned notification for alice:\n{headers}",
                stored.message_id,
                stored.size,
                &stored.content_sha256[..16]
            );
            Ok((stored, detail))
        }
        .await,
    )?;

    let notification = &stored.notifications[0];
    steps.run("verify alice's notification as an agent would", (|| {
        let email = compose_email(
            &EmailEnvelope {
                from: (Some("Dr. Sender".into()), "sender@demo.test".into()),
                to: vec![(Some("Alice".into()), "alice@demo.test".into())],
                cc: vec![],
                subject: "Your lab results".into(),
                date: time_now(),
                message_id: "<demo@demo.test>".into(),
                in_reply_to: None,
                references: vec![],
            },
            notification,
        );
        let trusted = TrustedServer::from_well_known(&well_known)?;
        let parsed = parse(&email)?;
        parsed.verify(&trusted, "alice@demo.test")?;
        let placeholder = notification.text_body.lines().take(3).collect::<Vec<_>>().join("\n");
        Ok(((), format!("signature valid, issued for alice@demo.test\nplaceholder body begins:\n{placeholder}")))
    })())?;

    steps.run(
        "retrieve the message as alice over HTTPS",
        async {
            let content = api
                .get(
                    &format!("/api/v1/messages/{}/content", stored.message_id),
                    Some(&alice.access_token),
                )
                .await?
                .expect_status(200)?;
            if content.body != mime {
                bail!("the retrieved bytes differ from the stored ones");
            }
            let digest = ContentDigest::of(&content.body).to_hex();
            if digest != stored.content_sha256 {
                bail!("hash mismatch");
            }
            Ok((
                (),
                format!(
                    "{} bytes, identical, sha256 matches the signed notification",
                    content.body.len()
                ),
            ))
        }
        .await,
    )?;

    steps.run(
        "a stranger asks for it",
        async {
            let mallory =
                register(&api, &data, &server.origin, "mallory@demo.test", "stranger").await?.0;
            let response = api
                .get(
                    &format!("/api/v1/messages/{}/content", stored.message_id),
                    Some(&mallory.access_token),
                )
                .await?;
            if response.status != 404 {
                bail!("expected 404, got {}", response.status);
            }
            Ok(((), "404 Not Found: as if the message did not exist".to_owned()))
        }
        .await,
    )?;

    steps.run(
        "sender checks who picked it up",
        async {
            let log: RetrievalLog = api
                .get(
                    &format!("/api/v1/messages/{}/retrievals", stored.message_id),
                    Some(&sender.access_token),
                )
                .await?
                .expect_status(200)?
                .json();
            let lines = log
                .retrievals
                .iter()
                .map(|r| {
                    format!(
                        "{} on \"{}\" at {}",
                        r.account,
                        r.device_name,
                        r.retrieved_at
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok(((), lines))
        }
        .await,
    )?;

    steps.run(
        "stop the server (SIGTERM)",
        tokio::task::spawn_blocking(move || {
            server
                .terminate(Duration::from_secs(15))
                .map(|status| ((), format!("exited: {status}")))
        })
        .await?,
    )?;
    println!("\nDone. Everything ran on 127.0.0.1; the demo's data directory has been removed.");
    Ok(())
}

/// Registers like the desktop agent: request a code, read it from the
/// server's mail pickup directory, enroll a device with it.
async fn register(
    api: &ApiClient,
    data: &Path,
    origin: &str,
    email: &str,
    device: &str,
) -> anyhow::Result<(DeviceTokens, String)> {
    let pickup = data.join("mail-pickup");
    api.post_json("/api/v1/verification-codes", &CodeRequest { email: email.into() }, None)
        .await?
        .expect_status(202)?;
    let code = wait_for_code(&pickup, origin, email).await?;
    let request = EnrollDevice {
        email: email.into(),
        device_name: device.into(),
        credential: DeviceCredential::Code(code.clone()),
    };
    let tokens: DeviceTokens =
        api.post_json("/api/v1/devices", &request, None).await?.expect_status(201)?.json();
    Ok((
        tokens.clone(),
        format!("code {code} read from the emailed message; device {} enrolled", tokens.device_id),
    ))
}

/// Registrations run one after another and each email is removed once read,
/// so the one email in the directory is the one just requested.
async fn wait_for_code(pickup: &Path, origin: &str, email: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir(pickup)?.flatten() {
            let raw = std::fs::read(entry.path())?;
            if let Some(code) = find_code(&raw, origin) {
                std::fs::remove_file(entry.path())?;
                return Ok(code);
            }
        }
        if Instant::now() > deadline {
            bail!("no verification email for {email} appeared in {}", pickup.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
