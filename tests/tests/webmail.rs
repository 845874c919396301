//! The Secure Message Center over HTTP, as a browser without JavaScript
//! uses it: a notification's link registers its recipient, sessions are
//! cookies with the right flags, every form needs the browser's CSRF token,
//! and a link opens its own message for its own recipient only.
//! (`webmail_browser.rs` drives the same pages in Chromium.)

use std::time::Duration;

use sealpost_harness::{
    PageClient, TestApp, TestUser, notification_link, sample_message_id, sample_mime,
};
use sealpost_proto::api::{DeliveryReport, DeliveryState, RetrievalChannel};

const PASSWORD: &str = "correct horse battery staple";

struct World {
    app: TestApp,
    sender: TestUser,
}

async fn world_with(configure: impl FnOnce(&mut sealpost_server::settings::Settings)) -> World {
    let app = TestApp::spawn_with(configure).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    World { app, sender }
}

async fn world() -> World {
    world_with(|_| {}).await
}

impl World {
    /// Stores a message and returns its id and each recipient's link, read
    /// from the notification the server mailed them.
    async fn send(&self, recipients: &[&str], subject: &str) -> (String, Vec<String>) {
        let mime = sample_mime(subject, "The results are normal.", b"\x00attached bytes\xff");
        let stored = self.app.store_and_notify(self.sender.token(), recipients, mime).await;
        let mut links = Vec::new();
        for recipient in recipients {
            let id = stored.message_id.clone();
            let mail = self
                .app
                .mail
                .wait_for(recipient, Duration::from_secs(15), |mail| {
                    String::from_utf8_lossy(&mail.data).contains(&id)
                })
                .await
                .unwrap_or_else(|| panic!("no notification reached {recipient}"));
            let link = notification_link(&mail.data).unwrap_or_else(|| {
                panic!("no link in the notification:\n{}", String::from_utf8_lossy(&mail.data))
            });
            links.push(link);
        }
        (stored.message_id, links)
    }

    fn browser(&self) -> PageClient {
        PageClient::new(&self.app.base_url, &self.app.cert_pem).expect("page client")
    }
}

/// Follows `link` and registers through the form; returns the response to the registration.
async fn register(browser: &PageClient, link: &str, name: &str) -> sealpost_harness::Page {
    let page = browser.get(link).await.expect("open the link");
    assert_eq!(page.status, 200, "{}", page.body);
    let (message, token) = link_parts(link);
    let csrf = browser.csrf();
    browser
        .post(
            "/register",
            &[
                ("csrf", &csrf),
                ("message", &message),
                ("t", &token),
                ("name", name),
                ("password", PASSWORD),
                ("accept", "on"),
            ],
        )
        .await
        .expect("register")
}

fn link_parts(link: &str) -> (String, String) {
    let (path, token) = link.split_once("?t=").expect("a token in the link");
    let message = path.rsplit('/').next().expect("a message id").to_owned();
    (message, token.to_owned())
}

