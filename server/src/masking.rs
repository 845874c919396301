//! Masked addresses: what members' mail looks like when it leaves through
//! the platform, and what relayed mail looks like when it arrives.
//!
//! Every (member, correspondent, conversation) has its own address at the
//! masking domain: a readable prefix from the member's name and 80 random
//! bits, stored in the database (the address encodes nothing, so it cannot
//! be forged from the parties' addresses). Mail in both directions is
//! rewritten to come from that address, and keeps only the header fields
//! that carry content and threading, so no real address of either side
//! travels across.

use std::collections::HashMap;

use data_encoding::BASE32_DNSSEC;
use mail_builder::MessageBuilder;
use mail_builder::headers::Header;
use mail_builder::headers::address::Address;
use sealpost_proto::MessageId;
use time::OffsetDateTime;

use crate::header_fields::{header_fields, split_message};
use crate::state::AppState;
use crate::store::{AccountRecord, NewMail, StoreResult};

/// The header fields a relayed copy keeps: content and threading. All
/// others (Received, Return-Path, Reply-To, Sender, Cc, signatures, list
/// and client fields) may name real addresses or no longer hold.
const KEPT_FIELDS: &[&str] = &[
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-language",
    "auto-submitted",
    "importance",
    "priority",
];

/// The masking domain, when masked mail is on.
pub fn domain(state: &AppState) -> Option<&str> {
    state.settings.masking.domain.as_deref()
}

/// Whether `address` is at the masking domain.
pub fn is_masked(state: &AppState, address: &str) -> bool {
    domain(state).is_some_and(|domain| {
        address.rsplit_once('@').is_some_and(|(_, at)| at.eq_ignore_ascii_case(domain))
    })
}

/// A new conversation's id.
pub fn new_thread() -> String {
    BASE32_DNSSEC.encode(&rand::random::<[u8; 10]>())
}

/// The member's name on masked mail, by the configured pattern.
pub fn member_display_name(state: &AppState, member: &AccountRecord) -> String {
    let name = member.display_name.as_deref().filter(|name| !name.trim().is_empty());
    let organization = state.organization.current().branding.organization_name.clone();
    state
        .settings
        .masking
        .display_name
        .replace("{name}", name.unwrap_or("A member"))
        .replace("{organization}", &organization)
}

/// The address for each (member, correspondent, thread), in the order of
/// `correspondents`, issued now where new.
pub async fn reply_addresses(
    state: &AppState,
    domain: &str,
    member: &AccountRecord,
    correspondents: &[String],
    thread: &str,
) -> StoreResult<Vec<String>> {
    let prefix = slug(member.display_name.as_deref());
    let candidates: Vec<(String, String)> = correspondents
        .iter()
        .map(|correspondent| {
            let token = BASE32_DNSSEC.encode(&rand::random::<[u8; 10]>());
            (correspondent.clone(), format!("{prefix}.{token}@{domain}").to_lowercase())
        })
        .collect();
    state.store.issue_reply_addresses(&member.email, thread, &candidates, state.clock.now()).await
}

/// Lowercase ASCII words of the name joined by dots; "member" without one.
/// Never derived from the real address, which must not show.
fn slug(name: Option<&str>) -> String {
    let words: Vec<String> = name
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut slug = words.join(".");
    slug.truncate(30);
    let slug = slug.trim_end_matches('.');
    if slug.is_empty() { "member".into() } else { slug.to_owned() }
}

/// Conversations that began with a secure message's notification are
/// named after the message.
const NOTIFICATION_THREAD: &str = "message:";

/// The secure message a conversation began with, if it began with one.
pub fn notified_message(thread: &str) -> Option<MessageId> {
    thread.strip_prefix(NOTIFICATION_THREAD).and_then(|id| MessageId::parse(id).ok())
}

/// Masked addresses for answers to a member's notifications, by recipient:
/// none when masking is off or the sender is not a member.
pub async fn notification_reply_addresses(
    state: &AppState,
    sender: &AccountRecord,
    id: &MessageId,
    recipients: &[String],
) -> StoreResult<HashMap<String, String>> {
    let Some(domain) = domain(state) else { return Ok(HashMap::new()) };
    if !state.settings.webmail.is_member(&sender.email) {
        return Ok(HashMap::new());
    }
    let thread = format!("{NOTIFICATION_THREAD}{id}");
    let addresses = reply_addresses(state, domain, sender, recipients, &thread).await?;
    Ok(recipients.iter().cloned().zip(addresses).collect())
}

/// `email` with a `Reply-To` field in front.
pub fn with_reply_to(email: &[u8], name: Option<&str>, reply_to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(email.len() + 100);
    field(&mut out, "Reply-To", &address(name, reply_to));
    out.extend_from_slice(email);
    out
}

/// A new message from a member to one correspondent.
pub struct NewMasked<'a> {
    pub from_name: &'a str,
    pub reply_address: &'a str,
    pub to_name: Option<&'a str>,
    pub to: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    pub date: OffsetDateTime,
}

impl NewMasked<'_> {
    pub fn compose(&self, domain: &str) -> Vec<u8> {
        let message_id = format!("{}@{domain}", BASE32_DNSSEC.encode(&rand::random::<[u8; 16]>()));
        MessageBuilder::new()
            .from(address(Some(self.from_name), self.reply_address))
            .to(address(self.to_name, self.to))
            .subject(self.subject)
            .date(self.date.unix_timestamp())
            .message_id(message_id)
            .text_body(self.text)
            .write_to_vec()
            .unwrap_or_default()
    }
}

