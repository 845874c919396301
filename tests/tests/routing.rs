//! Mail to masked addresses, decided one fixture at a time: each `.eml` in
//! `tests/fixtures/routing/` goes to the real server's SMTP listener as the
//! front MTA would hand it over, and the test reads the decision from the
//! admin relay log and what left through the outbox from the mail capture.

use std::path::PathBuf;
use std::time::Duration;

use sealpost_harness::{CapturedMail, DnsServer, TestApp, TestUser};
use sealpost_proto::api::{MaskedMail, RelayLogEntry};
use sealpost_server::Settings;

const MEMBER: &str = "marcus@home.example";
const TIM: &str = "tim@alumni.example";
const GREG: &str = "greg@elsewhere.example";

struct Setup {
    app: TestApp,
    /// Where the server looks up SPF and DMARC for mail without trusted
    /// results: by default no records at all, so such mail authenticates
    /// as nothing.
    _dns: DnsServer,
    admin: TestUser,
    /// The masked address Marcus's message gave Tim.
    tims_address: String,
}

async fn setup() -> Setup {
    setup_with(&[], |_| {}).await
}

/// With these TXT records in the DNS the server checks mail against, and
/// settings `configure` changes.
async fn setup_with(txt: &[(&str, &str)], configure: impl FnOnce(&mut Settings)) -> Setup {
    let dns = DnsServer::start(&["example", "test"], txt).await.expect("DNS server");
    let app = TestApp::spawn_with(|s| {
        s.masking.dns_servers = vec![dns.address()];
        s.outbox.worker = false;
        s.inbound.listen = Some("127.0.0.1:0".parse().expect("address"));
        s.masking.domain = Some("reply.example.test".into());
        s.masking.trusted_authserv_ids = vec!["mx.example.test".into()];
        s.webmail.members = vec![MEMBER.into()];
        s.admin.emails = vec!["admin@example.test".into()];
        s.branding.organization_name = "Regency Academy".into();
        // The weekly limit is tested by moving the clock; the admin's token outlives that.
        s.accounts.access_token_ttl_seconds = 30 * 24 * 3600;
        configure(s);
    })
    .await;
    let admin = app.register_agent("admin@example.test", "admin laptop").await;
    let csv = "email,name,group\n\
               tim@alumni.example,Tim Baker,Class of 2010\n\
               ann@alumni.example,Ann Lee,Class of 2010;Choir\n";
    app.import_directory(&admin, csv).await.expect_status(200).expect("imported");
    let marcus = app.named_user(MEMBER, "Marcus Lee").await;
    let request = MaskedMail {
        to: Vec::new(),
        groups: vec!["class of 2010".into()],
        subject: "Reunion this spring".into(),
        text: "Who is coming?".into(),
    };
    let sent = app.send_masked(marcus.token(), &request).await;
    assert_eq!(sent.recipients.len(), 2, "{sent:?}");
    let tims_address = sent
        .recipients
        .iter()
        .find(|recipient| recipient.email == TIM)
        .expect("Tim is in the group")
        .reply_address
        .clone();
    assert_eq!(app.outbox.step().await.expect("step").sent, 2);
    Setup { app, _dns: dns, admin, tims_address }
}

fn fixture(name: &str, to: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/routing").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.replace("{to}", to).into_bytes()
}

impl Setup {
    /// Hands the fixture over, sends what it caused, and returns the
    /// decision and the mail that left.
    async fn deliver(
        &self,
        name: &str,
        envelope_sender: &str,
    ) -> (RelayLogEntry, Vec<CapturedMail>) {
        let before = self.app.mail.messages().await.len();
        let answer = self
            .app
            .deliver_inbound(
                envelope_sender,
                &[&self.tims_address],
                &fixture(name, &self.tims_address),
            )
            .await
            .unwrap_or_else(|error| panic!("{name} refused: {error:?}"));
        assert!(answer.starts_with("250"), "{name}: {answer}");
        let sent = self.app.outbox.step().await.expect("step").sent;
        let log = self.app.relay_log(self.admin.token(), 1).await;
        let entry = log.entries.into_iter().next().expect("a decision was logged");
        let mut left = Vec::new();
        if sent > 0 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while self.app.mail.messages().await.len() < before + sent
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            left = self.app.mail.messages().await.split_off(before);
        }
        assert_eq!(left.len(), sent, "{name}: every queued mail reached the relay");
        (entry, left)
    }
}

/// The first (name, address) of the mail's `field` (From, To).
fn mailbox(mail: &CapturedMail, field: &str) -> (Option<String>, String) {
    let parsed = mail_parser::MessageParser::new().parse(&mail.data).expect("parses");
    let list = match field {
        "From" => parsed.from(),
        _ => parsed.to(),
    };
    let first = list.and_then(|list| list.first()).expect("an address");
    (first.name().map(str::to_owned), first.address().unwrap_or_default().to_owned())
}

fn named(name: &str, address: &str) -> (Option<String>, String) {
    (Some(name.to_owned()), address.to_owned())
}