#[tokio::test]
async fn a_link_registers_its_recipient_with_a_name_and_a_password_and_opens_the_message() {
    let world = world().await;
    let (id, links) = world.send(&["alice@example.test"], "Your lab results").await;
    let link = &links[0];
    assert!(link.starts_with(&format!("{}/messages/{id}?t=", world.app.origin)), "{link}");

    let browser = world.browser();
    let landing = browser.get(link).await.expect("open the link");
    assert_eq!(landing.status, 200);
    assert!(landing.body.contains("alice@example.test"), "the page names the recipient");
    assert!(!landing.body.contains("The results are normal"), "no content before registering");
    let inputs = ["name=\"name\"", "name=\"password\"", "name=\"accept\""];
    for input in inputs {
        assert!(landing.body.contains(input), "{input} missing:\n{}", landing.body);
    }
    let visible_fields =
        landing.body.matches("<input id=").count() + landing.body.matches("<input name=").count();
    assert_eq!(visible_fields, 3, "three fields: name, password, accept");
    let csrf_cookie = landing
        .set_cookies()
        .into_iter()
        .find(|line| line.starts_with("__Host-sealpost-csrf="))
        .expect("a CSRF cookie")
        .to_owned();
    for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(csrf_cookie.contains(flag), "{flag} missing: {csrf_cookie}");
    }

    let registered = register(&browser, link, "Alice Martin").await;
    assert_eq!(registered.status, 303, "{}", registered.body);
    assert_eq!(registered.location(), Some(format!("/messages/{id}").as_str()));
    let session_cookie = registered
        .set_cookies()
        .into_iter()
        .find(|line| line.starts_with("__Host-sealpost-session="))
        .expect("a session cookie")
        .to_owned();
    for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=43200"] {
        assert!(session_cookie.contains(flag), "{flag} missing: {session_cookie}");
    }

    let message = browser.get(&format!("/messages/{id}")).await.expect("read");
    assert_eq!(message.status, 200, "{}", message.body);
    for shown in ["Your lab results", "The results are normal.", "data.bin", "Example Clinic"] {
        assert!(message.body.contains(shown), "{shown:?} not shown:\n{}", message.body);
    }
    assert!(message.body.contains("Sent by Example Clinic, 1 Test Street, Testville"), "footer");
    let csp = message.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(message.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(message.header("x-frame-options"), Some("DENY"));
    assert_eq!(message.header("cache-control"), Some("no-store"));
    assert_eq!(message.header("referrer-policy"), Some("same-origin"));
    assert_eq!(message.header("x-robots-tag"), Some("noindex, nofollow"));

    let attachment = browser.get(&format!("/messages/{id}/attachments/0")).await.expect("download");
    assert_eq!(attachment.status, 200);
    assert_eq!(attachment.bytes, b"\x00attached bytes\xff", "the attachment's own bytes");
    assert_eq!(attachment.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        attachment.header("content-disposition"),
        Some("attachment; filename=\"data.bin\"; filename*=UTF-8''data.bin")
    );

    // The sender's delivery slip says where the recipient read it.
    let report: DeliveryReport = world
        .app
        .api
        .get(&format!("/api/v1/messages/{id}/deliveries"), Some(world.sender.token()))
        .await
        .expect("request")
        .json();
    let alice = &report.recipients[0];
    assert_eq!(alice.state, DeliveryState::Retrieved);
    assert_eq!(alice.retrieved_with, Some(RetrievalChannel::SecureMessageCenter));
    assert!(alice.notified_at.is_some(), "{alice:?}");

    // The mailbox lists it; signing out ends the session for good.
    let mailbox = browser.get("/mailbox").await.expect("mailbox");
    assert!(mailbox.body.contains("Your lab results"), "{}", mailbox.body);
    let stolen = browser.cookie("__Host-sealpost-session").expect("session");
    let csrf = browser.csrf();
    let signed_out = browser.post("/signout", &[("csrf", &csrf)]).await.expect("sign out");
    assert_eq!(signed_out.status, 303);
    assert_eq!(browser.get("/mailbox").await.expect("mailbox").status, 401);
    browser.set_cookie("__Host-sealpost-session", &stolen);
    assert_eq!(
        browser.get("/mailbox").await.expect("mailbox").status,
        401,
        "a copied cookie is worthless after signing out"
    );

    // Next time the link asks for the password, and the password works.
    let again = world.browser();
    let landing = again.get(link).await.expect("open the link again");
    assert!(landing.body.contains("action=\"/signin\""), "{}", landing.body);
    let csrf = again.csrf();
    let next = format!("/messages/{id}");
    let signed_in = again
        .post(
            "/signin",
            &[
                ("csrf", &csrf),
                ("email", "alice@example.test"),
                ("password", PASSWORD),
                ("next", &next),
            ],
        )
        .await
        .expect("sign in");
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location(), Some(next.as_str()));
}

#[tokio::test]
async fn forms_without_the_browsers_csrf_token_or_from_another_site_are_refused() {
    let world = world().await;
    let (_, links) = world.send(&["alice@example.test"], "CSRF").await;
    let link = &links[0];
    let (message, token) = link_parts(link);
    let post =
        |browser: &'static PageClient, csrf: String, headers: Vec<(&'static str, String)>| {
            let (message, token) = (message.clone(), token.clone());
            async move {
                let fields = [
                    ("csrf", csrf.as_str()),
                    ("message", &message),
                    ("t", &token),
                    ("name", "Alice"),
                    ("password", PASSWORD),
                    ("accept", "on"),
                ];
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                browser.post_with("/register", &fields, &headers).await.expect("post")
            }
        };

    // A browser that never loaded our page has no token to send.
    let stranger: &'static PageClient = Box::leak(Box::new(world.browser()));
    let refused = post(stranger, "made-up".into(), vec![]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("reload the page"), "an explanation: {}", refused.body);

    let browser: &'static PageClient = Box::leak(Box::new(world.browser()));
    browser.get(link).await.expect("open the link");
    let csrf = browser.csrf();
    assert_eq!(csrf.len(), 43);
    let wrong = post(browser, "x".repeat(43), vec![]).await;
    assert_eq!(wrong.status, 403, "another token");
    let cross_origin =
        post(browser, csrf.clone(), vec![("origin", "https://evil.example".into())]).await;
    assert_eq!(cross_origin.status, 403, "another site's Origin");
    let cross_site =
        post(browser, csrf.clone(), vec![("sec-fetch-site", "cross-site".into())]).await;
    assert_eq!(cross_site.status, 403, "a cross-site fetch");
    assert!(browser.cookie("__Host-sealpost-session").is_none(), "no session from any of those");

    let origin = world.app.base_url.clone();
    let accepted = post(browser, csrf.clone(), vec![("origin", origin)]).await;
    assert_eq!(accepted.status, 303, "{}", accepted.body);

    // Signing out needs the token too: another site cannot end the session.
    let forged = browser.post("/signout", &[("csrf", "forged")]).await.expect("post");
    assert_eq!(forged.status, 403);
    assert_eq!(browser.get("/mailbox").await.expect("mailbox").status, 200);
}

