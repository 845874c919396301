//! What happens to mail arriving at a masked address. Every message gets
//! one decision, written to the relay log (`GET /api/v1/admin/relay-log`)
//! and counted in the metrics:
//!
//! - from the member the address belongs to: sent on to the correspondent,
//!   masked (`sent_masked`);
//! - from a recognised correspondent (in the directory and, by policy, the
//!   one the address was issued to) whose mail authenticated: relayed to the
//!   member's real address, masked (`relayed`);
//! - from the recipient of a member's secure-message notification (which
//!   carries a masked Reply-To): by policy stored as a secure message for
//!   the member, who is notified and reads it over HTTPS (`stored`);
//! - from anyone else: not relayed. The sender is told once a week at most
//!   that they may not write here (`auto_replied`), but only where that
//!   cannot cause backscatter or loops; otherwise the mail is dropped
//!   silently (`dropped`);
//! - forged (DMARC failed) or looping mail is dropped (`refused`).
//!
//! Mail is accepted in every case once its decision is recorded, so nothing
//! about the decision leaks to the sender through the SMTP answer.

use mail_parser::{HeaderName, MessageParser};
use sealpost_proto::notification::address_pairs;

use crate::authentication_results::{Authentication, Client, Outcome, received_from};
use crate::inbound::InboundMail;
use crate::masking;
use crate::metrics::OutcomeLabels;
use crate::state::AppState;
// What arriving mail says goes into the log without control characters.
use crate::store::{AccountRecord, NewMail, RelayLogRecord, ReplyAddressRecord, StoreError};
use sealpost_proto::notification::printable;

/// No sender is told twice within this many days.
pub const NOT_PERMITTED_EVERY_DAYS: i64 = 7;
/// Mail that has passed this many hops is looping.
const MAX_RECEIVED: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Relayed,
    SentMasked,
    Stored,
    AutoReplied,
    Dropped,
    Refused,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relayed => "relayed",
            Self::SentMasked => "sent_masked",
            Self::Stored => "stored",
            Self::AutoReplied => "auto_replied",
            Self::Dropped => "dropped",
            Self::Refused => "refused",
        }
    }
}

/// Why mail could not be taken now; the sender is asked to retry.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not store an answer as a secure message: {0}")]
    Storing(String),
}

/// The decision and why, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub decision: Decision,
    pub reason: String,
}

/// What the router reads of one arriving message.
#[derive(Default)]
struct Arrived {
    envelope_sender: String,
    /// The From field's first address, lowercase.
    from: Option<String>,
    from_name: Option<String>,
    message_id: Option<String>,
    references: Vec<String>,
    auto_submitted: Option<String>,
    list_or_bulk: bool,
    received: usize,
    /// The topmost `Received` field: the front MTA's, when there is one.
    first_received: Option<String>,
    authentication: Authentication,
}

impl Arrived {
    async fn read(state: &AppState, mail: &InboundMail) -> Self {
        let mut arrived = Self::read_headers(state, &mail.mail_from, &mail.data);
        if arrived.authentication.authserv_id.is_none()
            && let Some(verifier) = &state.verifier
        {
            let client = arrived
                .first_received
                .as_deref()
                .filter(|_| state.settings.inbound.front_addresses.contains(&mail.peer.ip()))
                .and_then(received_from)
                .unwrap_or_else(|| Client { ip: mail.peer.ip(), helo: mail.helo.clone() });
            arrived.authentication = verifier.verify(&mail.data, &client, &mail.mail_from).await;
        }
        arrived
    }

