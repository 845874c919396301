//! Composing the notification emails the outbox sends.
//!
//! A notification keeps the sender's own subject, recipients (To and Cc as
//! written; Bcc recipients get the same headers and stay hidden), Message-ID
//! and threading headers, all read from the uploaded message. Its From is
//! always the authenticated sender's address, whatever the upload claims. The
//! body is the placeholder and the `X-Sealpost-*` fields come from `proto`,
//! which also writes the email.

use sealpost_proto::notification::EmailEnvelope;
pub use sealpost_proto::notification::SenderHeaders;
use time::OffsetDateTime;

use crate::store::AccountRecord;

/// The envelope of every notification of one message the server sends.
pub fn envelope(
    headers: &SenderHeaders,
    sender: &AccountRecord,
    recipients: &[String],
    now: OffsetDateTime,
    message_id_domain: &str,
    fallback_id: &str,
) -> EmailEnvelope {
    EmailEnvelope::of_message(
        headers,
        &sender.email,
        sender.display_name.as_deref(),
        recipients,
        // When the notification is written, not the draft's own Date: a
        // sender's skewed clock must not make the notification look forged
        // (spam filters score Dates far from the Received time).
        now.unix_timestamp(),
        format!("{fallback_id}@{message_id_domain}"),
    )
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