/// The mail as relayed: From the masked address under `from_name`, To
/// `to`, with only [`KEPT_FIELDS`] of the original and its body as it was.
pub fn relayed_copy(
    raw: &[u8],
    from_name: Option<&str>,
    from: &str,
    to_name: Option<&str>,
    to: &str,
) -> Vec<u8> {
    let raw = crlf(raw);
    let (header, body) = split_message(&raw);
    let mut out = Vec::with_capacity(raw.len() + 256);
    field(&mut out, "From", &address(from_name, from));
    field(&mut out, "To", &address(to_name, to));
    for field in header_fields(header) {
        if KEPT_FIELDS.iter().any(|kept| kept.eq_ignore_ascii_case(field.name)) {
            // A bare CR is a line end to some mail servers on the way: in a
            // field it would start a field of the sender's choosing there.
            out.extend(bare_cr_replaced(field.raw, b" "));
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend(bare_cr_replaced(body, b"\r\n"));
    out
}

/// `bytes` with each CR that does not begin a CRLF replaced by `with`.
fn bare_cr_replaced(bytes: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (at, &byte) in bytes.iter().enumerate() {
        if byte == b'\r' && bytes.get(at + 1) != Some(&b'\n') {
            out.extend_from_slice(with);
        } else {
            out.push(byte);
        }
    }
    out
}

/// Queues mail for the outbox worker, signed when DKIM is configured.
pub async fn queue(state: &AppState, mails: Vec<NewMail>) -> StoreResult<()> {
    let now = state.clock.now();
    let signed: Vec<NewMail> = mails
        .into_iter()
        .map(|mail| NewMail { email: state.dkim_signed(mail.email, now), ..mail })
        .collect();
    state.store.queue_mail(&signed, now).await?;
    state.outbox.wake();
    Ok(())
}

/// A bare address without a name: `"" <a@b>` reads as a forgery to some filters.
fn address<'a>(name: Option<&str>, email: &str) -> Address<'a> {
    match name.map(str::trim).filter(|name| !name.is_empty()) {
        Some(name) => Address::new_address(Some(name.to_owned()), email.to_owned()),
        None => Address::new_address(None::<String>, email.to_owned()),
    }
}

fn field(out: &mut Vec<u8>, name: &str, value: &Address<'_>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    value.write_header(out, name.len() + 2);
}

/// Bare LF line ends as CRLF, as SMTP and DKIM want them.
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut previous = 0u8;
    for &byte in raw {
        if byte == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        previous = byte;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_cr_in_a_relayed_copy_starts_no_field_and_no_line() {
        let original =
            b"From: tim@alumni.example\r\nSubject: Re: x\rBcc: evil@attacker.example\r\n\
            Content-Type: text/plain;\r\n charset=utf-8\r\n\r\nline\r.\rmore\r\n";
        let copy = relayed_copy(original, None, "m@reply.example", None, "marcus@home.example");
        let text = String::from_utf8(copy).expect("text");
        assert!(text.contains("\r\nSubject: Re: x Bcc: evil@attacker.example\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nline\r\n.\r\nmore\r\n"), "{text:?}");
        let bare =
            text.match_indices('\r').any(|(at, _)| text.as_bytes().get(at + 1) != Some(&b'\n'));
        assert!(!bare, "{text:?}");
    }

    #[test]
    fn a_relayed_copy_keeps_content_and_threading_and_nothing_that_names_anyone() {
        let original = "Return-Path: <tim@alumni.example>\n\
                        Received: from mx.alumni.example by mx.example.org; Mon, 1 Jan 2026\n\
                        From: Tim Baker <tim@alumni.example>\n\
                        To: Marcus Lee via Regency <marcus.lee.abc@reply.example>\n\
                        Cc: ann@alumni.example\n\
                        Reply-To: tim.private@home.example\n\
                        Subject: Re: Reunion\n\
                        Message-ID: <reply-1@alumni.example>\n\
                        In-Reply-To: <first@reply.example>\n\
                        References: <first@reply.example>\n\
                        DKIM-Signature: v=1; d=alumni.example;\n\tb=abc\n\
                        MIME-Version: 1.0\n\
                        Content-Type: text/plain; charset=utf-8\n\
                        \n\
                        I'll be there.\n";
        let copy = relayed_copy(
            original.as_bytes(),
            Some("Tim Baker"),
            "marcus.lee.abc@reply.example",
            None,
            "marcus@home.example",
        );
        let text = String::from_utf8(copy).expect("text");
        assert!(text.starts_with(
            "From: Tim Baker <marcus.lee.abc@reply.example>\r\nTo: <marcus@home.example>\r\n"
        ) || text.starts_with(
            "From: \"Tim Baker\" <marcus.lee.abc@reply.example>\r\nTo: <marcus@home.example>\r\n"
        ), "{text}");
        for kept in [
            "Subject: Re: Reunion",
            "In-Reply-To: <first@reply.example>",
            "Message-ID: <reply-1@alumni.example>",
        ] {
            assert!(text.contains(kept), "{kept} in {text}");
        }
        for gone in ["tim@alumni.example", "ann@", "tim.private", "Received", "DKIM", "\tb=abc"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert!(text.ends_with("\r\n\r\nI'll be there.\r\n"), "{text}");
        assert!(!text.replace("\r\n", "").contains('\n'), "only CRLF line ends");
    }

    #[test]
    fn the_prefix_comes_from_the_name_never_from_the_address() {
        assert_eq!(slug(Some("Marcus O'Neil-Lee")), "marcus.o.neil.lee");
        assert_eq!(slug(Some("Zoë")), "zo");
        assert_eq!(slug(Some("李")), "member");
        assert_eq!(slug(None), "member");
        assert!(slug(Some("a very long name that goes on and on forever")).len() <= 30);
    }
}