    fn read_headers(state: &AppState, envelope_sender: &str, raw: &[u8]) -> Self {
        let trusted = &state.settings.masking.trusted_authserv_ids;
        let Some(message) = MessageParser::new().parse_headers(raw) else {
            return Self { envelope_sender: envelope_sender.to_lowercase(), ..Self::default() };
        };
        let from = address_pairs(message.from()).into_iter().next();
        let mut results = Vec::new();
        let mut received = 0;
        let mut first_received = None;
        let mut list_or_bulk = false;
        let mut auto_submitted = None;
        for header in message.headers() {
            let name = header.name.as_str();
            let value = || {
                let start = header.offset_start as usize;
                let end = (header.offset_end as usize).min(raw.len());
                String::from_utf8_lossy(raw.get(start..end).unwrap_or_default()).into_owned()
            };
            if name.eq_ignore_ascii_case("Authentication-Results") {
                results.push(value());
            } else if matches!(header.name, HeaderName::Received) {
                received += 1;
                first_received.get_or_insert_with(value);
            } else if name.len() > 5 && name[..5].eq_ignore_ascii_case("List-") {
                list_or_bulk = true;
            } else if name.eq_ignore_ascii_case("Precedence") {
                let precedence = value().trim().to_ascii_lowercase();
                list_or_bulk |= matches!(precedence.as_str(), "bulk" | "list" | "junk");
            } else if name.eq_ignore_ascii_case("Auto-Submitted") {
                auto_submitted = Some(value().trim().to_ascii_lowercase());
            }
        }
        let ids = |values: &mail_parser::HeaderValue<'_>| -> Vec<String> {
            values
                .as_text_list()
                .map(|ids| ids.iter().map(|id| id.to_string()).collect())
                .unwrap_or_default()
        };
        let mut references = ids(message.references());
        if references.is_empty() {
            references = ids(message.in_reply_to());
        }
        Self {
            envelope_sender: envelope_sender.to_lowercase(),
            from: from.as_ref().map(|(_, address)| address.to_lowercase()),
            from_name: from.and_then(|(name, _)| name),
            message_id: message.message_id().map(str::to_owned),
            references,
            auto_submitted,
            list_or_bulk,
            received,
            first_received,
            authentication: Authentication::from_fields(
                results.iter().map(String::as_str),
                trusted,
            ),
        }
    }

    /// Why an automated answer to this mail could cause backscatter or a
    /// loop, if it could (RFC 3834).
    fn no_answer_because(&self, state: &AppState) -> Option<&'static str> {
        let sender = self.envelope_sender.as_str();
        let local = sender.rsplit_once('@').map_or(sender, |(local, _)| local);
        if sender.is_empty() {
            return Some("the return path is null");
        }
        if self.auto_submitted.as_deref().is_some_and(|value| value != "no") {
            return Some("it was sent automatically (Auto-Submitted)");
        }
        if self.list_or_bulk {
            return Some("it is list or bulk mail");
        }
        if local == "mailer-daemon"
            || local == "postmaster"
            || local.ends_with("-request")
            || local.starts_with("owner-")
        {
            return Some("the return path is a mail system or list address");
        }
        if is_ours(state, sender) {
            return Some("the return path is one of ours");
        }
        if !(self.authentication.spf == Outcome::Pass || self.authentication.dmarc == Outcome::Pass)
        {
            return Some("neither SPF nor DMARC passed, so the return path may be forged");
        }
        None
    }
}

/// Our own addresses: masked ones, the bounce and automated-mail senders.
fn is_ours(state: &AppState, address: &str) -> bool {
    let smtp = &state.settings.smtp;
    masking::is_masked(state, address)
        || state.outbox.is_bounce_address(address)
        || address.eq_ignore_ascii_case(&smtp.from_address)
        || smtp.bounce_address.as_deref().is_some_and(|bounce| bounce.eq_ignore_ascii_case(address))
        || address.eq_ignore_ascii_case(&state.organization.current().settings.smtp.from_address)
}

/// Decides about mail to the masked address `to`, queues what it sends and
/// logs the decision.
pub async fn route(
    state: &AppState,
    to: &ReplyAddressRecord,
    mail: &InboundMail,
) -> Result<Routed, RouteError> {
    let arrived = Arrived::read(state, mail).await;
    let routed = decide(state, to, &arrived, &mail.data).await?;
    state
        .store
        .record_relay_decision(&RelayLogRecord {
            at: state.clock.now(),
            address: to.address.clone(),
            envelope_sender: printable(&arrived.envelope_sender),
            from_address: arrived.from.as_deref().map(printable),
            member_email: Some(to.member_email.clone()),
            decision: routed.decision.as_str().to_owned(),
            reason: printable(&routed.reason),
            header_message_id: arrived.message_id.as_deref().map(printable),
        })
        .await?;
    state
        .metrics
        .relay_decisions
        .get_or_create(&OutcomeLabels { outcome: routed.decision.as_str() })
        .inc();
    tracing::info!(
        address = %to.address, sender = %arrived.envelope_sender, from = ?arrived.from,
        decision = routed.decision.as_str(), reason = %routed.reason, "mail to a masked address"
    );
    Ok(routed)
}

