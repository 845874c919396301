//! The conversation of the masking seed, end to end over the real stack:
//! Postfix in front of Dovecot, the real server with its SMTP listener
//! behind Postfix, and a real DNS server publishing the domain's SPF and
//! DMARC records, which the server checks itself.
//!
//! Marcus writes to a group; Tim answers and Marcus reads it without seeing
//! anything but masked addresses; Marcus answers and Tim receives it from
//! Marcus's masked address; Greg, whom the organization does not know,
//! writes twice and is told exactly once, while Marcus receives nothing.
//! Every header of every delivered message is checked for the real
//! addresses of the other people.

use std::sync::Arc;
use std::time::Duration;

use sealpost_harness::{DnsServer, MailStack, StackOptions, TestApp, TestUser};
use sealpost_proto::api::{MaskedMail, RelayLog};
use sealpost_relay::{Relay, RelayConfig, Security, TrustedRoots};

const MASKED_DOMAIN: &str = "alumni.regency.test";
const MARCUS: &str = "marcus@example.test";
const TIM: &str = "tim@example.test";
const ANN: &str = "ann@example.test";
const GREG: &str = "greg@example.test";
const EVERYONE: [&str; 4] = [MARCUS, TIM, ANN, GREG];
const WAIT: Duration = Duration::from_secs(30);

struct Conversation {
    stack: Arc<MailStack>,
    app: TestApp,
    admin: TestUser,
    _dns: DnsServer,
}

