//! Feeds arbitrary bytes as the JSON body of each API request the server
//! takes, through the server's own extractor and then the checks its
//! handlers make before touching storage.
//!
//! Beyond "never panics": a body is either taken or refused with a client
//! error (4xx) whose message says what is wrong; what the checks let
//! through is what the handlers rely on.

#![no_main]

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use sealpost_proto::api::{
    CodeRequest, CreateAccount, DeviceCredential, EnrollDevice, MaskedMail, OrganizationUpdate,
    RefreshTokens, SenderNotified, UploadMetadata,
};
use sealpost_server::error::{ApiError, ApiJson};
use sealpost_server::routes::directory::group_name;
use sealpost_server::routes::input::{display_name, email_address, password};
use sealpost_server::routes::masked::checked_subject;
use sealpost_server::routes::messages::{NewUpload, recipients};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

const MAX_RECIPIENTS: usize = 5;
const MIN_PASSWORD: usize = 10;

/// The body as the server's `ApiJson` extractor takes it.
fn extract<T: DeserializeOwned + Send + 'static>(body: &[u8]) -> Option<T> {
    let request = Request::post("/api/v1/x")
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let extracted = futures_executor(ApiJson::<T>::from_request(request, &()));
    match extracted {
        Ok(ApiJson(value)) => Some(value),
        Err(error) => {
            check_refusal(&error);
            None
        }
    }
}

/// The extractor's future with the whole body at hand: it never waits.
fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a body in memory kept the extractor waiting"),
    }
}

fn check_refusal(error: &ApiError) {
    assert!(
        error.status.is_client_error(),
        "{} for a client's body: {}",
        error.status,
        error.message
    );
    assert!(!error.message.trim().is_empty(), "a refusal that says nothing");
}

fn checked<T>(result: Result<T, ApiError>) -> Option<T> {
    result.inspect_err(check_refusal).ok()
}

fn check_address(address: &str) {
    assert_eq!(address, address.trim().to_lowercase(), "addresses are normalised");
    assert!(address.len() <= 254 && address.contains('@'), "{address:?}");
    assert!(!address.chars().any(|c| c.is_control() || c.is_whitespace()), "{address:?}");
}

fn check_name(name: &str) {
    assert_eq!(name, name.trim());
    assert!(!name.is_empty() && name.chars().count() <= 100, "{name:?}");
    assert!(!name.chars().any(char::is_control), "{name:?}");
}

fn check_recipients(list: &[String]) {
    assert!(!list.is_empty() && list.len() <= MAX_RECIPIENTS, "{list:?}");
    for (index, address) in list.iter().enumerate() {
        check_address(address);
        assert!(!list[..index].contains(address), "{address} listed twice");
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the request, the rest is its body.
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    match choice % 9 {
        0 => {
            if let Some(request) = extract::<CodeRequest>(body) {
                checked(email_address(&request.email)).inspect(|a| check_address(a));
            }
        }
        1 => {
            if let Some(request) = extract::<CreateAccount>(body) {
                checked(email_address(&request.email)).inspect(|a| check_address(a));
                if let Some(accepted) = checked(password(&request.password, MIN_PASSWORD)) {
                    assert!((MIN_PASSWORD..=1024).contains(&accepted.chars().count()));
                }
                if let Some(name) = &request.display_name {
                    checked(display_name(name)).inspect(|n| check_name(n));
                }
            }
        }
        2 => {
            if let Some(request) = extract::<EnrollDevice>(body) {
                checked(email_address(&request.email)).inspect(|a| check_address(a));
                checked(display_name(&request.device_name)).inspect(|n| check_name(n));
                if let DeviceCredential::Password(secret) = &request.credential {
                    let _ = checked(password(secret, MIN_PASSWORD));
                }
            }
        }
        3 => {
            let _ = extract::<RefreshTokens>(body);
        }
        4 => {
            if let Some(metadata) = extract::<UploadMetadata>(body) {
                let both = metadata.expires_at.is_some() && metadata.never_expires;
                if let Some(upload) = checked(NewUpload::from_metadata(metadata, MAX_RECIPIENTS)) {
                    assert!(!both, "both an expiry and none were taken");
                    check_recipients(&upload.recipients);
                    if let Some(key) = &upload.client_key {
                        assert!((1..=100).contains(&key.len()) && !key.contains(char::is_control));
                    }
                    let now = OffsetDateTime::from_unix_timestamp(1_795_428_000).expect("a time");
                    if let Some(Some(at)) = checked(upload.expires_at(now, 30)) {
                        assert!(at > now, "an expiry in the past was taken");
                    }
                }
            }
        }
        5 => {
            if let Some(report) = extract::<SenderNotified>(body) {
                checked(recipients(&report.recipients, MAX_RECIPIENTS))
                    .inspect(|list| check_recipients(list));
            }
        }
        6 => {
            if let Some(request) = extract::<MaskedMail>(body) {
                if let Some(subject) = checked(checked_subject(&request)) {
                    assert!(!subject.is_empty() && !subject.contains(['\r', '\n']));
                }
                for address in &request.to {
                    checked(email_address(address)).inspect(|a| check_address(a));
                }
                for group in &request.groups {
                    let name = group_name(group);
                    assert_eq!(name, group_name(&name), "group names are stored normalised");
                }
            }
        }
        7 => {
            let _ = extract::<OrganizationUpdate>(body);
        }
        _ => {
            // A body that is not JSON at all, with the wrong content type.
            let request = Request::post("/api/v1/x")
                .header("content-type", "text/plain")
                .body(Body::from(body.to_vec()))
                .expect("a request");
            let refused = futures_executor(ApiJson::<CodeRequest>::from_request(request, &()));
            let Err(error) = refused else { panic!("a text/plain body was taken as JSON") };
            check_refusal(&error);
        }
    }
});
