//! The organization's admins change branding, sender, Secure Message Center
//! URL, templates and relay through the API; the next notification and the
//! next automated email use the new values.

use std::time::Duration;

use sealpost_harness::{MailCapture, TestApp, sample_mime};
use sealpost_proto::api::{
    ErrorBody, ErrorCode, OrganizationSettings, OrganizationUpdate, SmtpRelayUpdate,
};
use sealpost_proto::notification::parse;

const PATH: &str = "/api/v1/admin/organization";

async fn app() -> TestApp {
    TestApp::spawn_with(|s| {
        s.outbox.worker = false;
        s.admin.emails = vec!["it@example.test".into()];
    })
    .await
}

#[tokio::test]
async fn only_admins_see_and_change_the_organization() {
    let app = app().await;
    let admin = app.register_agent("it@example.test", "it laptop").await;
    let member = app.register_agent("member@example.test", "laptop").await;

    assert_eq!(app.api.get(PATH, None).await.expect("request").status, 401);
    let refused = app.api.get(PATH, Some(member.token())).await.expect("request");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json::<ErrorBody>().code, ErrorCode::Forbidden);
    let update = OrganizationUpdate { footer: Some("hijacked".into()), ..Default::default() };
    let refused = app
        .api
        .send(app.api.http().put(app.api.url(PATH)).bearer_auth(member.token()).json(&update))
        .await;
    assert_eq!(refused.expect("request").status, 403);

    let settings: OrganizationSettings =
        app.api.get(PATH, Some(admin.token())).await.expect("request").json();
    assert_eq!(settings.organization_name, "Example Clinic");
    assert_eq!(settings.footer, "Sent by Example Clinic, 1 Test Street, Testville");
    assert_eq!(settings.center_url, app.origin);
    assert!(!settings.smtp.password_set);
    assert_eq!(settings.text_template, None);
}

#[tokio::test]
async fn changes_apply_to_the_next_notification_and_email() {
    let app = app().await;
    let admin = app.register_agent("it@example.test", "it laptop").await;
    let put = |update: OrganizationUpdate| {
        app.api.send(app.api.http().put(app.api.url(PATH)).bearer_auth(admin.token()).json(&update))
    };

    let update = OrganizationUpdate {
        footer: Some("Sent by ABC Medical, 123 ABC Street, Beverly Hills, CA 90210, call (555) 555-7323".into()),
        sender_name: Some("ABC Medical Secure Mail".into()),
        center_url: Some("https://secure.abc-medical.example/".into()),
        text_template: Some("{{ sender }} sent you a message.\nRead it: {{ read_url }}\n\n{{ footer }}\n".into()),
        html_template: Some("<p>{{ sender }} sent you a message.</p><p><a href=\"{{ read_url }}\">Read it</a></p><p>{{ footer }}</p>".into()),
        ..Default::default()
    };
    let response = put(update).await.expect("request").expect_status(200).expect("saved");
    let settings: OrganizationSettings = response.json();
    assert_eq!(settings.center_url, "https://secure.abc-medical.example");
    assert_eq!(settings.sender_name, "ABC Medical Secure Mail");

    let sender = app.register_agent("doctor@example.test", "laptop").await;
    let code_mail = app
        .mail
        .wait_for("doctor@example.test", Duration::from_secs(5), |_| true)
        .await
        .expect("verification email");
    let code_text = String::from_utf8_lossy(&code_mail.data);
    assert!(code_text.contains("ABC Medical Secure Mail"), "the new sender name:\n{code_text}");

    let stored: sealpost_proto::api::StoredMessage = app
        .store_and_notify(
            sender.token(),
            &["pat@patients.example"],
            sample_mime("Results", "secret", b""),
        )
        .await;
    let issued = &stored.notifications[0];
    let link = format!("https://secure.abc-medical.example/messages/{}", stored.message_id);
    assert_eq!(
        issued.text_body,
        format!(
            "doctor@example.test sent you a message.\nRead it: {link}\n\nSent by ABC Medical, 123 ABC Street, Beverly Hills, CA 90210, call (555) 555-7323\n"
        )
    );
    // minijinja escapes '/' as &#x2f; too, which every HTML reader decodes.
    let html = issued.html_body.replace("&#x2f;", "/");
    assert!(html.contains(&format!("<a href=\"{link}\">")), "{html}");

    // A broken template is refused and changes nothing.
    let broken = OrganizationUpdate {
        html_template: Some("<p>{{ sender </p>".into()),
        ..Default::default()
    };
    let refused = put(broken).await.expect("request");
    assert_eq!(refused.status, 400);
    assert!(refused.json::<ErrorBody>().message.starts_with("html_template"));
    let bad_address =
        OrganizationUpdate { sender_address: Some("nobody".into()), ..Default::default() };
    let refused = put(bad_address).await.expect("request");
    assert_eq!(refused.status, 400);
    assert!(refused.json::<ErrorBody>().message.contains("from_address"));

    // Empty templates go back to the built-in placeholder.
    let reset = OrganizationUpdate {
        text_template: Some(String::new()),
        html_template: Some(String::new()),
        ..Default::default()
    };
    put(reset).await.expect("request").expect_status(200).expect("reset");
    let stored: sealpost_proto::api::StoredMessage = app
        .api
        .upload(sender.token(), &["pat@patients.example"], sample_mime("Results", "secret", b""))
        .await
        .expect("upload")
        .json();
    assert!(stored.notifications[0].text_body.contains("sent you a secure message"));
}

