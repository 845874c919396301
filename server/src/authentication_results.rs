//! Whether arriving mail authenticated: SPF, DKIM and DMARC.
//!
//! Where the front MTA checked already, its `Authentication-Results` header
//! field (RFC 8601) says so. Only a field whose authentication service
//! identifier is configured as trusted counts, and only the topmost such
//! field: the front MTA adds its own on top and must remove any it did not
//! write, so fields further down (or with other identifiers) may come from
//! the sender and mean nothing.
//!
//! Otherwise the server checks for itself ([`Verifier`]), with the DNS and
//! the address of the client that handed the mail over: the SMTP peer, or,
//! when the peer is a front MTA, the client named in the front MTA's own
//! `Received` field.

/// One method's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    Pass,
    Fail,
    /// softfail, neutral, none, temperror, permerror, policy: not a pass,
    /// not a proven forgery.
    Other,
    /// The method is not in the trusted field, or there is no trusted field.
    #[default]
    Missing,
}

impl Outcome {
    fn parse(result: &str) -> Self {
        match result.to_ascii_lowercase().as_str() {
            "pass" => Self::Pass,
            "fail" => Self::Fail,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Other => "other",
            Self::Missing => "missing",
        }
    }
}

/// SPF, DKIM and DMARC as the trusted front MTA saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authentication {
    /// The trusted field's authentication service, when there was one.
    pub authserv_id: Option<String>,
    pub spf: Outcome,
    /// Pass when any signature passed.
    pub dkim: Outcome,
    pub dmarc: Outcome,
}

impl Authentication {
    /// Reads the topmost field of `fields` (unfolded header values, top
    /// first) written by one of the `trusted` services.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = &'a str>, trusted: &[String]) -> Self {
        for field in fields {
            let text = without_comments(field);
            let mut parts = text.split(';');
            let authserv_id = parts.next().unwrap_or_default().split_whitespace().next();
            let Some(authserv_id) = authserv_id else { continue };
            if !trusted.iter().any(|id| id.eq_ignore_ascii_case(authserv_id)) {
                continue;
            }
            let mut found = Self { authserv_id: Some(authserv_id.to_owned()), ..Self::default() };
            for part in parts {
                let Some((method, result)) =
                    part.split_whitespace().next().and_then(|pair| pair.split_once('='))
                else {
                    continue;
                };
                let outcome = Outcome::parse(result);
                let slot = match method.to_ascii_lowercase().as_str() {
                    "spf" => &mut found.spf,
                    "dkim" => &mut found.dkim,
                    "dmarc" => &mut found.dmarc,
                    _ => continue,
                };
                // Several DKIM signatures: one that passed is enough.
                if *slot == Outcome::Missing || outcome == Outcome::Pass {
                    *slot = outcome;
                }
            }
            return found;
        }
        Self::default()
    }

    /// The From domain's owner says this mail is not theirs.
    pub fn dmarc_failed(&self) -> bool {
        self.dmarc == Outcome::Fail
    }

    /// Something proved where the mail came from: DMARC passed, or SPF or
    /// DKIM did.
    pub fn any_pass(&self) -> bool {
        [self.spf, self.dkim, self.dmarc].contains(&Outcome::Pass)
    }

    /// "spf=pass dkim=missing dmarc=pass", for the audit log.
    pub fn describe(&self) -> String {
        format!(
            "spf={} dkim={} dmarc={}",
            self.spf.as_str(),
            self.dkim.as_str(),
            self.dmarc.as_str()
        )
    }
}

/// Checks SPF, DKIM and DMARC of arriving mail against the DNS.
pub struct Verifier {
    authenticator: mail_auth::MessageAuthenticator,
    /// The name this server gives itself, for SPF's `%{r}` macro.
    hostname: String,
}

/// Who handed a message over, as SPF sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub ip: std::net::IpAddr,
    pub helo: String,
}

impl Verifier {
    /// Resolves through `servers` (address and port), or through the
    /// system's resolvers when there are none.
    pub fn new(servers: &[std::net::SocketAddr], hostname: &str) -> std::io::Result<Self> {
        use mail_auth::hickory_resolver::config::{
            ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
        };
        let authenticator = if servers.is_empty() {
            mail_auth::MessageAuthenticator::new_system_conf()
        } else {
            let name_servers = servers
                .iter()
                .map(|server| {
                    let connection = |protocol| {
                        let mut connection = ConnectionConfig::new(protocol);
                        connection.port = server.port();
                        connection
                    };
                    NameServerConfig::new(
                        server.ip(),
                        true,
                        vec![connection(ProtocolConfig::Udp), connection(ProtocolConfig::Tcp)],
                    )
                })
                .collect();
            let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
            let mut options = ResolverOpts::default();
            options.timeout = std::time::Duration::from_secs(5);
            mail_auth::MessageAuthenticator::new(config, options)
        }
        .map_err(|error| std::io::Error::other(format!("DNS resolver: {error}")))?;
        Ok(Self { authenticator, hostname: hostname.to_owned() })
    }