async fn decide(
    state: &AppState,
    to: &ReplyAddressRecord,
    arrived: &Arrived,
    raw: &[u8],
) -> Result<Routed, RouteError> {
    let routed = |decision, reason: String| Ok(Routed { decision, reason });
    let auth = &arrived.authentication;
    let policy = &state.settings.masking;
    if to.disabled_at.is_some() {
        return routed(Decision::Dropped, "the address is disabled".into());
    }
    let Some(from) = arrived.from.as_deref() else {
        return routed(Decision::Dropped, "the mail has no From address".into());
    };
    if arrived.envelope_sender.is_empty() {
        return routed(Decision::Dropped, "a delivery report or notice (null return path)".into());
    }
    if is_ours(state, from) || is_ours(state, &arrived.envelope_sender) {
        return routed(
            Decision::Refused,
            "a loop: the mail comes from one of our own addresses".into(),
        );
    }
    if arrived.received > MAX_RECEIVED {
        return routed(Decision::Refused, format!("a loop: {} Received fields", arrived.received));
    }
    let Some(member) = state.store.account_by_email(&to.member_email).await? else {
        return routed(Decision::Dropped, "the member no longer has an account".into());
    };
    let Some(domain) = masking::domain(state) else {
        return routed(Decision::Dropped, "masked mail is switched off".into());
    };
    let authentication_problem = || {
        if auth.dmarc_failed() {
            Some(format!("DMARC failed for the From domain ({})", auth.describe()))
        } else if !policy.relay_unauthenticated && !auth.any_pass() {
            Some(format!("the mail did not authenticate ({})", auth.describe()))
        } else {
            None
        }
    };

    if from == member.email {
        if let Some(problem) = authentication_problem() {
            return routed(Decision::Refused, problem);
        }
        let correspondent = state.store.directory_entry(&to.correspondent).await?;
        let email = masking::relayed_copy(
            raw,
            Some(&masking::member_display_name(state, &member)),
            &to.address,
            correspondent.as_ref().and_then(|entry| entry.name.as_deref()),
            &to.correspondent,
        );
        let mail = NewMail { recipient: to.correspondent.clone(), envelope_sender: None, email };
        masking::queue(state, vec![mail]).await?;
        return routed(
            Decision::SentMasked,
            format!("the member's answer, sent masked ({})", auth.describe()),
        );
    }

    let recognised = state.store.directory_entry(from).await?;
    let issued_to_sender = from == to.correspondent;
    // The member chose the recipients of a secure message: they need no
    // directory entry to answer it.
    let notified = masking::notified_message(&to.thread).filter(|_| issued_to_sender);
    if let Some(message) = &notified
        && policy.store_notification_replies
    {
        if let Some(problem) = authentication_problem() {
            return routed(Decision::Refused, problem);
        }
        if raw.len() as u64 > state.settings.messages.max_size {
            return routed(Decision::Refused, "too large to store as a secure message".into());
        }
        store_answer(state, &member, from, arrived, raw).await?;
        return routed(
            Decision::Stored,
            format!(
                "an answer to secure message {message}, stored as one for the member ({})",
                auth.describe()
            ),
        );
    }
    let not_permitted = match &recognised {
        None if notified.is_some() => None,
        None => Some("the sender is not in the directory"),
        Some(_) if policy.only_issued_correspondent && !issued_to_sender => {
            Some("the sender is not the correspondent this address was issued to")
        }
        Some(_) => None,
    };
    if let Some(why) = not_permitted {
        if auth.dmarc_failed() {
            return routed(Decision::Refused, format!("{why}; DMARC failed ({})", auth.describe()));
        }
        return answer_not_permitted(state, to, arrived, domain, why).await;
    }
    if let Some(problem) = authentication_problem() {
        return routed(Decision::Refused, problem);
    }
    let name = recognised.and_then(|entry| entry.name).or_else(|| arrived.from_name.clone());
    let email = masking::relayed_copy(
        raw,
        name.as_deref(),
        &to.address,
        member.display_name.as_deref(),
        &member.email,
    );
    let mail = NewMail { recipient: member.email.clone(), envelope_sender: None, email };
    masking::queue(state, vec![mail]).await?;
    routed(Decision::Relayed, format!("a recognised correspondent ({})", auth.describe()))
}