#[tokio::test]
async fn the_relay_can_be_switched_to_the_organizations_own() {
    let app = app().await;
    let admin = app.register_agent("it@example.test", "it laptop").await;
    let own_relay = MailCapture::start().await.expect("second relay");
    let update = OrganizationUpdate {
        smtp: Some(SmtpRelayUpdate {
            host: "127.0.0.1".into(),
            port: own_relay.port(),
            security: "none".into(),
            username: None,
            password: None,
        }),
        ..Default::default()
    };
    app.api
        .send(app.api.http().put(app.api.url(PATH)).bearer_auth(admin.token()).json(&update))
        .await
        .expect("request")
        .expect_status(200)
        .expect("saved");
    app.store_and_notify(admin.token(), &["pat@patients.example"], sample_mime("s", "b", b""))
        .await;
    assert_eq!(app.outbox.step().await.expect("step").sent, 1);
    let mail = own_relay
        .wait_for("pat@patients.example", Duration::from_secs(5), |m| parse(&m.data).is_ok())
        .await;
    assert!(mail.is_some(), "the notification left through the organization's relay");
    assert!(app.mail.wait_for("pat@patients.example", Duration::ZERO, |_| true).await.is_none());

    let reset = OrganizationUpdate { use_configured_smtp: true, ..Default::default() };
    let settings: OrganizationSettings = app
        .api
        .send(app.api.http().put(app.api.url(PATH)).bearer_auth(admin.token()).json(&reset))
        .await
        .expect("request")
        .json();
    assert_eq!(settings.smtp.port, app.mail.port());
}

#[tokio::test]
async fn blocklist_results_reach_the_admin_api_and_metrics() {
    // A resolver that never answers: every lookup fails, which must show as
    // unknown (-1), never as "not listed".
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let resolver = silent.local_addr().expect("address");
    let app = TestApp::spawn_with(|s| {
        s.admin.emails = vec!["it@example.test".into()];
        s.blocklists.enabled = true;
        s.blocklists.sending_ips = vec!["192.0.2.25".parse().expect("ip")];
        s.blocklists.zones = vec!["zen.spamhaus.org".into()];
        s.blocklists.resolver = Some(resolver);
        s.blocklists.timeout_seconds = 1;
    })
    .await;
    let admin = app.register_agent("it@example.test", "it laptop").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status: sealpost_proto::api::BlocklistStatus = app
            .api
            .get("/api/v1/admin/blocklists", Some(admin.token()))
            .await
            .expect("request")
            .json();
        if status.report.is_some() || tokio::time::Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.enabled);
    let report = status.report.expect("a check finished");
    assert_eq!(report.listings.len(), 1);
    assert!(!report.listings[0].listed && report.listings[0].error.is_some(), "{report:?}");
    let metrics = app.api.get("/metrics", None).await.expect("request").text();
    assert!(
        metrics.contains(
            "sealpost_sending_ip_blocklisted{ip=\"192.0.2.25\",zone=\"zen.spamhaus.org\"} -1"
        ),
        "{metrics}"
    );
}
