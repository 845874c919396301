//! Parsing of user input, once, at the edge.

use crate::error::{ApiError, ApiResult};
use axum::http::StatusCode;
use sealpost_proto::api::ErrorCode;
use sealpost_proto::notification::normalize_address;

/// A normalised address that can also be mailed to.
pub fn email_address(input: &str) -> ApiResult<String> {
    normalize_address(input)
        .filter(|address| address.len() <= 254 && address.parse::<lettre::Address>().is_ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidEmail,
                format!("{:?} is not an email address such as alice@example.org.", truncate(input)),
            )
        })
}

pub fn password(input: &str, min_length: usize) -> ApiResult<&str> {
    let length = input.chars().count();
    if length < min_length || length > 1024 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WeakPassword,
            format!("Choose a password of at least {min_length} characters (at most 1024)."),
        ));
    }
    Ok(input)
}

/// A display or device name: trimmed, 1 to 100 characters, no control characters.
pub fn display_name(input: &str) -> ApiResult<String> {
    let trimmed = input.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "Enter a name of 1 to 100 characters on one line, without control characters.",
        ));
    }
    Ok(trimmed.to_owned())
}

fn truncate(input: &str) -> String {
    input.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_or_refused() {
        assert_eq!(email_address(" Alice@Example.TEST ").expect("valid"), "alice@example.test");
        for bad in [
            "",
            "alice",
            "@example.test",
            "alice@",
            "a b@example.test",
            "alice@example.test\r\nBcc: x@y.z",
        ] {
            assert!(email_address(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_refuse_control_characters() {
        assert_eq!(display_name("  Alice ").expect("valid"), "Alice");
        assert!(display_name("Alice\nBcc: x").is_err());
        assert!(display_name("   ").is_err());
    }
}
