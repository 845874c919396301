//! Composing the notification emails the outbox sends.
//!
//! A notification keeps the sender's own subject, recipients (To and Cc as
//! written; Bcc recipients get the same headers and stay hidden), Message-ID
//! and threading headers, all read from the uploaded message. Its From is
//! always the authenticated sender's address, whatever the upload claims. The
//! body is the placeholder and the `X-Sealpost-*` fields come from `proto`,
//! which also writes the email.

use mail_parser::{Address, HeaderValue, MessageParser};
use sealpost_proto::notification::EmailEnvelope;
use time::OffsetDateTime;

use crate::store::AccountRecord;

/// The headers of an uploaded message that its notifications repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderHeaders {
    /// The display name on the upload's From, if it names the sender's own address.
    pub from_name: Option<String>,
    pub to: Vec<(Option<String>, String)>,
    pub cc: Vec<(Option<String>, String)>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

impl SenderHeaders {
    /// Reads them from the start of the raw upload; what is missing or
    /// unreadable stays empty, since the upload itself was accepted as is.
    pub fn parse(head: &[u8], sender_email: &str) -> Self {
        let Some(message) = MessageParser::default().parse_headers(head) else {
            return Self::default();
        };
        let from_name = message
            .from()
            .and_then(Address::first)
            .filter(|from| from.address().is_some_and(|a| a.eq_ignore_ascii_case(sender_email)))
            .and_then(|from| from.name())
            .map(str::to_owned);
        let ids = |value: &HeaderValue<'_>| -> Vec<String> {
            value
                .as_text_list()
                .map(|ids| ids.iter().map(|id| id.to_string()).collect())
                .unwrap_or_default()
        };
        Self {
            from_name,
            to: addresses(message.to()),
            cc: addresses(message.cc()),
            subject: message.subject().map(str::to_owned),
            message_id: message.message_id().map(str::to_owned),
            in_reply_to: ids(message.in_reply_to()).pop(),
            references: ids(message.references()),
        }
    }
}

fn addresses(list: Option<&Address<'_>>) -> Vec<(Option<String>, String)> {
    list.map(|list| {
        list.iter()
            .filter_map(|addr| {
                let address = addr.address()?.to_owned();
                Some((addr.name().map(str::to_owned), address))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The envelope of every notification of one message.
pub fn envelope(
    headers: &SenderHeaders,
    sender: &AccountRecord,
    recipients: &[String],
    now: OffsetDateTime,
    message_id_domain: &str,
    fallback_id: &str,
) -> EmailEnvelope {
    let from_name = headers.from_name.clone().or_else(|| sender.display_name.clone());
    // Without To or Cc in the upload, every recipient is named openly: the
    // sender listed them, and an email with no visible recipient looks like spam.
    let to = if headers.to.is_empty() && headers.cc.is_empty() {
        recipients.iter().map(|address| (None, address.clone())).collect()
    } else {
        headers.to.clone()
    };
    EmailEnvelope {
        from: (from_name, sender.email.clone()),
        to,
        cc: headers.cc.clone(),
        subject: headers.subject.clone().unwrap_or_default(),
        // When the notification is written, not the draft's own Date: a
        // sender's skewed clock must not make the notification look forged
        // (spam filters score Dates far from the Received time).
        date: now.unix_timestamp(),
        message_id: headers
            .message_id
            .clone()
            .unwrap_or_else(|| format!("{fallback_id}@{message_id_domain}")),
        in_reply_to: headers.in_reply_to.clone(),
        references: headers.references.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccountId;

    fn sender() -> AccountRecord {
        AccountRecord {
            id: AccountId::from_stored("a".into()),
            email: "sam@clinic.example".into(),
            display_name: Some("Sam".into()),
            password_hash: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_senders_headers_carry_over_but_from_is_the_account() {
        let head = b"From: \"Dr. Sam\" <SAM@clinic.example>\r\nTo: Pat <pat@patients.example>, lee@patients.example\r\n\
Cc: <cc@patients.example>\r\nSubject: =?utf-8?q?R=C3=A9sultats?=\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <orig.1@clinic.example>\r\nIn-Reply-To: <parent@patients.example>\r\n\
References: <root@patients.example> <parent@patients.example>\r\n\r\nbody";
        let headers = SenderHeaders::parse(head, "sam@clinic.example");
        let envelope = envelope(&headers, &sender(), &[], OffsetDateTime::UNIX_EPOCH, "x", "y");
        assert_eq!(envelope.from, (Some("Dr. Sam".into()), "sam@clinic.example".into()));
        assert_eq!(
            envelope.to,
            [
                (Some("Pat".into()), "pat@patients.example".into()),
                (None, "lee@patients.example".into())
            ]
        );
        assert_eq!(envelope.cc, [(None, "cc@patients.example".into())]);
        assert_eq!(envelope.subject, "Résultats");
        assert_eq!(envelope.date, 0, "the Date is when the notification is written");
        assert_eq!(envelope.message_id, "orig.1@clinic.example");
        assert_eq!(envelope.in_reply_to.as_deref(), Some("parent@patients.example"));
        assert_eq!(envelope.references, ["root@patients.example", "parent@patients.example"]);
    }

    #[test]
    fn a_forged_from_and_missing_headers_fall_back_to_the_account() {
        let headers = SenderHeaders::parse(
            b"From: CEO <ceo@clinic.example>\r\n\r\nbody",
            "sam@clinic.example",
        );
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid time");
        let recipients = ["pat@patients.example".to_owned()];
        let envelope = envelope(&headers, &sender(), &recipients, now, "sealpost.example", "m1");
        assert_eq!(envelope.from, (Some("Sam".into()), "sam@clinic.example".into()));
        assert_eq!(envelope.to, [(None, "pat@patients.example".into())]);
        assert_eq!(envelope.subject, "");
        assert_eq!(envelope.date, 1_800_000_000);
        assert_eq!(envelope.message_id, "m1@sealpost.example");
    }
}
