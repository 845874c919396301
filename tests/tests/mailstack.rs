//! The real mail stack every delivery test builds on: Postfix accepts mail
//! for the stack's users only and delivers into Dovecot over LMTP.

use std::time::{Duration, Instant};

use sealpost_harness::MailStack;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A plain SMTP dialogue; returns the reply to each command (greeting first).
async fn smtp(stack: &MailStack, mail_from: &str, rcpt_to: &str, data: &str) -> Vec<String> {
    let stream = TcpStream::connect(stack.smtp_addr()).await.expect("connect to Postfix");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut replies = Vec::new();
    async fn reply(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    ) -> String {
        let mut text = String::new();
        while let Some(line) = lines.next_line().await.expect("read reply") {
            text.push_str(&line);
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        text
    }
    replies.push(reply(&mut lines).await);
    let mut commands = vec![
        "EHLO tests.example.test".to_owned(),
        format!("MAIL FROM:<{mail_from}>"),
        format!("RCPT TO:<{rcpt_to}>"),
    ];
    if !data.is_empty() {
        commands.push("DATA".to_owned());
    }
    for command in commands {
        write.write_all(format!("{command}\r\n").as_bytes()).await.expect("send");
        let answer = reply(&mut lines).await;
        let refused = answer.starts_with('5') || answer.starts_with('4');
        replies.push(answer);
        if refused {
            return replies;
        }
    }
    if !data.is_empty() {
        write.write_all(format!("{data}\r\n.\r\nQUIT\r\n").as_bytes()).await.expect("send data");
        replies.push(reply(&mut lines).await);
    }
    replies
}

#[tokio::test]
async fn mail_sent_to_postfix_arrives_in_the_dovecot_inbox() {
    let stack = MailStack::start(&["alice", "bob"]).await.expect("mail stack");
    let alice = stack.user("alice").address.clone();
    let replies = smtp(
        &stack,
        "sender@elsewhere.example",
        &alice,
        "From: sender@elsewhere.example\r\nTo: alice@example.test\r\nSubject: Hello through the stack\r\n\r\nbody",
    )
    .await;
    assert!(replies.last().expect("reply").starts_with("250"), "{replies:?}");
    let messages = stack
        .wait_for_messages(&alice, "INBOX", 1, Duration::from_secs(10))
        .await
        .expect("delivered");
    let text = String::from_utf8_lossy(&messages[0].raw);
    assert!(text.contains("Subject: Hello through the stack"), "{text}");
    assert!(
        stack.messages(&stack.user("bob").address, "INBOX").await.expect("bob's inbox").is_empty()
    );
}

#[tokio::test]
async fn unknown_recipients_and_other_domains_are_refused_at_rcpt() {
    let stack = MailStack::start(&["alice"]).await.expect("mail stack");
    let unknown = smtp(&stack, "a@elsewhere.example", "nobody@example.test", "").await;
    assert!(unknown.last().expect("reply").starts_with("550"), "unknown user: {unknown:?}");
    let relay = smtp(&stack, "a@elsewhere.example", "someone@gmail.example", "").await;
    assert!(relay.last().expect("reply").starts_with("554"), "relaying: {relay:?}");
}

#[tokio::test]
async fn special_use_folders_exist_and_append_keeps_flags() {
    let stack = MailStack::start(&["alice"]).await.expect("mail stack");
    let alice = stack.user("alice").address.clone();
    for folder in ["Sent", "Drafts", "Trash", "Junk", "Archive"] {
        assert!(stack.messages(&alice, folder).await.expect(folder).is_empty());
    }
    stack
        .append(&alice, "Sent", b"Subject: kept\r\n\r\nbody\r\n", &["\\Seen", "\\Flagged"])
        .await
        .expect("append");
    let sent = stack.messages(&alice, "Sent").await.expect("Sent");
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].flags.contains(&"\\Seen".to_owned())
            && sent[0].flags.contains(&"\\Flagged".to_owned())
    );
}

#[tokio::test]
async fn stacks_start_quickly_side_by_side() {
    async fn timed_start() -> (MailStack, Duration) {
        let started = Instant::now();
        let stack = MailStack::start(&["alice", "bob"]).await.expect("mail stack");
        (stack, started.elapsed())
    }
    let started = Instant::now();
    let (a, b, c) = tokio::join!(timed_start(), timed_start(), timed_start());
    let elapsed = started.elapsed();
    println!("three mail stacks started in {elapsed:?} (each: {:?}, {:?}, {:?})", a.1, b.1, c.1);
    // Loose on purpose: a busy CI machine must not fail this; the print shows the real figure.
    assert!(elapsed < Duration::from_secs(5), "start-up took {elapsed:?}");
    let stacks = [a.0, b.0, c.0];
    let mut ports: Vec<_> = stacks
        .iter()
        .flat_map(|stack| {
            [stack.smtp_addr(), stack.imap_addr(), stack.imaps_addr(), stack.lmtp_addr()]
        })
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 12, "every stack has its own ports");
    // Each stack answers for its own users only, with its own passwords.
    for stack in &stacks {
        assert!(stack.messages("bob", "INBOX").await.expect("bob's inbox").is_empty());
    }
}

#[tokio::test]
async fn plain_imap_offers_starttls() {
    let stack = MailStack::start(&["alice"]).await.expect("mail stack");
    let stream = TcpStream::connect(stack.imap_addr()).await.expect("connect to IMAP");
    let mut greeting = String::new();
    BufReader::new(stream).read_line(&mut greeting).await.expect("greeting");
    assert!(greeting.starts_with("* OK") && greeting.contains("STARTTLS"), "{greeting}");
}

#[tokio::test]
async fn smtp_can_be_suspended_and_resumed_without_losing_the_mailboxes() {
    let stack = MailStack::start(&["alice"]).await.expect("mail stack");
    let alice = stack.user("alice").address.clone();
    stack.suspend_smtp().await.expect("suspend");
    assert!(TcpStream::connect(stack.smtp_addr()).await.is_err(), "connections are refused");
    stack.resume_smtp().await.expect("resume");
    let replies = smtp(&stack, "a@elsewhere.example", &alice, "Subject: after\r\n\r\nbody").await;
    assert!(replies.last().expect("reply").starts_with("250"), "{replies:?}");
    stack.wait_for_messages(&alice, "INBOX", 1, Duration::from_secs(10)).await.expect("delivered");
}

#[tokio::test]
async fn dropping_the_stack_stops_its_servers() {
    let stack = MailStack::start(&["alice"]).await.expect("mail stack");
    let (smtp_addr, imap_addr) = (stack.smtp_addr(), stack.imap_addr());
    drop(stack);
    assert!(TcpStream::connect(smtp_addr).await.is_err(), "Postfix is gone");
    assert!(TcpStream::connect(imap_addr).await.is_err(), "Dovecot is gone");
}
