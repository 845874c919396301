//! The verification-code email (see `NOTIFICATION.md`, "Verification email").
//!
//! The server mails a six-digit code to prove an address; the agent finds
//! that email in the inbox itself, so the person never types the code. The
//! code travels both in the text (for people) and in a header (for the agent).

use crate::api::HeaderField;
use crate::notification::{Branding, HEADER_ORIGIN, normalize_origin, top_level_header_text};

pub const HEADER_VERIFICATION_CODE: &str = "X-Sealpost-Verification-Code";

/// Number of digits in a verification code.
pub const CODE_DIGITS: usize = 6;

/// Subject, plain text and header fields of the email carrying a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeEmail {
    pub subject: String,
    pub text_body: String,
    pub headers: Vec<HeaderField>,
}

pub fn code_email(code: &str, origin: &str, branding: &Branding) -> CodeEmail {
    let organization = match branding.organization_name.trim() {
        "" => "Sealpost",
        name => name,
    };
    let mut text_body = format!(
        "Your {organization} verification code is:\r\n\r\n    {code}\r\n\r\n\
         It confirms this email address for the secure message server at {origin}.\r\n\
         If you did not ask for it, you can ignore this email.\r\n",
    );
    for paragraph in
        [&branding.footer, &branding.legal_disclaimer].into_iter().map(|text| text.trim())
    {
        if !paragraph.is_empty() {
            text_body.push_str("\r\n");
            text_body.push_str(&paragraph.replace('\n', "\r\n"));
            text_body.push_str("\r\n");
        }
    }
    CodeEmail {
        subject: format!("{organization} verification code: {code}"),
        text_body,
        headers: vec![
            HeaderField { name: HEADER_VERIFICATION_CODE.to_owned(), value: code.to_owned() },
            HeaderField { name: HEADER_ORIGIN.to_owned(), value: origin.to_owned() },
        ],
    }
}

/// Finds the code in a received verification email from `origin`.
///
/// `None` when the email is not a verification email, names another server,
/// or its code is not six digits.
pub fn find_code(raw: &[u8], origin: &str) -> Option<String> {
    let expected_origin = normalize_origin(origin)?;
    let headers = top_level_header_text(raw);
    let header_text = |name: &str| {
        headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    if normalize_origin(header_text(HEADER_ORIGIN)?)? != expected_origin {
        return None;
    }
    let code = header_text(HEADER_VERIFICATION_CODE)?;
    (code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_email(content: &CodeEmail) -> Vec<u8> {
        let mut email = format!(
            "From: noreply@x.example\r\nTo: a@x.example\r\nSubject: {}\r\n",
            content.subject
        );
        for field in &content.headers {
            email.push_str(&format!("{}: {}\r\n", field.name.to_lowercase(), field.value));
        }
        email.push_str("\r\n");
        email.push_str(&content.text_body);
        email.into_bytes()
    }

    #[test]
    fn the_code_is_found_for_the_right_server_only() {
        let branding =
            Branding { footer: "Sent by Example Clinic".to_owned(), ..Branding::default() };
        let content = code_email("042517", "https://sealpost.example.org", &branding);
        assert!(content.text_body.contains("042517"));
        assert!(content.text_body.contains("Sent by Example Clinic"));
        let raw = raw_email(&content);
        assert_eq!(find_code(&raw, "https://SEALPOST.example.org/"), Some("042517".to_owned()));
        assert_eq!(find_code(&raw, "https://other.example.org"), None);
        assert_eq!(find_code(b"Subject: hello\r\n\r\nbody", "https://sealpost.example.org"), None);
    }

    #[test]
    fn malformed_codes_are_ignored() {
        let content = code_email("12345x", "https://s.example", &Branding::default());
        assert_eq!(find_code(&raw_email(&content), "https://s.example"), None);
    }
}
