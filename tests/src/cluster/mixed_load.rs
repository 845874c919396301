//! [`MixedLoad`]: concurrent clients doing what a deployment's users do,
//! each spreading its requests over the cluster's running instances in
//! turn, as a load balancer would: registering (the code read from the
//! relay's capture), sending messages to one to three recipients (about
//! 2 KB, kept in the database, or about 200 KB, kept in the object store),
//! retrieving them as recipients (checked byte for byte by SHA-256),
//! reading delivery slips as senders, signing in to the Secure Message
//! Center on one instance and listing the mailbox on another, enrolling a
//! device on one instance and using its token on another.
//!
//! Every request must get the answer it expects; anything else is an error
//! with the body in its message. A request cut off because its instance was
//! killed ([`ServerCluster::kill`]) is sent again to a running instance, as
//! a balancer whose health check took the instance out would: an upload
//! with the same `client_key`, so it is not stored twice.
//!
//! The load keeps a ledger of what the servers acknowledged (users,
//! uploads with their digests and recipients, retrievals), kept across
//! [`MixedLoad::run`]s, for the checks afterwards: notifications in the
//! capture, content on any instance, delivery slips and retrieval logs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::multipart::{Form, Part};
use sealpost_proto::ContentDigest;
use sealpost_proto::api::{
    CodeRequest, CreateAccount, DeliveryReport, DeliveryState, Device, DeviceCredential,
    DeviceTokens, EnrollDevice, RetrievalLog, StoredMessage, UploadMetadata,
};
use sealpost_proto::verification::find_code;

use super::ServerCluster;
use crate::client::https_client;
use crate::pages::form_encode;

/// Small messages: kept in the database (below `storage.inline_max_bytes`).
const SMALL: usize = 2 * 1024;
/// Large messages: kept in the object store.
const LARGE: usize = 200 * 1024;
/// The share of uploads that are large.
const LARGE_SHARE: f64 = 0.25;
/// How long a verification email may take to reach the capture.
const CODE_MAIL_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests the checks after a load send at once.
const CHECK_CONCURRENCY: usize = 8;
const SESSION_COOKIE: &str = "__Host-sealpost-session";
const CSRF_COOKIE: &str = "__Host-sealpost-csrf";

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    CodeRequest,
    CreateAccount,
    /// A device enrolled with the password: the API's sign-in.
    Enroll,
    Upload,
    /// A recipient retrieving a message's content.
    Content,
    DeliverySlip,
    /// Signing in to the Secure Message Center.
    WebSignIn,
    Mailbox,
    /// The device list, with a token from another instance.
    DeviceList,
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RequestKind::CodeRequest => "code request",
            RequestKind::CreateAccount => "account creation",
            RequestKind::Enroll => "device sign-in",
            RequestKind::Upload => "upload",
            RequestKind::Content => "retrieval",
            RequestKind::DeliverySlip => "delivery slip",
            RequestKind::WebSignIn => "web sign-in",
            RequestKind::Mailbox => "mailbox",
            RequestKind::DeviceList => "device list",
        };
        f.write_str(name)
    }
}

/// What a [`MixedLoad::run`] observed.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The measured stretch (after the warm-up).
    pub measured: Duration,
    /// Requests answered as expected within the measured stretch, by kind.
    pub answered: BTreeMap<RequestKind, usize>,
    /// Their latencies, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Requests answered as expected over the whole run, by instance.
    pub served_by: Vec<usize>,
    /// Every failure: an unexpected status (with the body), a transport
    /// error from a running instance, wrong content, a stale answer.
    pub errors: Vec<String>,
    /// Requests sent again to another instance because theirs was killed.
    pub retried: usize,
    /// Retrievals whose content was checked (SHA-256) over the whole run.
    pub retrievals_checked: usize,
    /// Registrations that needed a second code: a killed instance had used
    /// the first up without creating the account.
    pub codes_used_up: usize,
}

impl LoadReport {
    /// Requests answered as expected within the measured stretch.
    pub fn requests(&self) -> usize {
        self.answered.values().sum()
    }

    pub fn requests_per_second(&self) -> f64 {
        self.rate(self.requests())
    }

    /// Requests of `kind` answered per second of the measured stretch.
    pub fn per_second(&self, kind: RequestKind) -> f64 {
        self.rate(self.answered.get(&kind).copied().unwrap_or(0))
    }

    fn rate(&self, count: usize) -> f64 {
        let seconds = self.measured.as_secs_f64();
        if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
    }