/// Tells the sender they may not write here, when that is safe and they
/// were not told this week; drops the mail either way.
async fn answer_not_permitted(
    state: &AppState,
    to: &ReplyAddressRecord,
    arrived: &Arrived,
    domain: &str,
    why: &str,
) -> Result<Routed, RouteError> {
    let routed = |decision, reason: String| Ok(Routed { decision, reason });
    if let Some(no_answer) = arrived.no_answer_because(state) {
        return routed(Decision::Dropped, format!("{why}; not answered: {no_answer}"));
    }
    let now = state.clock.now();
    let policy = &state.settings.masking;
    let week_ago = now - time::Duration::days(NOT_PERMITTED_EVERY_DAYS);
    let claimed = state
        .store
        .claim_auto_reply(&arrived.envelope_sender, week_ago, policy.not_permitted_per_hour, now)
        .await?;
    if !claimed {
        return routed(
            Decision::Dropped,
            format!(
                "{why}; not answered: answered within {NOT_PERMITTED_EVERY_DAYS} days, or the hourly limit is reached"
            ),
        );
    }
    let email = not_permitted_answer(state, to, arrived, domain);
    // The null return path: nothing answers an automated answer.
    let mail = NewMail {
        recipient: arrived.envelope_sender.clone(),
        envelope_sender: Some(String::new()),
        email,
    };
    masking::queue(state, vec![mail]).await?;
    routed(Decision::AutoReplied, format!("{why}; told they may not write here"))
}

/// Stores `raw` as a secure message from `author` to the member and
/// queues its notification, as if the author had uploaded it.
async fn store_answer(
    state: &AppState,
    member: &AccountRecord,
    author: &str,
    arrived: &Arrived,
    raw: &[u8],
) -> Result<(), RouteError> {
    use crate::routes::messages::{Expiry, NewUpload, store_message};
    let author = match state.store.account_by_email(author).await? {
        Some(account) => account,
        // Proven only as a sender: an account without a password, as the
        // desktop agent's are until their owner proves the address.
        None => {
            match state.store.create_account(author, arrived.from_name.as_deref(), None).await {
                Ok(account) => account,
                Err(StoreError::Conflict) => state
                    .store
                    .account_by_email(author)
                    .await?
                    .ok_or_else(|| RouteError::Storing("an account vanished".into()))?,
                Err(error) => return Err(error.into()),
            }
        }
    };
    let id = sealpost_proto::MessageId::generate();
    let chunks =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(raw))]);
    let blob = state
        .blobs
        .write(&id, chunks, state.settings.messages.max_size)
        .await
        .map_err(|error| RouteError::Storing(error.to_string()))?;
    let upload = NewUpload {
        recipients: vec![member.email.clone()],
        send_notifications: true,
        expiry: Expiry::OrganizationDefault,
        client_key: None,
    };
    store_message(state, &author, id, blob, upload)
        .await
        .map_err(|error| RouteError::Storing(error.message))?;
    Ok(())
}

fn not_permitted_answer(
    state: &AppState,
    to: &ReplyAddressRecord,
    arrived: &Arrived,
    domain: &str,
) -> Vec<u8> {
    let organization = state.organization.current();
    let name = organization.branding.organization_name.clone();
    let smtp = &organization.settings.smtp;
    let sender = match smtp.from_name.trim() {
        "" => mail_builder::headers::address::Address::new_address(
            None::<String>,
            smtp.from_address.clone(),
        ),
        name => mail_builder::headers::address::Address::new_address(
            Some(name.to_owned()),
            smtp.from_address.clone(),
        ),
    };
    let policy = &state.settings.masking;
    let text = policy
        .not_permitted_text
        .replace("{address}", &to.address)
        .replace("{organization}", &name);
    let message_id = format!("{}@{domain}", masking::new_thread());
    let mut builder = mail_builder::MessageBuilder::new()
        .from(sender)
        .to(arrived.envelope_sender.as_str())
        .subject(policy.not_permitted_subject.as_str())
        .date(state.clock.now().unix_timestamp())
        .message_id(message_id)
        .header("Auto-Submitted", mail_builder::headers::raw::Raw::new("auto-replied"))
        .text_body(text);
    if let Some(original) = &arrived.message_id {
        let mut references = arrived.references.clone();
        references.push(original.clone());
        builder = builder.in_reply_to(original.clone()).references(references);
    }
    builder.write_to_vec().unwrap_or_default()
}
