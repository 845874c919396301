//! Feeds arbitrary bytes to the notification and verification-email
//! parsers, and what parses to the verifier, as the desktop agent does with
//! every message in a mailbox.
//!
//! Beyond "never panics", it checks a round-trip property: whatever parses
//! must parse again to the same value after its header fields are rewritten
//! by `header_fields`, so reading and writing agree; and the verdict on a
//! notification depends on its signed values alone.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealpost_proto::api::WellKnown;
use sealpost_proto::notification::{TrustedServer, parse};
use sealpost_proto::verification::find_code;

/// The server of the golden corpus, whose genuine notifications seed this target.
fn trusted() -> &'static TrustedServer {
    static TRUSTED: OnceLock<TrustedServer> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        let document: WellKnown =
            serde_json::from_str(include_str!("../../proto/tests/corpus/trusted.json"))
                .expect("the corpus's well-known document");
        TrustedServer::from_well_known(&document).expect("a trusted server")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = find_code(data, "https://sealpost.example.org");
    let Ok(notification) = parse(data) else {
        return;
    };
    let recipient = notification.fields.recipient.clone();
    let verdict = notification.verify(trusted(), &recipient);
    let mut rewritten = String::new();
    for field in notification.header_fields() {
        rewritten.push_str(&format!("{}: {}\r\n", field.name, field.value));
    }
    rewritten.push_str("\r\n");
    let reparsed = parse(rewritten.as_bytes()).expect("rewritten header fields parse");
    assert_eq!(reparsed, notification);
    assert_eq!(
        reparsed.verify(trusted(), &recipient).is_ok(),
        verdict.is_ok(),
        "rewriting the fields changed the verdict"
    );
});