#[tokio::test]
async fn a_link_opens_its_own_message_for_its_own_recipient_only() {
    let world = world().await;
    let (shared, links) = world.send(&["alice@example.test", "bob@example.test"], "For both").await;
    let (alices_link, bobs_link) = (&links[0], &links[1]);
    let (private, carols) = world.send(&["carol@example.test"], "For Carol").await;
    let (_, alices_token) = link_parts(alices_link);

    // Alice's token names Alice on the page, never Bob, and opens no other message.
    let stranger = world.browser();
    let landing = stranger.get(alices_link).await.expect("link");
    assert!(landing.body.contains("alice@example.test") && !landing.body.contains("bob@"));
    let elsewhere =
        stranger.get(&format!("/messages/{private}?t={alices_token}")).await.expect("reuse");
    assert_eq!(elsewhere.status, 303, "another message's link is not a registration");
    assert_eq!(elsewhere.location(), Some(format!("/signin?next=/messages/{private}").as_str()));
    let mut tampered = alices_token.clone();
    tampered.replace_range(..1, if tampered.starts_with('A') { "B" } else { "A" });
    let forged = stranger.get(&format!("/messages/{shared}?t={tampered}")).await.expect("tampered");
    assert_eq!(forged.status, 303, "a changed token opens nothing");
    let (_, carols_token) = link_parts(&carols[0]);
    let registered = stranger
        .post(
            "/register",
            &[
                ("csrf", &stranger.csrf()),
                ("message", &shared),
                ("t", &carols_token),
                ("name", "Carol"),
                ("password", PASSWORD),
                ("accept", "on"),
            ],
        )
        .await
        .expect("register with another message's token");
    assert_eq!(registered.status, 403, "{}", registered.body);

    // Carol, signed in, opening Alice's link sees whose it is, not the message.
    let carol = world.browser();
    assert_eq!(register(&carol, &carols[0], "Carol").await.status, 303);
    let alices_as_carol = carol.get(alices_link).await.expect("Alice's link as Carol");
    assert_eq!(alices_as_carol.status, 200);
    assert!(alices_as_carol.body.contains("This message is for alice@example.test"));
    assert!(!alices_as_carol.body.contains("The results are normal"));
    let bob = world.browser();
    assert_eq!(register(&bob, bobs_link, "Bob").await.status, 303);
    // Bob may read the message he received, not Carol's, and Carol's
    // message looks exactly like one that does not exist.
    assert_eq!(bob.get(&format!("/messages/{shared}")).await.expect("shared").status, 200);
    let hidden = bob.get(&format!("/messages/{private}")).await.expect("private");
    let missing = bob.get("/messages/00000000000000000000000000").await.expect("missing");
    assert_eq!((hidden.status, missing.status), (404, 404));
    assert_eq!(
        bob.get(&format!("/messages/{private}/attachments/0")).await.expect("attachment").status,
        404
    );
    assert!(!hidden.body.contains("For Carol"));
}

#[tokio::test]
async fn sessions_expire_as_configured_and_failed_sign_ins_are_throttled() {
    let world = world_with(|settings| {
        settings.webmail.session_hours = 2;
        settings.limits.failed_logins_per_address_per_15_minutes = 3;
    })
    .await;
    let (_, links) = world.send(&["alice@example.test"], "Expiry").await;
    let browser = world.browser();
    let registered = register(&browser, &links[0], "Alice").await;
    assert!(registered.set_cookies().iter().any(|line| line.contains("Max-Age=7200")));
    assert_eq!(browser.get("/mailbox").await.expect("mailbox").status, 200);
    world.app.clock.advance(Duration::from_secs(2 * 3600 + 1));
    let expired = browser.get("/mailbox").await.expect("mailbox");
    assert_eq!(expired.status, 401);
    assert!(expired.body.contains("Sign in"), "{}", expired.body);

    let guesser = world.browser();
    guesser.get("/signin").await.expect("sign-in page");
    let csrf = guesser.csrf();
    for _ in 0..3 {
        let wrong = guesser
            .post(
                "/signin",
                &[("csrf", &csrf), ("email", "alice@example.test"), ("password", "wrong guess")],
            )
            .await
            .expect("sign in");
        assert_eq!(wrong.status, 401, "{}", wrong.body);
        assert!(wrong.body.contains("not right"), "{}", wrong.body);
    }
    let throttled = guesser
        .post(
            "/signin",
            &[("csrf", &csrf), ("email", "alice@example.test"), ("password", PASSWORD)],
        )
        .await
        .expect("sign in");
    assert_eq!(throttled.status, 429, "even the right password waits: {}", throttled.body);
    assert!(throttled.header("retry-after").is_some());
}

