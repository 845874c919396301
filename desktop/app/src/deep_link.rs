//! `sealpost://register?email=…&server=…` links, which the Secure Message
//! Center offers to people who installed the app: they fill in the wizard.
//! Nothing else is accepted, and nothing is done without the person: the
//! wizard still shows what was filled in and asks for the password. A
//! server is only taken on the address's own domain, so that a link cannot
//! steer the mailbox password to a stranger's server.

use tauri::Url;

use crate::ipc::Prefill;

pub const SCHEME: &str = "sealpost";

/// What a link fills in, or `None` when it is not a registration link.
pub fn prefill_from(link: &str) -> Option<Prefill> {
    let url = Url::parse(link).ok()?;
    // `sealpost://register?…` parses with "register" as the host.
    if url.scheme() != SCHEME || url.host_str() != Some("register") {
        return None;
    }
    let mut prefill = Prefill::default();
    for (key, value) in url.query_pairs() {
        let value = value.trim();
        if value.is_empty() || value.len() > 320 {
            continue;
        }
        match key.as_ref() {
            "email" if value.contains('@') => prefill.email = Some(value.to_owned()),
            "server" if value.starts_with("https://") => prefill.server = Some(value.to_owned()),
            _ => {}
        }
    }
    // The mailbox password goes where the server's discovery says; a link
    // must not be able to send it to another organization's server.
    if prefill
        .server
        .as_deref()
        .is_some_and(|server| !same_domain(server, prefill.email.as_deref()))
    {
        prefill.server = None;
    }
    Some(prefill)
}

/// Whether `server`'s host is the address's domain or below it.
fn same_domain(server: &str, email: Option<&str>) -> bool {
    let Some(domain) = email.and_then(|email| email.rsplit_once('@')).map(|(_, domain)| domain)
    else {
        return false;
    };
    let Some(host) = Url::parse(server).ok().and_then(|url| url.host_str().map(str::to_owned))
    else {
        return false;
    };
    let (host, domain) = (host.to_ascii_lowercase(), domain.to_ascii_lowercase());
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// The first registration link among a command line's arguments (a second
/// start of the app, or the first one, opened by the link).
pub fn prefill_from_args<S: AsRef<str>>(args: &[S]) -> Option<Prefill> {
    args.iter().find_map(|arg| prefill_from(arg.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_link_fills_in_the_address_and_server() {
        let prefill = prefill_from(
            "sealpost://register?email=dana%40example.org&server=https%3A%2F%2Fsealpost.example.org",
        )
        .expect("a registration link");
        assert_eq!(prefill.email.as_deref(), Some("dana@example.org"));
        assert_eq!(prefill.server.as_deref(), Some("https://sealpost.example.org"));
    }

    #[test]
    fn other_links_and_unsafe_values_are_ignored() {
        assert_eq!(prefill_from("https://register?email=a@b.example"), None);
        assert_eq!(prefill_from("sealpost://signout?email=a@b.example"), None);
        let prefill = prefill_from("sealpost://register?email=nobody&server=http://plain.example")
            .expect("a registration link");
        assert_eq!(prefill, Prefill::default(), "no address, no plain-text server");
        let elsewhere = prefill_from(
            "sealpost://register?email=dana%40example.org&server=https%3A%2F%2Fsealpost.example.net",
        )
        .expect("a registration link");
        assert_eq!(elsewhere.email.as_deref(), Some("dana@example.org"));
        assert_eq!(elsewhere.server, None, "another domain's server is not taken from a link");
        let lookalike = prefill_from(
            "sealpost://register?email=dana%40example.org&server=https%3A%2F%2Fevilexample.org",
        )
        .expect("a registration link");
        assert_eq!(lookalike.server, None);
        assert_eq!(
            prefill_from_args(&["/usr/bin/sealpost", "sealpost://register?email=a@b.example"])
                .and_then(|prefill| prefill.email),
            Some("a@b.example".to_owned())
        );
        assert_eq!(prefill_from_args(&["/usr/bin/sealpost", "--minimized"]), None);
    }
}
