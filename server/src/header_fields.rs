//! The header block of a raw message, field by field, as DKIM signing and
//! the relayed copies of masked mail both need it.

/// Splits at the first empty line (CRLF); a message without one is all header.
pub fn split_message(email: &[u8]) -> (&[u8], &[u8]) {
    match email.windows(4).position(|window| window == b"\r\n\r\n") {
        Some(at) => (&email[..at + 2], &email[at + 4..]),
        None => (email, &[]),
    }
}

/// One header field.
pub struct Field<'a> {
    /// Trimmed; a field whose name is not UTF-8 is skipped.
    pub name: &'a str,
    /// The whole field, folded lines included, with its final line end.
    pub raw: &'a [u8],
}

/// The fields of a header block, in order. A field ends at a line end not
/// followed by a space or tab (a folded continuation).
pub fn header_fields(header: &[u8]) -> Vec<Field<'_>> {
    let mut fields = Vec::new();
    let mut start = 0;
    for (index, &byte) in header.iter().enumerate() {
        if byte == b'\n' && !matches!(header.get(index + 1), Some(b' ' | b'\t')) {
            let raw = &header[start..=index];
            if let Some(colon) = raw.iter().position(|&b| b == b':')
                && let Ok(name) = std::str::from_utf8(&raw[..colon])
            {
                fields.push(Field { name: name.trim(), raw });
            }
            start = index + 1;
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_fields_are_read_whole() {
        let header = b"From: a@x\r\nSubject: one\r\n two\r\nTo: b@y\r\n";
        let fields = header_fields(header);
        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        assert_eq!(names, ["From", "Subject", "To"]);
        assert_eq!(fields[1].raw, b"Subject: one\r\n two\r\n");
    }

    #[test]
    fn the_body_starts_after_the_first_empty_line() {
        assert_eq!(
            split_message(b"A: 1\r\n\r\nbody\r\n\r\nmore"),
            (&b"A: 1\r\n"[..], &b"body\r\n\r\nmore"[..])
        );
        assert_eq!(split_message(b"A: 1\r\n"), (&b"A: 1\r\n"[..], &b""[..]));
    }
}