fn header_block(mail: &CapturedMail) -> String {
    let text = String::from_utf8_lossy(&mail.data).into_owned();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_recognised_correspondents_answer_is_relayed_masked_and_the_members_answer_goes_back_masked()
 {
    let setup = setup().await;

    let (entry, left) = setup.deliver("dmarc_pass.eml", TIM).await;
    assert_eq!(
        (entry.decision.as_str(), entry.from_address.as_deref()),
        ("relayed", Some(TIM)),
        "{entry:?}"
    );
    assert_eq!(entry.member.as_deref(), Some(MEMBER));
    let [relayed] = left.as_slice() else { panic!("one relayed mail: {left:?}") };
    assert_eq!(relayed.rcpt_to, [MEMBER]);
    let headers = header_block(relayed);
    assert_eq!(mailbox(relayed, "From"), named("Tim Baker", &setup.tims_address));
    assert_eq!(mailbox(relayed, "To"), named("Marcus Lee", MEMBER));
    for kept in [
        "Subject: Re: Reunion this spring",
        "In-Reply-To: <first@reply.example.test>",
        "Message-ID: <tim-1@alumni.example>",
    ] {
        assert!(headers.contains(kept), "{kept}: {headers}");
    }
    for leaked in [TIM, "tim.home@private.example", "192.0.2.10", "d=alumni.example"] {
        assert!(!headers.contains(leaked), "{leaked} leaked: {headers}");
    }
    assert!(!relayed.mail_from.contains("alumni"), "{}", relayed.mail_from);

    // No authentication records at all is not a failure: relayed.
    let (entry, _) = setup.deliver("dmarc_none.eml", TIM).await;
    assert_eq!(entry.decision, "relayed", "{entry:?}");

    let (entry, left) = setup.deliver("member_answer.eml", MEMBER).await;
    assert_eq!(entry.decision, "sent_masked", "{entry:?}");
    let [answer] = left.as_slice() else { panic!("one masked answer: {left:?}") };
    assert_eq!(answer.rcpt_to, [TIM]);
    let headers = header_block(answer);
    assert_eq!(
        mailbox(answer, "From"),
        named("Marcus Lee via Regency Academy", &setup.tims_address)
    );
    assert_eq!(mailbox(answer, "To"), named("Tim Baker", TIM));
    assert!(headers.contains("In-Reply-To: <tim-1@alumni.example>"), "{headers}");
    for leaked in [MEMBER, "198.51.100.7", "Thunderbird", "smtp.home.example"] {
        assert!(
            !String::from_utf8_lossy(&answer.data).contains(leaked),
            "{leaked} leaked: {headers}"
        );
    }
    assert!(!answer.mail_from.contains("home.example"), "{}", answer.mail_from);
}

#[tokio::test]
async fn forged_automatic_list_and_looping_mail_is_neither_relayed_nor_answered() {
    let setup = setup().await;
    let cases = [
        ("dmarc_fail.eml", TIM, "refused", "DMARC failed"),
        ("forged_from.eml", "crook@forger.example", "refused", "DMARC failed"),
        ("out_of_office.eml", GREG, "dropped", "Auto-Submitted"),
        ("bounce.eml", "", "dropped", "null return path"),
        ("mailing_list.eml", "news-bounces@lists.elsewhere.example", "dropped", "list or bulk"),
        ("loop.eml", "bounce@reply.example.test", "refused", "loop"),
        ("unknown_sender_unauthenticated.eml", GREG, "dropped", "neither SPF nor DMARC"),
        (
            "other_correspondent.eml",
            "owner-choir@alumni.example",
            "dropped",
            "not the correspondent",
        ),
    ];
    for (name, envelope_sender, decision, reason) in cases {
        let (entry, left) = setup.deliver(name, envelope_sender).await;
        assert_eq!(entry.decision, decision, "{name}: {entry:?}");
        assert!(entry.reason.contains(reason), "{name}: {entry:?}");
        assert!(left.is_empty(), "{name}: nothing leaves, but {left:?}");
    }
}

#[tokio::test]
async fn an_unknown_sender_is_told_once_a_week_with_a_null_return_path() {
    let setup = setup().await;
    let (entry, left) = setup.deliver("unknown_sender.eml", GREG).await;
    assert_eq!(entry.decision, "auto_replied", "{entry:?}");
    let [told] = left.as_slice() else { panic!("one answer: {left:?}") };
    assert_eq!((told.mail_from.as_str(), told.rcpt_to.clone()), ("", vec![GREG.to_owned()]));
    let headers = header_block(told);
    for expected in [
        "Auto-Submitted: auto-replied",
        "In-Reply-To: <greg-1@elsewhere.example>",
        "References: <first@reply.example.test> <greg-1@elsewhere.example>",
        "sealpost@example.test>",
        "To: <greg@elsewhere.example>",
    ] {
        assert!(headers.contains(expected), "{expected}: {headers}");
    }
    let text = String::from_utf8_lossy(&told.data);
    assert!(text.contains(&setup.tims_address) && !text.contains(MEMBER), "{text}");

    // The same sender again within the week: dropped, not answered.
    let (entry, left) = setup.deliver("unknown_sender.eml", GREG).await;
    assert_eq!(entry.decision, "dropped", "{entry:?}");
    assert!(entry.reason.contains("answered within 7 days"), "{entry:?}");
    assert!(left.is_empty(), "{left:?}");

    // A week later they are told again.
    setup.app.clock.advance(Duration::from_secs(7 * 24 * 3600 + 60));
    let (entry, left) = setup.deliver("unknown_sender.eml", GREG).await;
    assert_eq!((entry.decision.as_str(), left.len()), ("auto_replied", 1), "{entry:?}");
}

#[tokio::test]
async fn unknown_and_disabled_masked_addresses_are_refused_at_rcpt() {
    let setup = setup().await;
    let refused_at_rcpt = |outcome: &Result<String, sealpost_relay::SendError>| matches!(outcome, Err(sealpost_relay::SendError::Permanent(reason)) if reason.contains("no such address"));
    let unknown = "marcus.lee.aaaaaaaaaaaaaaaa@reply.example.test";
    let outcome =
        setup.app.deliver_inbound(TIM, &[unknown], &fixture("dmarc_pass.eml", unknown)).await;
    assert!(refused_at_rcpt(&outcome), "{outcome:?}");

    // Only its member (or an admin) may disable an address; to anyone else it does not exist.
    let path = format!("/api/v1/masked-addresses/{}", setup.tims_address);
    let stranger = setup.app.register_agent("stranger@example.test", "laptop").await;
    let response = setup.app.api.delete(&path, Some(stranger.token())).await.expect("request");
    assert_eq!(response.status, 404, "{}", response.text());
    let response = setup.app.api.delete(&path, Some(setup.admin.token())).await.expect("request");
    assert_eq!(response.status, 204, "{}", response.text());
    let email = fixture("dmarc_pass.eml", &setup.tims_address);
    let outcome = setup.app.deliver_inbound(TIM, &[&setup.tims_address], &email).await;
    assert!(refused_at_rcpt(&outcome), "a disabled address takes nothing: {outcome:?}");
}

#[tokio::test]
async fn without_trusted_results_the_server_checks_spf_and_dmarc_itself() {
    // Greg's domain allows mail from this host (the fixture carries no
    // Authentication-Results): SPF passes, so he is told.
    let setup = setup_with(
        &[
            ("elsewhere.example", "v=spf1 ip4:127.0.0.1 -all"),
            ("_dmarc.elsewhere.example", "v=DMARC1; p=reject"),
            ("alumni.example", "v=spf1 ip4:192.0.2.10 -all"),
            ("_dmarc.alumni.example", "v=DMARC1; p=reject"),
        ],
        |_| {},
    )
    .await;
    let (entry, left) = setup.deliver("unknown_sender_unauthenticated.eml", GREG).await;
    assert_eq!((entry.decision.as_str(), left.len()), ("auto_replied", 1), "{entry:?}");

    // Tim's domain sends only from 192.0.2.10 and publishes DMARC: mail
    // claiming to be his from here fails DMARC and is not relayed. The
    // fixture's own results name an untrusted service and count for nothing.
    let forged = String::from_utf8(fixture("dmarc_pass.eml", &setup.tims_address))
        .expect("text")
        .replace("mx.example.test;", "mx.forger.example;")
        .replace(
            "Received: from mail.alumni.example (mail.alumni.example [192.0.2.10])",
            "Received: from mail.forger.example (mail.forger.example [127.0.0.1])",
        );
    let answer = setup.app.deliver_inbound(TIM, &[&setup.tims_address], forged.as_bytes()).await;
    assert!(answer.is_ok_and(|answer| answer.starts_with("250")));
    let log = setup.app.relay_log(setup.admin.token(), 1).await;
    let entry = &log.entries[0];
    assert_eq!(entry.decision, "refused", "{entry:?}");
    assert!(entry.reason.contains("spf=fail") && entry.reason.contains("dmarc=fail"), "{entry:?}");
}

#[tokio::test]
async fn answers_to_unknown_senders_stop_at_the_hourly_cap() {
    let setup = setup_with(&[], |s| s.masking.not_permitted_per_hour = 1).await;
    let (entry, _) = setup.deliver("unknown_sender.eml", GREG).await;
    assert_eq!(entry.decision, "auto_replied", "{entry:?}");
    // Another sender within the hour: over the cap, dropped unanswered.
    let (entry, left) = setup.deliver("unknown_sender.eml", "greta@elsewhere.example").await;
    assert_eq!(entry.decision, "dropped", "{entry:?}");
    assert!(entry.reason.contains("hourly limit"), "{entry:?}");
    assert!(left.is_empty(), "{left:?}");
    // An hour later the cap has room again.
    setup.app.clock.advance(Duration::from_secs(3601));
    let (entry, left) = setup.deliver("unknown_sender.eml", "greta@elsewhere.example").await;
    assert_eq!((entry.decision.as_str(), left.len()), ("auto_replied", 1), "{entry:?}");
}