    /// SPF for the envelope sender, every DKIM signature, and DMARC for
    /// the From domain.
    pub async fn verify(
        &self,
        raw: &[u8],
        client: &Client,
        envelope_sender: &str,
    ) -> Authentication {
        use mail_auth::{
            AuthenticatedMessage, DkimResult, DmarcResult, SpfResult,
            dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
        };
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Authentication::default();
        };
        let helo = client.helo.as_str();
        let spf = self
            .authenticator
            .verify_spf(SpfParameters::verify_mail_from(
                client.ip,
                helo,
                &self.hostname,
                envelope_sender,
            ))
            .await;
        let dkim = self.authenticator.verify_dkim(&message).await;
        let mail_from_domain = envelope_sender.rsplit_once('@').map_or(helo, |(_, domain)| domain);
        let dmarc = self
            .authenticator
            .verify_dmarc(DmarcParameters::new(&message, &dkim, mail_from_domain, &spf))
            .await;
        Authentication {
            authserv_id: None,
            spf: match spf.result() {
                SpfResult::Pass => Outcome::Pass,
                SpfResult::Fail => Outcome::Fail,
                _ => Outcome::Other,
            },
            dkim: if dkim.iter().any(|signature| signature.result() == &DkimResult::Pass) {
                Outcome::Pass
            } else if dkim.iter().any(|signature| matches!(signature.result(), DkimResult::Fail(_)))
            {
                Outcome::Fail
            } else if dkim.is_empty() {
                Outcome::Missing
            } else {
                Outcome::Other
            },
            dmarc: match dmarc.result() {
                DmarcResult::Pass => Outcome::Pass,
                DmarcResult::Fail(_) => Outcome::Fail,
                DmarcResult::None => Outcome::Missing,
                _ => Outcome::Other,
            },
        }
    }
}

/// The client the topmost `Received` field names (`from HELO (... [IP])`),
/// as a front MTA such as Postfix writes it.
pub fn received_from(field: &str) -> Option<Client> {
    let rest = field.trim_start().strip_prefix("from ")?;
    let helo = rest.split_whitespace().next()?.to_owned();
    let open = rest.find('[')?;
    let close = open + rest[open..].find(']')?;
    let literal = &rest[open + 1..close];
    let ip = literal.strip_prefix("IPv6:").unwrap_or(literal).parse().ok()?;
    Some(Client { ip, helo })
}

/// The text without RFC 5322 comments (parenthesised, possibly nested).
fn without_comments(text: &str) -> String {
    let mut depth = 0usize;
    let mut escaped = false;
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(character);
            }
            continue;
        }
        match character {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(character);
                }
            }
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(character),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<String> {
        vec!["mx.example.org".into()]
    }

    #[test]
    fn the_topmost_trusted_field_is_read_with_comments_removed() {
        let fields = [
            "other.example; dmarc=pass",
            "mx.example.org 1; spf=pass (sender SPF authorized) smtp.mailfrom=tim@alumni.example;\r\n \
             dkim=fail header.d=alumni.example; dkim=pass header.d=alumni.example;\r\n \
             dmarc=pass (p=reject dis=none) header.from=alumni.example",
            "mx.example.org; dmarc=fail",
        ];
        let auth = Authentication::from_fields(fields, &trusted());
        assert_eq!(auth.authserv_id.as_deref(), Some("mx.example.org"));
        assert_eq!(
            (auth.spf, auth.dkim, auth.dmarc),
            (Outcome::Pass, Outcome::Pass, Outcome::Pass)
        );
        assert!(auth.any_pass() && !auth.dmarc_failed());
    }

    #[test]
    fn the_front_mtas_received_field_names_the_client() {
        let postfix = "from mail.alumni.example (mail.alumni.example [192.0.2.10])\r\n\tby mx.example.org (Postfix) with ESMTPS id 4Xyz; Mon, 30 Nov 2026 09:00:00 +0000";
        assert_eq!(
            received_from(postfix),
            Some(Client {
                ip: "192.0.2.10".parse().expect("ip"),
                helo: "mail.alumni.example".into()
            })
        );
        let v6 = "from [IPv6:2001:db8::1] (unknown [IPv6:2001:db8::1]) by mx.example.org";
        assert_eq!(
            received_from(v6).map(|client| client.ip),
            Some("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(received_from("by mx.example.org with LMTP"), None);
    }

    #[test]
    fn untrusted_or_absent_results_count_for_nothing() {
        let forged = ["evil.example; spf=pass; dkim=pass; dmarc=pass"];
        assert_eq!(Authentication::from_fields(forged, &trusted()), Authentication::default());
        let none = ["MX.example.org; none"];
        let auth = Authentication::from_fields(none, &trusted());
        assert!(auth.authserv_id.is_some() && !auth.any_pass() && !auth.dmarc_failed());
        let failed = ["mx.example.org; spf=softfail; dmarc=fail (p=none) header.from=x.example"];
        let auth = Authentication::from_fields(failed, &trusted());
        assert_eq!((auth.spf, auth.dmarc), (Outcome::Other, Outcome::Fail));
        assert_eq!(auth.describe(), "spf=other dkim=missing dmarc=fail");
    }
}
