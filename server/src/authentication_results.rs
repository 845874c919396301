//! Whether arriving mail authenticated, as the trusted front MTA recorded
//! it in an `Authentication-Results` header field (RFC 8601).
//!
//! Only a field whose authentication service identifier is configured as
//! trusted counts, and only the topmost such field: the front MTA adds its
//! own on top and must remove any it did not write, so fields further down
//! (or with other identifiers) may come from the sender and mean nothing.

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