/// The message a link opens, as its recipient reads it after registering.
async fn registered_reader(world: &World, link: &str, name: &str) -> PageClient {
    let browser = world.browser();
    assert_eq!(register(&browser, link, name).await.status, 303);
    browser
}

#[tokio::test]
async fn a_reply_is_a_new_secure_message_to_the_conversation_only() {
    let world = world().await;
    let (original, links) =
        world.send(&["alice@example.test", "bob@example.test"], "Appointment").await;
    let alice = registered_reader(&world, &links[0], "Alice Martin").await;

    let reply_all = alice.get(&format!("/messages/{original}/reply?all=1")).await.expect("form");
    assert_eq!(reply_all.status, 200, "{}", reply_all.body);
    assert!(reply_all.body.contains("value=\"sender@example.test\""), "{}", reply_all.body);
    assert!(reply_all.body.contains("value=\"bob@example.test\""), "Bob in Cc");
    assert!(reply_all.body.contains("Re: Appointment"));
    assert!(reply_all.body.contains("&gt; The results are normal."), "the original quoted");
    assert_eq!(alice.get("/compose").await.expect("compose").status, 403, "not a member");

    let csrf = alice.csrf();
    let fields = |to: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("reply_to", original.clone()),
            ("to", to.to_owned()),
            ("cc", "bob@example.test".to_owned()),
            ("subject", "Re: Appointment".to_owned()),
            ("body", "Tuesday works for me.".to_owned()),
        ]
    };
    let as_pairs =
        |fields: &[(&'static str, String)]| -> Vec<(&'static str, String)> { fields.to_vec() };
    let stranger_fields = as_pairs(&fields("mallory@elsewhere.test"));
    let pairs: Vec<(&str, &str)> = stranger_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = alice.post_multipart("/compose", &pairs, &[]).await.expect("post");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("did not take part in this conversation"), "{}", refused.body);
    assert!(refused.body.contains("Tuesday works for me."), "the draft is kept");

    let reply_fields = as_pairs(&fields("Sam <sender@example.test>"));
    let pairs: Vec<(&str, &str)> = reply_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let form_file: &[u8] = b"%PDF-1.4 signed consent form";
    let sent = alice
        .post_multipart(
            "/compose",
            &pairs,
            &[("attachment", "consent form.pdf", "application/pdf", form_file)],
        )
        .await
        .expect("send");
    assert_eq!(sent.status, 303, "{}", sent.body);
    let location = sent.location().expect("to the sent message").to_owned();
    let reply_id = location
        .strip_prefix("/messages/")
        .and_then(|rest| rest.strip_suffix("?sent=1"))
        .expect("the new message")
        .to_owned();
    let shown = alice.get(&location).await.expect("sent message");
    assert!(shown.body.contains("Sent securely"), "{}", shown.body);
    assert!(shown.body.contains("delivery-slip"), "the sender sees the delivery slip");

    // The original sender gets a notification for it, and its content
    // threads under the original, with the attachment.
    for recipient in ["sender@example.test", "bob@example.test"] {
        let id = reply_id.clone();
        world
            .app
            .mail
            .wait_for(recipient, Duration::from_secs(15), |mail| {
                String::from_utf8_lossy(&mail.data).contains(&id)
            })
            .await
            .unwrap_or_else(|| panic!("no notification of the reply reached {recipient}"));
    }
    let content = world.app.content(Some(world.sender.token()), &reply_id).await;
    assert_eq!(content.status, 200, "the sender may read the reply");
    // Alice's delivery slip: the sender fetched it with the desktop app, Bob was notified.
    // The relay holds the notification a moment before the server hears its answer and
    // records it, so the slip is read until it shows that.
    let row = |slip: &str, who: &str| {
        slip.split("<tr class=")
            .skip(1)
            .find(|row| row.contains(who))
            .unwrap_or_default()
            .to_owned()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let slip = loop {
        let slip = alice.get(&format!("/messages/{reply_id}")).await.expect("the reply").body;
        if row(&slip, "bob@example.test").contains("Notified")
            || tokio::time::Instant::now() > deadline
        {
            break slip;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let row = |who: &str| row(&slip, who);
    assert!(row("sender@example.test").contains("Retrieved with the desktop app"), "{slip}");
    assert!(row("bob@example.test").contains("Notified"), "{slip}");
    assert!(row("bob@example.test").contains("UTC"), "with the time: {slip}");
    let mime = content.text();
    let parent = sample_message_id("Appointment");
    assert!(mime.contains(&format!("In-Reply-To: <{parent}>")), "threaded: {mime}");
    assert!(mime.contains(&format!("References: <{parent}>")), "threaded: {mime}");
    assert!(mime.contains("From: \"Alice Martin\" <alice@example.test>"), "{mime}");
    assert!(mime.contains("consent form.pdf"), "{mime}");
    assert!(mime.contains("Tuesday works for me."), "{mime}");
}

#[tokio::test]
async fn members_write_new_secure_messages_to_anyone() {
    let world = world_with(|settings| {
        settings.webmail.member_domains = vec!["clinic.test".into()];
    })
    .await;
    world.app.create_password_account("dana@clinic.test", "Dana", PASSWORD).await;
    let dana = world.browser();
    dana.get("/signin").await.expect("sign-in page");
    let csrf = dana.csrf();
    let signed_in = dana
        .post("/signin", &[("csrf", &csrf), ("email", "dana@clinic.test"), ("password", PASSWORD)])
        .await
        .expect("sign in");
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let form = dana.get("/compose").await.expect("compose");
    assert_eq!(form.status, 200, "{}", form.body);
    let sent = dana
        .post_multipart(
            "/compose",
            &[
                ("csrf", &csrf),
                ("to", "zed@elsewhere.test"),
                ("subject", "Welcome"),
                ("body", "Your first secure message."),
            ],
            &[],
        )
        .await
        .expect("send");
    assert_eq!(sent.status, 303, "{}", sent.body);
    let notification = world
        .app
        .mail
        .wait_for("zed@elsewhere.test", Duration::from_secs(15), |_| true)
        .await
        .expect("a notification for the new recipient");
    let link = notification_link(&notification.data).expect("a registration link");
    let zed = world.browser();
    let landing = zed.get(&link).await.expect("open the link");
    assert!(landing.body.contains("zed@elsewhere.test"), "{}", landing.body);
}

#[tokio::test]
async fn members_write_through_the_organization_from_a_masked_address() {
    const MEMBER: &str = "marcus@regency.test";
    let world = world_with(|s| {
        s.masking.domain = Some("reply.example.test".into());
        s.inbound.listen = Some("127.0.0.1:0".parse().expect("address"));
        s.webmail.members = vec![MEMBER.into()];
        s.admin.emails = vec!["admin@regency.test".into()];
    })
    .await;
    let app = &world.app;
    let admin = app.register_agent("admin@regency.test", "laptop").await;
    let csv = "email,name,group\ntim@alumni.example,Tim Baker,Class of 2010\n";
    app.import_directory(&admin, csv).await.expect_status(200).expect("imported");

    // Someone who is not a member is not offered the page, nor let in.
    app.create_password_account("guest@example.test", "Guest", PASSWORD).await;
    let guest = world.browser();
    guest.get("/signin").await.expect("sign-in page");
    assert_eq!(sign_in_as(&guest, "guest@example.test", PASSWORD).await, 303);
    let mailbox = guest.get("/mailbox").await.expect("mailbox");
    assert!(!mailbox.body.contains("/write-masked"), "{}", mailbox.body);
    let refused = guest.get("/write-masked").await.expect("form");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("Only the organization"), "{}", refused.body);
    let csrf = guest.csrf();
    let fields = [
        ("csrf", csrf.as_str()),
        ("groups", "Class of 2010"),
        ("subject", "Hello"),
        ("text", "Not from a member."),
    ];
    assert_eq!(guest.post("/write-masked", &fields).await.expect("post").status, 403);

    // The member finds it next to Write, with what it does said plainly.
    app.create_password_account(MEMBER, "Marcus Wells", PASSWORD).await;
    let marcus = world.browser();
    marcus.get("/signin").await.expect("sign-in page");
    assert_eq!(sign_in_as(&marcus, MEMBER, PASSWORD).await, 303);
    let mailbox = marcus.get("/mailbox").await.expect("mailbox");
    assert!(mailbox.body.contains("href=\"/write-masked\""), "{}", mailbox.body);
    let form = marcus.get("/write-masked").await.expect("form");
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("Write through Example Clinic"), "{}", form.body);
    assert!(form.body.contains("an address at reply.example.test"), "{}", form.body);
    for label in ["for=\"to\"", "for=\"groups\"", "for=\"subject\"", "for=\"text\""] {
        assert!(form.body.contains(label), "{label} missing:\n{}", form.body);
    }

    // A group the directory does not have: the form again, as typed.
    let csrf = marcus.csrf();
    let unknown = marcus
        .post(
            "/write-masked",
            &[
                ("csrf", &csrf),
                ("groups", "Class of 1999"),
                ("subject", "Reunion dinner"),
                ("text", "We meet on the 12th."),
            ],
        )
        .await
        .expect("post");
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(unknown.body.contains("id=\"form-error\""), "{}", unknown.body);
    assert!(unknown.body.contains("no group"), "{}", unknown.body);
    assert!(unknown.body.contains("value=\"Reunion dinner\""), "the subject is kept");
    assert!(unknown.body.contains("We meet on the 12th."), "the text is kept");
    assert!(unknown.body.contains("value=\"Class of 1999\""), "the groups are kept");

    let sent = marcus
        .post(
            "/write-masked",
            &[
                ("csrf", &csrf),
                ("to", ""),
                ("groups", "Class of 2010"),
                ("subject", "Reunion dinner"),
                ("text", "We meet on the 12th."),
            ],
        )
        .await
        .expect("send");
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.body.contains("id=\"masked-sent\""), "{}", sent.body);
    assert!(sent.body.contains("1 correspondent,"), "{}", sent.body);
    assert!(sent.body.contains("tim@alumni.example"), "{}", sent.body);

    let mail = app
        .mail
        .wait_for("tim@alumni.example", Duration::from_secs(15), |mail| {
            String::from_utf8_lossy(&mail.data).contains("Reunion dinner")
        })
        .await
        .expect("Tim gets the mail");
    let raw = String::from_utf8_lossy(&mail.data);
    let header = raw.split("\r\n\r\n").next().unwrap_or_default().replace("\r\n ", " ");
    let from = header
        .lines()
        .find_map(|line| line.strip_prefix("From:"))
        .unwrap_or_else(|| panic!("no From:\n{raw}"));
    let address = from.rsplit_once('<').map_or(from, |(_, rest)| rest).trim().trim_end_matches('>');
    assert!(address.ends_with("@reply.example.test"), "{from}");
    assert!(raw.contains("We meet on the 12th."), "{raw}");
    assert!(!raw.to_lowercase().contains(MEMBER), "the member's address travels nowhere:\n{raw}");
    assert!(!mail.mail_from.contains(MEMBER), "{}", mail.mail_from);
}

