//! `cargo xtask demo`: the Sealpost flow on loopback, printing each step with
//! its time.
//!
//! It starts a real mail stack (Postfix delivering into Dovecot) and the real
//! `sealpost-server` binary in a fresh directory on embedded defaults; the
//! only settings are a free port and the stack's SMTP port as relay. Codes
//! and notifications are read from the users' inboxes over IMAP, as the
//! desktop agent reads them.
//!
//! With `--gui` it opens the desktop app on that stack instead of running
//! the headless agent: set it up in the window, and secure messages follow.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sealpost_agent::swap::SWAPPED_HEADER;
use sealpost_harness::{
    AgentCli, ApiClient, KeyringSession, MailStack, PageClient, ServerProcess, notification_link,
    sample_mime,
};
use sealpost_proto::api::{
    DeliveryReport, DeviceTokens, RetrievalChannel, StoredMessage, WellKnown,
};
use sealpost_proto::notification::parse;

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
                    "{:>2}. {title:<58} {:>7.1} ms",
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
        "Sealpost demo: a secure message stored, its notification delivered to a real inbox, swapped by the agent, found by search\n"
    );
    let binary = ServerProcess::binary()?;
    let dir = tempfile::Builder::new().prefix("sealpost-demo-").tempdir()?;
    let mut steps = Steps { started: Instant::now(), step: 0 };

    let stack = steps.run(
        "start the mail stack (Postfix -> Dovecot)",
        MailStack::start(&["sender", "alice", "bob", "mallory"]).await.map(|stack| {
            let detail = format!(
                "SMTP {}, IMAP {}, mailboxes {}",
                stack.smtp_addr(),
                stack.imap_addr(),
                stack.users().iter().map(|u| u.address.as_str()).collect::<Vec<_>>().join(", ")
            );
            (stack, detail)
        }),
    )?;

    let env = [
        ("SEALPOST_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("SEALPOST_SMTP__HOST", "127.0.0.1".to_owned()),
        ("SEALPOST_SMTP__PORT", stack.smtp_addr().port().to_string()),
        ("SEALPOST_SMTP__SECURITY", "none".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let server = steps.run("start sealpost-server (embedded defaults)", {
        ServerProcess::start(&binary, dir.path(), &[], &env).map(|server| {
            let banner = server.banner.join("\n");
            (server, banner)
        })
    })?;
    let data = dir.path().join("sealpost-data");
    let cert =
        std::fs::read(data.join("tls/cert.pem")).context("reading the generated certificate")?;
    let api = ApiClient::new(&server.base_url, &cert)?;

    steps.run::<WellKnown>(
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
        "register sender@example.test (code read over IMAP)",
        register(&api, &stack, &server.origin, "sender@example.test", "demo sender").await,
    )?;
    let keyring = steps.run(
        "start alice's keyring (D-Bus + GNOME Keyring)",
        KeyringSession::start().await.map(|k| (k, "Secret Service unlocked".to_owned())),
    )?;
    let mut trusted = cert.clone();
    trusted.extend_from_slice(stack.ca_pem().as_bytes());
    if std::env::args().any(|arg| arg == "--gui") {
        let demo = GuiDemo { stack: &stack, api: &api, sender: &sender, trusted: &trusted };
        demo.run(&server.base_url, &keyring, dir.path()).await?;
        drop(keyring);
        drop(stack);
        println!(
            "\nDone. The window is closed, the mail stack stopped and the demo's directories removed."
        );
        return Ok(());
    }
    let agent = AgentCli::new(keyring.env())?;
    steps.run(
        "sealpost-agent register --email alice@example.test",
        async {
            let output = agent
                .register(&stack, "alice@example.test", &server.base_url, &trusted, &[])
                .await?;
            if !output.success {
                bail!("{}{}", output.stdout, output.stderr);
            }
            Ok(((), output.stdout))
        }
        .await,
    )?;

    let attachment: Vec<u8> = (0..48_000u32).map(|i| (i % 251) as u8).collect();
    let mime = sample_mime(
        "Your lab results",
        "Dear Alice, your results are attached. Dr. Sender",
        &attachment,
    );
    let stored: StoredMessage = steps.run(
        "store a secure message for alice and bob",
        async {
            let stored: StoredMessage = api
                .upload_with(
                    &sender.access_token,
                    &["alice@example.test", "bob@example.test"],
                    mime.clone(),
                    true,
                )
                .await?
                .expect_status(201)?
                .json();
            let detail = format!(
                "message {} ({} bytes, sha256 {}…); the server queues both notifications",
                stored.message_id,
                stored.size,
                &stored.content_sha256[..16]
            );
            Ok((stored, detail))
        }
        .await,
    )?;

    steps.run(
        "the notification arrives in alice's INBOX",
        async {
            let is_notification = |raw: &[u8]| parse(raw).is_ok();
            let raw = stack
                .wait_for_email(
                    "alice@example.test",
                    "INBOX",
                    is_notification,
                    Duration::from_secs(15),
                )
                .await?;
            let text = String::from_utf8_lossy(&raw).into_owned();
            let shown: Vec<&str> = text
                .lines()
                .filter(|line| {
                    ["Subject:", "From:", "To:", "X-Sealpost-", "DKIM-Signature:"]
                        .iter()
                        .any(|prefix| line.starts_with(prefix))
                        || line.starts_with("Received: from")
                })
                .collect();
            Ok((
                (),
                format!("delivered by Postfix into Dovecot; its headers:\n{}", shown.join("\n")),
            ))
        }
        .await,
    )?;

    steps.run(
        "bob, without the agent, follows his link to the Secure Message Center",
        async {
            let is_notification = |raw: &[u8]| parse(raw).is_ok();
            let raw = stack
                .wait_for_email(
                    "bob@example.test",
                    "INBOX",
                    is_notification,
                    Duration::from_secs(15),
                )
                .await?;
            let link = notification_link(&raw).context("no link in bob's notification")?;
            let started = Instant::now();
            let browser = PageClient::new(&server.base_url, &cert)?;
            browser.get(&link).await?;
            let (path, token) = link.split_once("?t=").context("no token in the link")?;
            let message = path.rsplit('/').next().unwrap_or_default();
            let csrf = browser.csrf();
            let registered = browser
                .post(
                    "/register",
                    &[
                        ("csrf", &csrf),
                        ("message", message),
                        ("t", token),
                        ("name", "Bob"),
                        ("password", "a demo password"),
                        ("accept", "on"),
                    ],
                )
                .await?;
            let page = browser.get(registered.location().unwrap_or("/mailbox")).await?;
            let attachment_page =
                browser.get(&format!("/messages/{message}/attachments/0")).await?;
            if !page.body.contains("Dear Alice, your results are attached")
                || attachment_page.bytes != attachment
            {
                bail!("bob could not read the message: {}", page.status);
            }
            Ok((
                (),
                format!(
                    "link {link}\nregistered with a name and a password, the message shown and its \
                     attachment downloaded ({} bytes) in {:?}",
                    attachment.len(),
                    started.elapsed()
                ),
            ))
        }
        .await,
    )?;

    steps.run(
        "sealpost-agent run --once swaps the placeholder",
        async {
            let output = agent.run(&["run", "--once"], None).await?;
            if !output.success {
                bail!("{}{}", output.stdout, output.stderr);
            }
            let inbox = stack.messages("alice@example.test", "INBOX").await?;
            let placeholders = inbox.iter().filter(|m| parse(&m.raw).is_ok()).count();
            let real = inbox
                .iter()
                .find(|m| String::from_utf8_lossy(&m.raw).contains(&stored.message_id))
                .context("the real message is not in the INBOX")?;
            let text = String::from_utf8_lossy(&real.raw).into_owned();
            if placeholders != 0 || !text.contains("Dear Alice, your results are attached") {
                bail!("the swap did not leave exactly the real message");
            }
            Ok((
                (),
                format!(
                    "{}signature verified, content fetched, sha256 checked; INBOX UID {} now holds the real \
                     message (flags {:?}), no placeholder left",
                    output.stdout, real.uid, real.flags
                ),
            ))
        }
        .await,
    )?;

    steps.run(
        "sealpost-agent search results",
        agent.run(&["search", "results"], None).await.and_then(|output| {
            if !output.success || !output.stdout.contains("Your lab results") {
                bail!(
                    "the index did not find the swapped message: {}{}",
                    output.stdout,
                    output.stderr
                );
            }
            Ok(((), output.stdout))
        }),
    )?;

    let mut watching = agent.command(&["run"]).spawn().context("starting sealpost-agent run")?;
    let live: StoredMessage = steps.run(
        "sealpost-agent run watches; another message is sent",
        async {
            // Give the watcher its first pass and IDLE before sending.
            let connected = async {
                loop {
                    let status = agent.run(&["status", "--json"], None).await?;
                    if status.stdout.contains("\"connected\"") {
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(15), connected)
                .await
                .context("the agent did not connect")??;
            let mime = sample_mime("Follow-up", "Please book a follow-up visit.", b"");
            let stored: StoredMessage = api
                .upload_with(&sender.access_token, &["alice@example.test"], mime, true)
                .await?
                .expect_status(201)?
                .json();
            Ok((stored, "uploaded; the server queues the notification".to_owned()))
        }
        .await,
    )?;
    steps.run(
        "the notification arrives and the agent swaps it live",
        async {
            let marker = format!("{SWAPPED_HEADER}: {}", live.message_id);
            let swapped = |raw: &[u8]| String::from_utf8_lossy(raw).contains(&marker);
            stack
                .wait_for_email("alice@example.test", "INBOX", swapped, Duration::from_secs(30))
                .await?;
            let inbox = stack.messages("alice@example.test", "INBOX").await?;
            let placeholders = inbox.iter().filter(|m| parse(&m.raw).is_ok()).count();
            if placeholders != 0 {
                bail!("a placeholder is left in the INBOX");
            }
            Ok((
                (),
                "Postfix -> Dovecot -> IDLE wakes the agent -> real message in place".to_owned(),
            ))
        }
        .await,
    )?;
    steps.run(
        "sealpost-agent status",
        agent.run(&["status"], None).await.map(|output| ((), output.stdout)),
    )?;
    watching.start_kill()?;
    watching.wait().await?;

    steps.run(
        "a stranger asks for it",
        async {
            let mallory =
                register(&api, &stack, &server.origin, "mallory@example.test", "stranger").await?.0;
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
        "sender checks each recipient's state",
        async {
            let report: DeliveryReport = api
                .get(
                    &format!("/api/v1/messages/{}/deliveries", stored.message_id),
                    Some(&sender.access_token),
                )
                .await?
                .expect_status(200)?
                .json();
            let lines = report
                .recipients
                .iter()
                .map(|r| {
                    format!(
                        "{}: {:?}; relay said {:?}; retrieved at {}{}",
                        r.recipient,
                        r.state,
                        r.relay_answer.as_deref().unwrap_or("-"),
                        r.retrieved_at
                            .and_then(|at| at
                                .format(&time::format_description::well_known::Rfc3339)
                                .ok())
                            .unwrap_or_else(|| "-".into()),
                        match r.retrieved_with {
                            Some(RetrievalChannel::Agent) => " by the agent",
                            Some(RetrievalChannel::SecureMessageCenter) =>
                                " in the Secure Message Center",
                            None => "",
                        }
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
    drop(keyring);
    drop(stack);
    println!(
        "\nDone. Everything ran on 127.0.0.1; the mail stack is stopped and the demo's directories removed."
    );
    Ok(())
}

/// `--gui`: the desktop app on this stack, on a computer whose IT policy
/// presets the server, the mailbox and the CA, as IT would deploy it.
struct GuiDemo<'a> {
    stack: &'a MailStack,
    api: &'a ApiClient,
    sender: &'a DeviceTokens,
    trusted: &'a [u8],
}

impl GuiDemo<'_> {
    async fn run(
        &self,
        server_url: &str,
        keyring: &KeyringSession,
        dir: &std::path::Path,
    ) -> anyhow::Result<()> {
        if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
            bail!(
                "--gui opens a window: run it in a desktop session (or try it headless under xvfb-run)"
            );
        }
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, self.trusted)?;
        let policy = dir.join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "server_url = \"{server_url}\"\nca_file = \"{}\"\n\n[imap]\nhost = \"localhost\"\nport = {}\nsecurity = \"tls\"\n",
                ca_file.display(),
                self.stack.imaps_addr().port()
            ),
        )?;
        let data = dir.join("app-data");
        let log = dir.join("app.log");
        let app =
            sealpost_harness::workspace_binary("SEALPOST_APP_BIN", "sealpost-app", "sealpost")?;
        let mut window = tokio::process::Command::new(&app)
            .envs(keyring.env())
            .env("SEALPOST_AGENT_DIR", &data)
            .env("SEALPOST_POLICY_FILE", &policy)
            .env("SEALPOST_DOWNLOAD_DIR", dir.join("Downloads"))
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&log)?.try_clone()?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", app.display()))?;
        let alice = self.stack.user("alice@example.test");
        println!(
            "\nThe Sealpost app is open (its log: {}).\nSet it up as {} with the mailbox password {}\n",
            log.display(),
            alice.address,
            alice.password
        );
        // Registered when the app writes its configuration.
        while !data.join("agent.toml").exists() {
            if let Some(status) = window.try_wait()? {
                bail!("the app closed before it was set up ({status}); its log: {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "Registered. Three secure messages for alice follow; watch them open in Status, then find them in Search."
        );
        let letters = [
            ("Your lab results", "Dear Alice, your cholesterol values are in the normal range."),
            ("Invoice 2026-114", "Please find the invoice for November attached."),
            ("Contract draft", "The draft contract for the Hamburg office, for your review."),
        ];
        for (subject, body) in letters {
            let mime = sample_mime(subject, body, b"%PDF-1.4\n% demo attachment\n");
            let stored: StoredMessage = self
                .api
                .upload_with(&self.sender.access_token, &["alice@example.test"], mime, true)
                .await?
                .expect_status(201)?
                .json();
            println!("  sent “{subject}” ({})", stored.message_id);
        }
        println!("\nClose the window to end the demo.");
        let status = window.wait().await?;
        println!("The app exited ({status}).");
        Ok(())
    }
}

/// Registers like the desktop agent, reading the code from the inbox.
async fn register(
    api: &ApiClient,
    stack: &MailStack,
    origin: &str,
    email: &str,
    device: &str,
) -> anyhow::Result<(DeviceTokens, String)> {
    let (tokens, code) = api.register_via_inbox(stack, origin, email, device).await?;
    let detail = format!("code {code} read from the inbox; device {} enrolled", tokens.device_id);
    Ok((tokens, detail))
}