    /// Counts and rates in one line per kind, for the test's output.
    pub fn summary(&self) -> String {
        let mut lines = vec![format!(
            "{} requests in {:.1} s: {:.1} requests/s; served by instance: {:?}; \
             {} retried after a kill ({} registrations asked for a second code); \
             {} retrievals checked; {} errors",
            self.requests(),
            self.measured.as_secs_f64(),
            self.requests_per_second(),
            self.served_by,
            self.retried,
            self.codes_used_up,
            self.retrievals_checked,
            self.errors.len()
        )];
        for (kind, count) in &self.answered {
            lines.push(format!("  {kind}: {count} ({:.1}/s)", self.per_second(*kind)));
        }
        lines.join("\n")
    }

    fn merge(&mut self, other: LoadReport) {
        for (kind, count) in other.answered {
            *self.answered.entry(kind).or_default() += count;
        }
        self.latencies_ms.extend(other.latencies_ms);
        if self.served_by.len() < other.served_by.len() {
            self.served_by.resize(other.served_by.len(), 0);
        }
        for (total, served) in self.served_by.iter_mut().zip(other.served_by) {
            *total += served;
        }
        self.errors.extend(other.errors);
        self.retried += other.retried;
        self.retrievals_checked += other.retrievals_checked;
        self.codes_used_up += other.codes_used_up;
    }
}

/// The notifications in the capture against the ledger's (message,
/// recipient) pairs.
#[derive(Debug, Clone, Default)]
pub struct NotificationTally {
    /// Pairs acknowledged: every recipient of every acknowledged upload.
    pub expected: usize,
    /// Pairs with at least one notification.
    pub notified: usize,
    /// Pairs without one, as `message → recipient`.
    pub missing: Vec<String>,
    /// Copies beyond the first, over all pairs.
    pub duplicates: usize,
    /// Pairs notified more than once, with their count.
    pub duplicated: Vec<(String, usize)>,
    /// Notifications for pairs the ledger does not know.
    pub unexpected: usize,
}

/// The load and its ledger; clones share both.
#[derive(Clone)]
pub struct MixedLoad(Arc<Shared>);

struct Shared {
    cluster: Arc<ServerCluster>,
    /// Follows no redirect: a sign-in answers with one and its cookie.
    http: reqwest::Client,
    /// Client `i`'s own HTTPS client (so its own keep-alive connection),
    /// when the load was made with one per client; else all share `http`.
    own_http: Vec<reqwest::Client>,
    clients: usize,
    ledger: Mutex<Ledger>,
    next_address: AtomicUsize,
    next_upload: AtomicUsize,
}

#[derive(Default)]
struct Ledger {
    users: Vec<User>,
    uploads: Vec<Upload>,
    /// (upload, recipient) pairs nobody retrieved yet.
    unread: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
struct User {
    email: String,
    password: String,
    /// The access token of the device enrolled at registration.
    token: String,
    /// The Secure Message Center's session cookie, once signed in.
    session: Option<String>,
}

#[derive(Debug, Clone)]
struct Upload {
    message_id: String,
    sender: usize,
    recipients: Vec<usize>,
    digest: ContentDigest,
    size: usize,
    /// Retrievals answered with the right content, by recipient.
    retrievals: BTreeMap<usize, usize>,
}

impl MixedLoad {
    /// A load of `clients` concurrent clients on `cluster`, with an empty ledger.
    pub fn new(cluster: Arc<ServerCluster>, clients: usize) -> anyhow::Result<Self> {
        Self::build(cluster, clients, false)
    }

    /// Like [`MixedLoad::new`], but each client keeps a TLS connection of
    /// its own (per instance) instead of sharing a pool: `clients`
    /// connections held open, as that many separate users' apps would.
    pub fn with_connection_per_client(
        cluster: Arc<ServerCluster>,
        clients: usize,
    ) -> anyhow::Result<Self> {
        Self::build(cluster, clients, true)
    }

    fn build(cluster: Arc<ServerCluster>, clients: usize, own: bool) -> anyhow::Result<Self> {
        let https = || https_client(cluster.cert_pem(), reqwest::redirect::Policy::none());
        let http = https()?;
        let own_http =
            if own { (0..clients).map(|_| https()).collect::<Result<_, _>>()? } else { Vec::new() };
        Ok(Self(Arc::new(Shared {
            cluster,
            http,
            own_http,
            clients,
            ledger: Mutex::default(),
            next_address: AtomicUsize::new(0),
            next_upload: AtomicUsize::new(0),
        })))
    }