impl Conversation {
    /// The stack, a DNS server with the domain's SPF and DMARC records,
    /// the server behind Postfix, and the directory with Tim and Ann.
    async fn start() -> Self {
        let dns = DnsServer::start(
            &["test"],
            &[
                ("example.test", "v=spf1 ip4:127.0.0.1 -all"),
                ("_dmarc.example.test", "v=DMARC1; p=reject"),
            ],
        )
        .await
        .expect("DNS server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        // As in production: Postfix hands the masked domain and the bounce
        // addresses to the server's listener.
        let routed = vec![MASKED_DOMAIN.to_owned(), "sealpost@example.test".to_owned()];
        let options =
            StackOptions { route_to_sealpost: Some((routed, port)), ..StackOptions::default() };
        let stack = Arc::new(
            MailStack::start_with(&["marcus", "tim", "ann", "greg", "admin"], &options)
                .await
                .expect("mail stack"),
        );
        let app = TestApp::spawn_on(stack.clone(), |s| {
            s.inbound.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            s.masking.domain = Some(MASKED_DOMAIN.into());
            s.masking.dns_servers = vec![dns.address()];
            s.webmail.members = vec![MARCUS.into()];
            s.admin.emails = vec!["admin@example.test".into()];
            s.branding.organization_name = "Regency Academy".into();
        })
        .await;
        let admin = app.register_agent("admin@example.test", "admin laptop").await;
        let csv = "email,name,group\n\
               tim@example.test,Tim Baker,Class of 2010\n\
               ann@example.test,Ann Lee,Class of 2010\n";
        app.import_directory(&admin, csv).await.expect_status(200).expect("imported");
        Self { stack, app, admin, _dns: dns }
    }

    /// Mail as a person's own mail program submits it to their server.
    async fn submit(&self, from: &str, to: &str, email: String) {
        let relay = Relay::new(&RelayConfig {
            host: "127.0.0.1".into(),
            port: self.stack.smtp_addr().port(),
            security: Security::Plain,
            credentials: None,
            timeout: Duration::from_secs(10),
            roots: TrustedRoots::Only(Vec::new()),
        })
        .expect("SMTP client");
        relay.send_raw(from, &[to], email.as_bytes()).await.expect("Postfix takes it");
    }

    /// Waits until the server has decided about `count` messages in all.
    async fn decisions(&self, count: usize) -> RelayLog {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let log = self.app.relay_log(self.admin.token(), 100).await;
            if log.entries.len() >= count {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} decisions expected, {log:?}\n{}",
                self.stack.postfix_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn inbox(&self, address: &str) -> Vec<String> {
        let messages = self.stack.messages(address, "INBOX").await.expect("IMAP");
        messages
            .into_iter()
            .map(|message| String::from_utf8_lossy(&message.raw).into_owned())
            .collect()
    }

    async fn wait_for(&self, address: &str, text: &str) -> String {
        let raw = self
            .stack
            .wait_for_email(
                address,
                "INBOX",
                |raw| String::from_utf8_lossy(raw).contains(text),
                WAIT,
            )
            .await
            .unwrap_or_else(|error| {
                panic!("{text:?} did not reach {address}: {error:#}\n{}", self.stack.postfix_log())
            });
        String::from_utf8_lossy(&raw).into_owned()
    }
}

/// The header block, folded lines joined.
fn headers(raw: &str) -> String {
    let block = raw.split("\r\n\r\n").next().unwrap_or(raw);
    block.replace("\r\n ", " ").replace("\r\n\t", " ")
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// No real address but the mailbox owner's own in any header.
fn assert_no_leaks(owner: &str, raw: &str) {
    let headers = headers(raw);
    for other in EVERYONE.iter().filter(|address| **address != owner) {
        assert!(!headers.contains(other), "{other} shows in mail delivered to {owner}:\n{headers}");
    }
}

#[tokio::test]
async fn marcus_writes_to_a_group_tim_answers_and_greg_is_turned_away() {
    let talk = Conversation::start().await;

    // Step 1: Marcus writes to the group.
    let marcus = talk.app.named_user(MARCUS, "Marcus Lee").await;
    let request = MaskedMail {
        to: Vec::new(),
        groups: vec!["Class of 2010".into()],
        subject: "Reunion this spring".into(),
        text: "Who is coming to the reunion?".into(),
    };
    let sent = talk.app.send_masked(marcus.token(), &request).await;
    let address_for = |who: &str| {
        sent.recipients.iter().find(|r| r.email == who).expect("in the group").reply_address.clone()
    };
    let (tims_address, anns_address) = (address_for(TIM), address_for(ANN));
    assert_ne!(tims_address, anns_address, "each correspondent has their own address");

    let to_tim = talk.wait_for(TIM, "Who is coming").await;
    let to_tim_headers = headers(&to_tim);
    assert_eq!(
        header(&to_tim_headers, "From"),
        Some(format!("\"Marcus Lee via Regency Academy\" <{tims_address}>").as_str()),
        "{to_tim_headers}"
    );
    let original_id = header(&to_tim_headers, "Message-ID").expect("a Message-ID").to_owned();
    assert!(header(&talk.wait_for(ANN, "Who is coming").await, "From").is_some());

    // Step 2: Tim answers from his own mail program; Marcus receives it.
    talk.submit(
        TIM,
        &tims_address,
        format!(
            "From: Tim Baker <{TIM}>\r\nTo: \"Marcus Lee via Regency Academy\" <{tims_address}>\r\n\
             Subject: Re: Reunion this spring\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n\
             Message-ID: <tim-answer@example.test>\r\nIn-Reply-To: {original_id}\r\n\
             References: {original_id}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             Count me in!\r\n"
        ),
    )
    .await;
    let to_marcus = talk.wait_for(MARCUS, "Count me in!").await;
    let to_marcus_headers = headers(&to_marcus);
    assert_eq!(
        header(&to_marcus_headers, "From"),
        Some(format!("\"Tim Baker\" <{tims_address}>").as_str()),
        "{to_marcus_headers}"
    );
    assert_eq!(header(&to_marcus_headers, "In-Reply-To"), Some(original_id.as_str()));
    let log = talk.decisions(1).await;
    assert_eq!(log.entries[0].decision, "relayed", "{log:?}");
    assert!(
        log.entries[0].reason.contains("spf=pass") && log.entries[0].reason.contains("dmarc=pass"),
        "{log:?}"
    );

    // Step 3: Marcus answers; Tim receives it from Marcus's masked address.
    talk.submit(
        MARCUS,
        &tims_address,
        format!(
            "From: Marcus Lee <{MARCUS}>\r\nTo: \"Tim Baker\" <{tims_address}>\r\n\
             Subject: Re: Reunion this spring\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\
             Message-ID: <marcus-answer@example.test>\r\nIn-Reply-To: <tim-answer@example.test>\r\n\
             References: {original_id} <tim-answer@example.test>\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nGreat, see you there.\r\n"
        ),
    )
    .await;
    let answer = talk.wait_for(TIM, "see you there").await;
    let answer_headers = headers(&answer);
    assert_eq!(
        header(&answer_headers, "From"),
        Some(format!("\"Marcus Lee via Regency Academy\" <{tims_address}>").as_str()),
        "{answer_headers}"
    );
    assert_eq!(header(&answer_headers, "In-Reply-To"), Some("<tim-answer@example.test>"));
    assert_eq!(talk.decisions(2).await.entries[0].decision, "sent_masked");

    // Step 4: Greg, unknown to the organization, writes twice to the
    // address he came across. He is told once; Marcus receives nothing.
    let marcus_before = talk.inbox(MARCUS).await.len();
    for attempt in 1..=2 {
        talk.submit(
            GREG,
            &tims_address,
            format!(
                "From: Greg <{GREG}>\r\nTo: <{tims_address}>\r\nSubject: Hello Marcus\r\n\
                 Date: Mon, 30 Nov 2026 11:0{attempt}:00 +0000\r\nMessage-ID: <greg-{attempt}@example.test>\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nCan I join the reunion?\r\n"
            ),
        )
        .await;
        talk.decisions(2 + attempt).await;
    }
    let told = talk.wait_for(GREG, "Not delivered").await;
    let told_headers = headers(&told);
    assert_eq!(header(&told_headers, "Auto-Submitted"), Some("auto-replied"), "{told_headers}");
    assert_eq!(header(&told_headers, "In-Reply-To"), Some("<greg-1@example.test>"));
    assert_eq!(header(&told_headers, "Return-Path"), Some("<>"), "a null return path");
    let log = talk.decisions(4).await;
    let decisions: Vec<&str> = log.entries.iter().map(|entry| entry.decision.as_str()).collect();
    assert_eq!(decisions, ["dropped", "auto_replied", "sent_masked", "relayed"], "{log:?}");

    // Whatever is still on its way has arrived before counting.
    talk.stack.wait_until_delivered(WAIT).await.expect("Postfix's queue empties");
    tokio::time::sleep(Duration::from_millis(500)).await;
    talk.stack.wait_until_delivered(WAIT).await.expect("Postfix's queue empties");
    let gregs = talk.inbox(GREG).await;
    assert_eq!(gregs.len(), 1, "exactly one answer: {gregs:#?}");
    assert_eq!(talk.inbox(MARCUS).await.len(), marcus_before, "nothing of Greg's reached Marcus");

    // Every header of every delivered message.
    for owner in EVERYONE {
        let inbox = talk.inbox(owner).await;
        assert!(!inbox.is_empty(), "{owner} received mail");
        for raw in inbox {
            assert_no_leaks(owner, &raw);
        }
    }
}

#[tokio::test]
async fn an_answer_to_a_secure_message_comes_back_as_a_secure_message() {
    let talk = Conversation::start().await;
    let marcus = talk.app.named_user(MARCUS, "Marcus Lee").await;
    let mime = format!(
        "From: Marcus Lee <{MARCUS}>\r\nTo: Tim Baker <{TIM}>\r\nSubject: Your results\r\n\
         Message-ID: <results@example.test>\r\nDate: Mon, 30 Nov 2026 08:00:00 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nThe results are fine.\r\n"
    );
    let stored = talk.app.store_and_notify(marcus.token(), &[TIM], mime.into_bytes()).await;

    // The notification's Reply-To is a masked address made for Tim and this message.
    let notification = talk.wait_for(TIM, "Your results").await;
    let reply_to = header(&headers(&notification), "Reply-To").expect("a Reply-To").to_owned();
    let masked = reply_to
        .rsplit_once('<')
        .and_then(|(_, rest)| rest.strip_suffix('>'))
        .expect("an address")
        .to_owned();
    assert!(masked.ends_with(&format!("@{MASKED_DOMAIN}")), "{reply_to}");

    // Tim answers from his mail program: plain email to that address.
    talk.submit(
        TIM,
        &masked,
        format!(
            "From: Tim Baker <{TIM}>\r\nTo: \"Marcus Lee\" <{masked}>\r\nSubject: Re: Your results\r\n\
             Date: Mon, 30 Nov 2026 09:00:00 +0000\r\nMessage-ID: <tim-thanks@example.test>\r\n\
             In-Reply-To: <results@example.test>\r\nReferences: <results@example.test>\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nThank you, doctor.\r\n"
        ),
    )
    .await;
    let log = talk.decisions(1).await;
    assert_eq!(log.entries[0].decision, "stored", "{log:?}");

    // Marcus is notified; the answer itself travels only over HTTPS.
    let notice = talk.wait_for(MARCUS, "Re: Your results").await;
    assert!(!notice.contains("Thank you, doctor"), "the content stays on the server: {notice}");
    let signed =
        sealpost_proto::notification::parse(notice.as_bytes()).expect("a genuine notification");
    let content = talk.app.content(Some(marcus.token()), signed.fields.message_id.as_str()).await;
    assert_eq!(content.status, 200, "{}", content.text());
    assert!(content.text().contains("Thank you, doctor."), "{}", content.text());

    // The original's delivery slip shows that Tim replied.
    let report = talk.app.deliveries(marcus.token(), &stored.message_id).await;
    assert!(report.recipients[0].replied_at.is_some(), "{report:?}");
}
