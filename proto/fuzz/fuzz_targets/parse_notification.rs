//! Feeds arbitrary bytes to the notification and verification-email parsers.
//!
//! Beyond "never panics", it checks a round-trip property: whatever parses
//! must parse again to the same value after its header fields are rewritten
//! by `header_fields`, so reading and writing agree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost_proto::notification::parse;
use sealpost_proto::verification::find_code;

fuzz_target!(|data: &[u8]| {
    let _ = find_code(data, "https://sealpost.example.org");
    let Ok(notification) = parse(data) else {
        return;
    };
    let mut rewritten = String::new();
    for field in notification.header_fields() {
        rewritten.push_str(&format!("{}: {}\r\n", field.name, field.value));
    }
    rewritten.push_str("\r\n");
    let reparsed = parse(rewritten.as_bytes()).expect("rewritten header fields parse");
    assert_eq!(reparsed, notification);
});