    /// Runs the clients for `warm_up` then `measure`; requests answered in
    /// the warm-up are not counted in the report's rates. A client finishes
    /// what it is doing after the end; the ledger keeps growing across runs.
    pub async fn run(&self, warm_up: Duration, measure: Duration) -> LoadReport {
        self.run_clients(self.0.clients, warm_up, measure).await
    }

    /// [`MixedLoad::run`] with `clients` of the clients only (the first
    /// ones), sharing the ledger: a few can register users before many
    /// start.
    pub async fn run_clients(
        &self,
        clients: usize,
        warm_up: Duration,
        measure: Duration,
    ) -> LoadReport {
        let measure_from = Instant::now() + warm_up;
        let until = measure_from + measure;
        let clients: Vec<_> = (0..clients.min(self.0.clients))
            .map(|index| {
                let client = Client::new(self.0.clone(), index, measure_from, until);
                tokio::spawn(client.run())
            })
            .collect();
        let mut report = LoadReport { measured: measure, ..LoadReport::default() };
        for client in clients {
            match client.await {
                Ok(outcome) => report.merge(outcome),
                Err(error) => report.errors.push(format!("a client panicked: {error}")),
            }
        }
        report
    }

    /// Users registered so far.
    pub fn users(&self) -> usize {
        self.ledger().users.len()
    }

    /// Uploads acknowledged so far.
    pub fn uploads(&self) -> usize {
        self.ledger().uploads.len()
    }

    /// Uploads acknowledged so far whose content went to the object store
    /// (above `storage.inline_max_bytes`, 64 KiB by default), and the others.
    pub fn uploads_by_place(&self) -> (usize, usize) {
        let ledger = self.ledger();
        let large = ledger.uploads.iter().filter(|upload| upload.size > 64 * 1024).count();
        (large, ledger.uploads.len() - large)
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.0)
    }

    /// Counts the notifications the capture received per (message,
    /// recipient) of the acknowledged uploads.
    pub async fn notification_tally(&self) -> NotificationTally {
        let mut counts: HashMap<(String, String), usize> = HashMap::new();
        for mail in self.0.cluster.capture().messages().await {
            if let Ok(notification) = sealpost_proto::notification::parse(&mail.data) {
                let fields = notification.fields;
                let key = (fields.message_id.as_str().to_owned(), fields.recipient.to_lowercase());
                *counts.entry(key).or_default() += 1;
            }
        }
        let mut tally = NotificationTally::default();
        let mut known = BTreeSet::new();
        let ledger = self.ledger();
        for upload in &ledger.uploads {
            for &recipient in &upload.recipients {
                let email = ledger.users[recipient].email.to_lowercase();
                let pair = format!("{} → {email}", upload.message_id);
                let key = (upload.message_id.clone(), email);
                tally.expected += 1;
                match counts.get(&key).copied().unwrap_or(0) {
                    0 => tally.missing.push(pair),
                    1 => tally.notified += 1,
                    many => {
                        tally.notified += 1;
                        tally.duplicates += many - 1;
                        tally.duplicated.push((pair, many));
                    }
                }
                known.insert(key);
            }
        }
        tally.unexpected =
            counts.iter().filter(|(key, _)| !known.contains(*key)).map(|(_, count)| count).sum();
        tally
    }