#[tokio::test]
async fn the_account_page_changes_the_password_and_signs_devices_out() {
    let world = world().await;
    let (_, links) = world.send(&["alice@example.test"], "Account").await;
    let first = registered_reader(&world, &links[0], "Alice").await;
    let second = world.browser();
    second.get("/signin").await.expect("sign-in page");
    assert_eq!(sign_in_as_alice(&second, PASSWORD).await, 303);
    let agent = world.app.register_agent("alice@example.test", "Alice's laptop").await;

    let account = first.get("/account").await.expect("account page");
    assert_eq!(account.status, 200, "{}", account.body);
    for shown in [
        "Alice&#x27;s laptop",
        "Desktop app",
        "(this browser)",
        "sealpost:&#x2f;&#x2f;register?email=alice%40example.test&amp;server=https%3A%2F%2F",
    ] {
        assert!(account.body.contains(shown), "{shown:?} missing:\n{}", account.body);
    }
    assert_eq!(account.body.matches("class=\"link revoke\"").count(), 3, "two browsers, one app");

    let csrf = first.csrf();
    let wrong = first
        .post(
            "/account/password",
            &[("csrf", &csrf), ("current", "not it"), ("new", "a brand new password")],
        )
        .await
        .expect("post");
    assert!(wrong.body.contains("current password is not right"), "{}", wrong.body);
    let changed = first
        .post(
            "/account/password",
            &[("csrf", &csrf), ("current", PASSWORD), ("new", "a brand new password")],
        )
        .await
        .expect("post");
    assert!(changed.body.contains("Your password was changed"), "{}", changed.body);
    assert_eq!(
        second.get("/mailbox").await.expect("mailbox").status,
        401,
        "other browsers signed out"
    );
    assert_eq!(first.get("/mailbox").await.expect("mailbox").status, 200, "this one stays");
    let third = world.browser();
    third.get("/signin").await.expect("sign-in page");
    assert_eq!(sign_in_as_alice(&third, PASSWORD).await, 401, "the old password is gone");
    assert_eq!(sign_in_as_alice(&third, "a brand new password").await, 303);

    // The API lists the browsers with the apps, each for what it is.
    let listed: Vec<sealpost_proto::api::Device> =
        world.app.api.get("/api/v1/devices", Some(agent.token())).await.expect("request").json();
    let kinds: Vec<_> = listed.iter().filter(|d| d.revoked_at.is_none()).map(|d| d.kind).collect();
    use sealpost_proto::api::DeviceKind::{Agent, Browser};
    assert_eq!(kinds.iter().filter(|k| **k == Browser).count(), 2, "{listed:?}");
    assert_eq!(kinds.iter().filter(|k| **k == Agent).count(), 1, "{listed:?}");

    // The desktop app, signed out from here, is refused by the API.
    let devices = first.get("/account").await.expect("account page").body;
    let agent_row =
        devices.split("<tr>").find(|row| row.contains("Alice&#x27;s laptop")).expect("row");
    let action =
        agent_row.split("action=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("form");
    let revoked = first.post(action, &[("csrf", &csrf)]).await.expect("revoke");
    assert!(revoked.body.contains("The device was signed out."), "{}", revoked.body);
    let refused = world.app.api.get("/api/v1/devices", Some(agent.token())).await.expect("request");
    assert_eq!(refused.status, 401);

    let everywhere =
        first.post("/account/sign-out-everywhere", &[("csrf", &csrf)]).await.expect("post");
    assert_eq!(everywhere.status, 303);
    assert_eq!(first.get("/mailbox").await.expect("mailbox").status, 401);
    assert_eq!(third.get("/mailbox").await.expect("mailbox").status, 401);
}

/// Signs in as Alice; the status of the answer.
async fn sign_in_as_alice(browser: &PageClient, password: &str) -> u16 {
    sign_in_as(browser, "alice@example.test", password).await
}

/// Signs in; the status of the answer.
async fn sign_in_as(browser: &PageClient, email: &str, password: &str) -> u16 {
    let csrf = browser.csrf();
    browser
        .post("/signin", &[("csrf", &csrf), ("email", email), ("password", password)])
        .await
        .expect("sign in")
        .status
}

/// The code the server emailed `email` after `after` emails to it.
async fn emailed_code(world: &World, email: &str, after: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let codes: Vec<String> = world
            .app
            .mail
            .messages()
            .await
            .iter()
            .filter(|mail| mail.rcpt_to.iter().any(|to| to == email))
            .filter_map(|mail| {
                sealpost_proto::verification::find_code(&mail.data, &world.app.origin)
            })
            .collect();
        if codes.len() > after {
            return codes[after].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no code emailed to {email}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_emailed_code_sets_a_password_for_desktop_users_and_forgotten_ones() {
    let world = world().await;
    // Bob registered the desktop app (its code was the first email to him).
    let bobs_app = world.app.register_agent("bob@example.test", "Bob's laptop").await;
    let (message, links) = world.send(&["bob@example.test"], "For the app user").await;
    let bob = world.browser();
    let landing = bob.get(&links[0]).await.expect("open the link");
    assert_eq!(landing.status, 200);
    assert!(landing.body.contains("id=\"uses-app\""), "{}", landing.body);
    let csrf = bob.csrf();
    let next = format!("/messages/{message}");
    let asked = bob
        .post("/signin/code", &[("csrf", &csrf), ("email", "bob@example.test"), ("next", &next)])
        .await
        .expect("ask for a code");
    assert_eq!(asked.status, 200, "{}", asked.body);
    let code = emailed_code(&world, "bob@example.test", 1).await;
    let verify = |code: String| {
        let (csrf, next) = (csrf.clone(), next.clone());
        let bob = &bob;
        async move {
            bob.post(
                "/signin/code/verify",
                &[
                    ("csrf", &csrf),
                    ("email", "bob@example.test"),
                    ("code", &code),
                    ("password", PASSWORD),
                    ("next", &next),
                ],
            )
            .await
            .expect("verify")
        }
    };
    let wrong = verify("000000".into()).await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.body.contains("The code is wrong"), "{}", wrong.body);
    let right = verify(code).await;
    assert_eq!(right.status, 303, "{}", right.body);
    assert_eq!(right.location(), Some(next.as_str()));
    assert_eq!(bob.get(&next).await.expect("read").status, 200);
    let still = world.app.api.get("/api/v1/devices", Some(bobs_app.token())).await.expect("api");
    assert_eq!(still.status, 200, "the desktop app stays signed in");

    // A forgotten password is replaced the same way; other browsers are signed out.
    let other = world.browser();
    other.get("/signin").await.expect("sign-in page");
    assert_eq!(sign_in_as(&other, "bob@example.test", PASSWORD).await, 303);
    let forgetful = world.browser();
    forgetful.get("/signin/code").await.expect("code page");
    let csrf = forgetful.csrf();
    forgetful
        .post("/signin/code", &[("csrf", &csrf), ("email", "bob@example.test")])
        .await
        .expect("ask for a code");
    let code = emailed_code(&world, "bob@example.test", 2).await;
    let reset = forgetful
        .post(
            "/signin/code/verify",
            &[
                ("csrf", &csrf),
                ("email", "bob@example.test"),
                ("code", &code),
                ("password", "another long password"),
            ],
        )
        .await
        .expect("reset");
    assert_eq!(reset.status, 303, "{}", reset.body);
    assert_eq!(other.get("/mailbox").await.expect("mailbox").status, 401);
    assert_eq!(forgetful.get("/mailbox").await.expect("mailbox").status, 200);
}

#[tokio::test]
async fn a_sender_recalls_here_and_recalled_or_expired_messages_say_so() {
    let world = world_with(|settings| {
        // The clock moves on by days: everyone stays signed in.
        settings.webmail.session_hours = 24 * 30;
        settings.accounts.access_token_ttl_seconds = 30 * 24 * 3600;
    })
    .await;
    let (original, links) = world.send(&["alice@example.test"], "Lifecycle").await;
    let alice = registered_reader(&world, &links[0], "Alice Martin").await;

    // Alice answers with a reply readable for one day, and another one.
    let reply = |subject: &'static str, expires: &'static str| {
        let (alice, original) = (&alice, original.clone());
        async move {
            let csrf = alice.csrf();
            let fields = [
                ("csrf", csrf.as_str()),
                ("reply_to", original.as_str()),
                ("to", "sender@example.test"),
                ("subject", subject),
                ("body", "See you then."),
                ("expires", expires),
            ];
            let sent = alice.post_multipart("/compose", &fields, &[]).await.expect("send");
            assert_eq!(sent.status, 303, "{}", sent.body);
            let location = sent.location().expect("to the sent message").to_owned();
            location.trim_start_matches("/messages/").trim_end_matches("?sent=1").to_owned()
        }
    };
    let short_lived = reply("Re: Lifecycle (brief)", "1").await;
    let to_recall = reply("Re: Lifecycle", "").await;
    let page = alice.get(&format!("/messages/{short_lived}")).await.expect("page");
    assert!(page.body.contains("id=\"expiry\""), "the expiry is shown: {}", page.body);

    // The original's sender sees on the slip that Alice replied.
    let slip: DeliveryReport = world
        .app
        .api
        .get(&format!("/api/v1/messages/{original}/deliveries"), Some(world.sender.token()))
        .await
        .expect("request")
        .json();
    assert!(slip.recipients[0].replied_at.is_some(), "{slip:?}");

    // Alice recalls one from its page; its recipient can no longer read it.
    let page = alice.get(&format!("/messages/{to_recall}")).await.expect("page");
    assert!(page.body.contains("id=\"recall\""), "the sender may recall: {}", page.body);
    let csrf = alice.csrf();
    let recalled = alice
        .post(&format!("/messages/{to_recall}/recall"), &[("csrf", csrf.as_str())])
        .await
        .expect("recall");
    assert_eq!(recalled.status, 303, "{}", recalled.body);
    let page = alice.get(&format!("/messages/{to_recall}")).await.expect("page");
    assert_eq!(page.status, 410);
    assert!(page.body.contains("recalled this message"), "{}", page.body);
    assert!(page.body.contains("delivery-slip") && !page.body.contains("id=\"recall\""));
    assert!(!page.body.contains("See you then."), "the content is gone");
    let content = world.app.content(Some(world.sender.token()), &to_recall).await;
    assert_eq!(content.status, 410);
    // Only the sender recalls: the recipient's attempt on the original finds nothing.
    let csrf = alice.csrf();
    let refused = alice
        .post(&format!("/messages/{original}/recall"), &[("csrf", csrf.as_str())])
        .await
        .expect("recall");
    assert_eq!(refused.status, 404);

    // Two days on, the brief one has expired for everyone, and says so.
    world.app.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let page = alice.get(&format!("/messages/{short_lived}")).await.expect("page");
    assert_eq!(page.status, 410);
    assert!(page.body.contains("expired on"), "{}", page.body);
    let print = alice.get(&format!("/messages/{short_lived}/print")).await.expect("print");
    assert_eq!(print.status, 410);
    let expired = world.app.content(Some(world.sender.token()), &short_lived).await;
    assert_eq!(expired.status, 410, "{}", expired.text());
}