    /// Waits until every acknowledged (message, recipient) has a
    /// notification in the capture, or `timeout` passes; the last tally.
    /// Works on SQLite too, where the outbox cannot be read with psql.
    pub async fn wait_until_notified(&self, timeout: Duration) -> NotificationTally {
        let deadline = Instant::now() + timeout;
        loop {
            let tally = self.notification_tally().await;
            if tally.missing.is_empty() || Instant::now() > deadline {
                return tally;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Retrieves every acknowledged upload from instance `instance` as its
    /// sender and compares it (SHA-256) with what was sent; the problems.
    /// Each retrieval is recorded, so check delivery slips first.
    pub async fn check_content(&self, instance: usize) -> Vec<String> {
        let (uploads, users) = {
            let ledger = self.ledger();
            (ledger.uploads.clone(), ledger.users.clone())
        };
        let api = self.0.cluster.api(instance).clone();
        futures_util::stream::iter(uploads)
            .map(|upload| {
                let api = api.clone();
                let token = users[upload.sender].token.clone();
                async move {
                    let path = format!("/api/v1/messages/{}/content", upload.message_id);
                    match api.get(&path, Some(&token)).await {
                        Ok(response) if response.status != 200 => Some(format!(
                            "{}: HTTP {}: {}",
                            upload.message_id,
                            response.status,
                            response.text()
                        )),
                        Ok(response) if ContentDigest::of(&response.body) != upload.digest => {
                            Some(format!(
                                "{}: {} bytes that are not the {} sent",
                                upload.message_id,
                                response.body.len(),
                                upload.size
                            ))
                        }
                        Ok(_) => None,
                        Err(error) => Some(format!("{}: {error:#}", upload.message_id)),
                    }
                }
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .filter_map(|problem| async move { problem })
            .collect()
            .await
    }

    /// Reads every acknowledged upload's delivery slip and retrieval log
    /// from instance `instance` as its sender, once the outbox is drained:
    /// a recipient who retrieved the message must show as retrieved, with
    /// as many retrievals logged as the load made; one who did not, as sent.
    /// The problems.
    pub async fn check_delivery_slips(&self, instance: usize) -> Vec<String> {
        let (uploads, users) = {
            let ledger = self.ledger();
            (ledger.uploads.clone(), ledger.users.clone())
        };
        let api = self.0.cluster.api(instance).clone();
        let users = &users;
        futures_util::stream::iter(uploads)
            .map(|upload| {
                let api = api.clone();
                async move {
                    let token = &users[upload.sender].token;
                    let id = &upload.message_id;
                    let (slip_path, log_path) = (
                        format!("/api/v1/messages/{id}/deliveries"),
                        format!("/api/v1/messages/{id}/retrievals"),
                    );
                    let slip = api.get(&slip_path, Some(token));
                    let log = api.get(&log_path, Some(token));
                    let (slip, log) = match futures_util::future::join(slip, log).await {
                        (Ok(slip), Ok(log)) if slip.status == 200 && log.status == 200 => {
                            (slip.json::<DeliveryReport>(), log.json::<RetrievalLog>())
                        }
                        (slip, log) => {
                            return vec![format!(
                                "{id}: slip {:?}, log {:?}",
                                slip.map(|r| (r.status, r.text())),
                                log.map(|r| (r.status, r.text()))
                            )];
                        }
                    };
                    slip_problems(&upload, users, &slip, &log)
                }
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .flat_map(futures_util::stream::iter)
            .collect()
            .await
    }
}

/// Where the delivery slip and retrieval log of `upload` disagree with the ledger.
fn slip_problems(
    upload: &Upload,
    users: &[User],
    slip: &DeliveryReport,
    log: &RetrievalLog,
) -> Vec<String> {
    let id = &upload.message_id;
    let mut problems = Vec::new();
    let emails: Vec<&str> = upload.recipients.iter().map(|r| users[*r].email.as_str()).collect();
    let listed: Vec<&str> = slip.recipients.iter().map(|r| r.recipient.as_str()).collect();
    if listed != emails {
        problems.push(format!("{id}: the slip lists {listed:?}, the upload was to {emails:?}"));
    }
    for (recipient, email) in upload.recipients.iter().zip(&emails) {
        let retrieved = upload.retrievals.get(recipient).copied().unwrap_or(0);
        let expected = if retrieved > 0 { DeliveryState::Retrieved } else { DeliveryState::Sent };
        match slip.recipients.iter().find(|r| r.recipient == *email) {
            Some(row) if row.state != expected => problems.push(format!(
                "{id}: {email} is {:?} on the slip, the load expected {expected:?}: {row:?}",
                row.state
            )),
            Some(_) | None => {}
        }
        let logged = log.retrievals.iter().filter(|r| r.account == *email).count();
        if logged != retrieved {
            problems.push(format!(
                "{id}: {logged} retrievals by {email} logged, the load made {retrieved}"
            ));
        }
    }
    let strangers: Vec<&str> = log
        .retrievals
        .iter()
        .map(|r| r.account.as_str())
        .filter(|account| !emails.contains(account))
        .collect();
    if !strangers.is_empty() {
        problems.push(format!("{id}: retrievals logged for non-recipients {strangers:?}"));
    }
    problems
}

fn lock(shared: &Shared) -> MutexGuard<'_, Ledger> {
    shared.ledger.lock().expect("ledger lock")
}

/// What a client does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Register,
    Upload,
    Retrieve,
    DeliverySlip,
    Mailbox,
    SignIn,
}

/// The mix, in percent.
const MIX: [(Action, u32); 6] = [
    (Action::Register, 8),
    (Action::Upload, 30),
    (Action::Retrieve, 30),
    (Action::DeliverySlip, 12),
    (Action::Mailbox, 12),
    (Action::SignIn, 8),
];

/// An answer as expected.
struct Answer {
    status: u16,
    /// Whether the request was sent again after its instance was killed.
    retried: bool,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// One client: one request at a time, each to the next running instance.
struct Client {
    shared: Arc<Shared>,
    index: usize,
    rng: StdRng,
    /// The next instance to try, modulo their number.
    turn: usize,
    measure_from: Instant,
    until: Instant,
    report: LoadReport,
}

impl Client {
    fn new(shared: Arc<Shared>, index: usize, measure_from: Instant, until: Instant) -> Self {
        let instances = shared.cluster.len();
        Self {
            shared,
            index,
            rng: StdRng::from_rng(&mut rand::rng()),
            turn: index,
            measure_from,
            until,
            report: LoadReport { served_by: vec![0; instances], ..LoadReport::default() },
        }
    }

    async fn run(mut self) -> LoadReport {
        while Instant::now() < self.until {
            match self.next_action() {
                Action::Register => self.register().await,
                Action::Upload => self.upload().await,
                Action::Retrieve => self.retrieve().await,
                Action::DeliverySlip => self.delivery_slip().await,
                Action::Mailbox => self.mailbox().await,
                Action::SignIn => self.sign_in().await,
            };
        }
        self.report
    }

    fn next_action(&mut self) -> Action {
        let (users, uploads) = {
            let ledger = self.ledger();
            (ledger.users.len(), ledger.uploads.len())
        };
        // Senders need recipients, and readers need messages.
        if users < 2 {
            return Action::Register;
        }
        let mut pick = self.rng.random_range(0..MIX.iter().map(|(_, weight)| weight).sum::<u32>());
        let mut action = Action::Register;
        for (candidate, weight) in MIX {
            if pick < weight {
                action = candidate;
                break;
            }
            pick -= weight;
        }
        match action {
            Action::Retrieve | Action::DeliverySlip if uploads == 0 => Action::Upload,
            other => other,
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.shared)
    }

    fn fail(&mut self, problem: String) {
        self.report.errors.push(format!("client {}: {problem}", self.index));
    }

    /// The next running instance in this client's turn.
    fn next_instance(&mut self) -> Option<usize> {
        let count = self.shared.cluster.len();
        for _ in 0..count {
            let instance = self.turn % count;
            self.turn += 1;
            if self.shared.cluster.is_running(instance) {
                return Some(instance);
            }
        }
        None
    }

    /// Sends the request `build` makes for an instance's base URL to the
    /// next running instance, and again to another when its instance was
    /// killed before answering; counts it when its status is `expected` (or,
    /// for a request sent again, `after_retry`: the lost answer's work was
    /// done). `None`, with the failure recorded, otherwise.
    async fn request(
        &mut self,
        kind: RequestKind,
        expected: &[u16],
        after_retry: &[u16],
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Option<Answer> {
        let mut retried = false;
        loop {
            let Some(instance) = self.next_instance() else {
                self.fail(format!("{kind}: no instance is running"));
                return None;
            };
            let started = Instant::now();
            let http = self.shared.own_http.get(self.index).unwrap_or(&self.shared.http);
            let request = build(http, self.shared.cluster.base_url(instance));
            let outcome = async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body = response.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>((status, headers, body))
            }
            .await;
            let finished = Instant::now();
            let (status, headers, body) = match outcome {
                Ok(answer) => answer,
                // Killed under it: the balancer sends it to a running instance.
                Err(_) if !self.shared.cluster.is_running(instance) => {
                    self.report.retried += 1;
                    retried = true;
                    continue;
                }
                Err(error) => {
                    let error = anyhow::Error::from(error);
                    self.fail(format!("{kind} on instance {instance}: {error:#}"));
                    return None;
                }
            };
            if !(expected.contains(&status) || retried && after_retry.contains(&status)) {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.chars().take(2000).collect();
                self.fail(format!("{kind} on instance {instance}: HTTP {status}: {text}"));
                return None;
            }
            self.report.served_by[instance] += 1;
            if finished >= self.measure_from && finished <= self.until {
                *self.report.answered.entry(kind).or_default() += 1;
                self.report.latencies_ms.push((finished - started).as_secs_f64() * 1000.0);
            }
            return Some(Answer { status, retried, headers, body });
        }
    }

    /// `body` as `T`, or the failure recorded.
    fn parse<T: serde::de::DeserializeOwned>(
        &mut self,
        kind: RequestKind,
        body: &[u8],
    ) -> Option<T> {
        match serde_json::from_slice(body) {
            Ok(value) => Some(value),
            Err(error) => {
                let text = String::from_utf8_lossy(body).into_owned();
                self.fail(format!("{kind}: not the expected JSON ({error}): {text}"));
                None
            }
        }
    }

    /// A new user, the way people register: a code by email (read from the
    /// capture), a password account with it, a device signed in with the
    /// password; each step on the next instance.
    async fn register(&mut self) {
        let number = self.shared.next_address.fetch_add(1, Ordering::Relaxed);
        let email = format!("user{number}@example.test");
        let password = format!("load password {number} {:08x}", self.rng.random::<u32>());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(code) = self.code_for(&email).await else { return };
            let account = CreateAccount {
                email: email.clone(),
                code,
                password: password.clone(),
                display_name: Some(format!("User {number}")),
            };
            // For a request sent again after its instance was killed: 409,
            // the first one created the account; 400, it used the code up
            // and died before creating the account (a new code is needed).
            let created = self
                .request(RequestKind::CreateAccount, &[201], &[409, 400], |http, base| {
                    http.post(format!("{base}/api/v1/accounts")).json(&account)
                })
                .await;
            match created {
                None => return,
                Some(answer) if answer.retried && answer.status == 400 && attempts < 3 => {
                    self.report.codes_used_up += 1;
                }
                Some(answer) if answer.status == 400 => {
                    let text = String::from_utf8_lossy(&answer.body).into_owned();
                    self.fail(format!("{email}: the code was refused again: {text}"));
                    return;
                }
                Some(_) => break,
            }
        }
        let Some(tokens) = self.enroll(&email, &password).await else { return };
        self.ledger().users.push(User {
            email,
            password,
            token: tokens.access_token,
            session: None,
        });
    }

    /// Asks for a code for `email` and reads it from the capture.
    async fn code_for(&mut self, email: &str) -> Option<String> {
        let code_request = CodeRequest { email: email.to_owned() };
        self.request(RequestKind::CodeRequest, &[202], &[], |http, base| {
            http.post(format!("{base}/api/v1/verification-codes")).json(&code_request)
        })
        .await?;
        // The code is mailed before the request is answered, so the newest
        // email has the code that counts (a request cut off by a kill may
        // have mailed one that a later request replaced).
        let origin = self.shared.cluster.origin().to_owned();
        let has_code = |mail: &crate::CapturedMail| find_code(&mail.data, &origin).is_some();
        let capture = self.shared.cluster.capture().clone();
        let Some(mail) = capture.wait_for(email, CODE_MAIL_TIMEOUT, has_code).await else {
            self.fail(format!("no verification email reached {email}"));
            return None;
        };
        find_code(&mail.data, &origin)
    }

    /// Signs a new device in with the password.
    async fn enroll(&mut self, email: &str, password: &str) -> Option<DeviceTokens> {
        let enroll = EnrollDevice {
            email: email.to_owned(),
            device_name: format!("load client {}", self.index),
            credential: DeviceCredential::Password(password.to_owned()),
        };
        let answer = self
            .request(RequestKind::Enroll, &[201], &[], |http, base| {
                http.post(format!("{base}/api/v1/devices")).json(&enroll)
            })
            .await?;
        self.parse(RequestKind::Enroll, &answer.body)
    }

    /// A message from a random user to one to three others, asking the
    /// server to mail the notifications.
    async fn upload(&mut self) {
        let picked = {
            let ledger = lock(&self.shared);
            let users = ledger.users.len();
            let sender = self.rng.random_range(0..users);
            let wanted = self.rng.random_range(1..=3).min(users - 1);
            let mut recipients = Vec::new();
            while recipients.len() < wanted {
                let candidate = self.rng.random_range(0..users);
                if candidate != sender && !recipients.contains(&candidate) {
                    recipients.push(candidate);
                }
            }
            let emails: Vec<String> =
                recipients.iter().map(|r| ledger.users[*r].email.clone()).collect();
            let token = ledger.users[sender].token.clone();
            (sender, recipients, emails, token)
        };
        let (sender, recipients, emails, token) = picked;
        let size = if self.rng.random_bool(LARGE_SHARE) {
            LARGE + self.rng.random_range(0..LARGE / 10)
        } else {
            SMALL + self.rng.random_range(0..SMALL / 2)
        };
        let sequence = self.shared.next_upload.fetch_add(1, Ordering::Relaxed);
        let mime = message(&mut self.rng, sequence, size);
        let digest = ContentDigest::of(&mime);
        let metadata = UploadMetadata {
            recipients: emails,
            send_notifications: true,
            expires_at: None,
            never_expires: false,
            client_key: Some(format!("load-upload-{sequence}")),
        };
        let metadata = serde_json::to_string(&metadata).expect("metadata serialises");
        // 200 for an upload sent again: the first one was stored.
        let answer = self
            .request(RequestKind::Upload, &[201], &[200], |http, base| {
                let form = Form::new()
                    .part(
                        "metadata",
                        Part::text(metadata.clone())
                            .mime_str("application/json")
                            .expect("media type"),
                    )
                    .part(
                        "content",
                        Part::bytes(mime.clone()).mime_str("message/rfc822").expect("media type"),
                    );
                http.post(format!("{base}/api/v1/messages")).bearer_auth(&token).multipart(form)
            })
            .await;
        let Some(answer) = answer else { return };
        let Some(stored) = self.parse::<StoredMessage>(RequestKind::Upload, &answer.body) else {
            return;
        };
        if stored.content_sha256 != digest.to_hex() || stored.size != mime.len() as u64 {
            self.fail(format!(
                "upload {sequence}: stored as {} bytes with SHA-256 {}, sent {} bytes with {}",
                stored.size,
                stored.content_sha256,
                mime.len(),
                digest.to_hex()
            ));
            return;
        }
        let mut ledger = self.ledger();
        let upload = ledger.uploads.len();
        ledger.unread.extend(recipients.iter().map(|recipient| (upload, *recipient)));
        ledger.uploads.push(Upload {
            message_id: stored.message_id,
            sender,
            recipients,
            digest,
            size,
            retrievals: BTreeMap::new(),
        });
    }

    /// A recipient fetching a message's content: one nobody read yet if
    /// there is one, else any (read again).
    async fn retrieve(&mut self) {
        let picked = {
            let mut ledger = lock(&self.shared);
            let pair = if ledger.unread.is_empty() {
                let upload = self.rng.random_range(0..ledger.uploads.len());
                let recipients = &ledger.uploads[upload].recipients;
                (upload, recipients[self.rng.random_range(0..recipients.len())])
            } else {
                let at = self.rng.random_range(0..ledger.unread.len());
                ledger.unread.swap_remove(at)
            };
            let (upload, recipient) = pair;
            let message = &ledger.uploads[upload];
            (
                upload,
                recipient,
                message.message_id.clone(),
                message.digest,
                ledger.users[recipient].token.clone(),
            )
        };
        let (upload, recipient, message_id, digest, token) = picked;
        let answer = self
            .request(RequestKind::Content, &[200], &[], |http, base| {
                http.get(format!("{base}/api/v1/messages/{message_id}/content")).bearer_auth(&token)
            })
            .await;
        let Some(answer) = answer else { return };
        if ContentDigest::of(&answer.body) != digest {
            self.fail(format!(
                "retrieval of {message_id}: {} bytes with SHA-256 {}, expected {}",
                answer.body.len(),
                ContentDigest::of(&answer.body).to_hex(),
                digest.to_hex()
            ));
            return;
        }
        self.report.retrievals_checked += 1;
        *self.ledger().uploads[upload].retrievals.entry(recipient).or_default() += 1;
    }

    /// A sender reading a message's delivery slip: it must list the
    /// recipients, and show retrieved whoever the load saw retrieve it
    /// before asking, whichever instance served that.
    async fn delivery_slip(&mut self) {
        let picked = {
            let ledger = lock(&self.shared);
            let upload = &ledger.uploads[self.rng.random_range(0..ledger.uploads.len())];
            let emails: Vec<String> =
                upload.recipients.iter().map(|r| ledger.users[*r].email.clone()).collect();
            let retrieved: Vec<String> =
                upload.retrievals.keys().map(|r| ledger.users[*r].email.clone()).collect();
            let token = ledger.users[upload.sender].token.clone();
            (upload.message_id.clone(), emails, retrieved, token)
        };
        let (message_id, emails, retrieved, token) = picked;
        let answer = self
            .request(RequestKind::DeliverySlip, &[200], &[], |http, base| {
                http.get(format!("{base}/api/v1/messages/{message_id}/deliveries"))
                    .bearer_auth(&token)
            })
            .await;
        let Some(answer) = answer else { return };
        let Some(slip) = self.parse::<DeliveryReport>(RequestKind::DeliverySlip, &answer.body)
        else {
            return;
        };
        let listed: Vec<&str> = slip.recipients.iter().map(|r| r.recipient.as_str()).collect();
        if listed != emails {
            self.fail(format!("slip of {message_id} lists {listed:?}, sent to {emails:?}"));
            return;
        }
        for email in retrieved {
            let state = slip.recipients.iter().find(|r| r.recipient == email).map(|r| r.state);
            if state != Some(DeliveryState::Retrieved) {
                self.fail(format!(
                    "slip of {message_id} shows {email} as {state:?} after a retrieval"
                ));
            }
        }
    }

    /// Signs in to the Secure Message Center on one instance (or reuses the
    /// session) and lists the mailbox on the next: it must show the newest
    /// message the load sent the user.
    async fn mailbox(&mut self) {
        let picked = {
            let ledger = lock(&self.shared);
            let user = self.rng.random_range(0..ledger.users.len());
            let newest = ledger
                .uploads
                .iter()
                .rev()
                .find(|upload| upload.recipients.contains(&user))
                .map(|upload| upload.message_id.clone());
            (user, ledger.users[user].clone(), newest)
        };
        let (index, user, newest) = picked;
        let session = match user.session {
            Some(session) if !self.rng.random_bool(0.25) => session,
            _ => {
                let Some(session) = self.web_sign_in(&user).await else { return };
                self.ledger().users[index].session = Some(session.clone());
                session
            }
        };
        let cookie = format!("{SESSION_COOKIE}={session}");
        let answer = self
            .request(RequestKind::Mailbox, &[200], &[], |http, base| {
                http.get(format!("{base}/mailbox")).header(reqwest::header::COOKIE, &cookie)
            })
            .await;
        let Some(answer) = answer else { return };
        if let Some(newest) = newest
            && !String::from_utf8_lossy(&answer.body).contains(&format!("/messages/{newest}"))
        {
            self.fail(format!("the mailbox of {} does not list {newest}", user.email));
        }
    }

    /// The session cookie of a new sign-in with the password.
    async fn web_sign_in(&mut self, user: &User) -> Option<String> {
        let csrf = data_encoding::BASE64URL_NOPAD.encode(&self.rng.random::<[u8; 32]>());
        let form = [
            ("email", user.email.as_str()),
            ("password", user.password.as_str()),
            ("csrf", csrf.as_str()),
            ("next", "/mailbox"),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}", form_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
        let cookie = format!("{CSRF_COOKIE}={csrf}");
        let answer = self
            .request(RequestKind::WebSignIn, &[303], &[], |http, base| {
                http.post(format!("{base}/signin"))
                    .header(reqwest::header::COOKIE, &cookie)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.clone())
            })
            .await?;
        let session = answer
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|line| line.split(';').next()?.split_once('='))
            .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
            .map(|(_, value)| value.to_owned());
        if session.is_none() {
            self.fail(format!("signing {} in set no session cookie", user.email));
        }
        session
    }

    /// Signs a new device in on one instance and lists the devices with its
    /// token on the next.
    async fn sign_in(&mut self) {
        let user = {
            let ledger = lock(&self.shared);
            ledger.users[self.rng.random_range(0..ledger.users.len())].clone()
        };
        let Some(tokens) = self.enroll(&user.email, &user.password).await else { return };
        let answer = self
            .request(RequestKind::DeviceList, &[200], &[], |http, base| {
                http.get(format!("{base}/api/v1/devices")).bearer_auth(&tokens.access_token)
            })
            .await;
        let Some(answer) = answer else { return };
        let Some(devices) = self.parse::<Vec<Device>>(RequestKind::DeviceList, &answer.body) else {
            return;
        };
        if !devices.iter().any(|device| device.device_id == tokens.device_id && device.current) {
            self.fail(format!(
                "the device list of {} lacks the device {} just signed in",
                user.email, tokens.device_id
            ));
        }
    }
}

/// A plain-text message of exactly `bytes` bytes: headers, then lines of
/// random letters and digits.
fn message(rng: &mut StdRng, sequence: usize, bytes: usize) -> Vec<u8> {
    let mut message = format!(
        "From: Load Sender <sender@example.test>\r\nTo: Recipients <recipients@example.test>\r\n\
         Subject: Load message {sequence}\r\nMessage-ID: <load-{sequence}@example.test>\r\n\
         Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    while message.len() < bytes {
        let line = (bytes - message.len()).min(78);
        let letters = line.saturating_sub(2);
        message.extend((&mut *rng).sample_iter(Alphanumeric).take(letters));
        message.extend_from_slice(&b"\r\n"[..line - letters]);
    }
    message
}
