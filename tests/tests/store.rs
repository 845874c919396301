//! The storage contract ([`Store`]), each test written once and run against
//! both stores: the embedded SQLite store and the PostgreSQL store, on a
//! real server of its own (`store::<test>::sqlite`, `store::<test>::postgres`).
//!
//! Tests of what several server instances on one database must get right
//! use two stores: with PostgreSQL two `PgStore`s (two pools) on the same
//! database, as two instances have; with SQLite its one store twice, since
//! an embedded database belongs to one process.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::future::join_all;
use sealpost_harness::PostgresServer;
use sealpost_proto::{ContentDigest, MessageId};
use sealpost_server::store::postgres::PgStore;
use sealpost_server::store::sqlite::SqliteStore;
use sealpost_server::store::{
    AccountRecord, CodeCheck, DeviceKind, DirectoryChanges, MessageRecord, NewDirectoryEntry,
    NewMail, NewNotification, OutboxState, RateLimited, RelayLogRecord, Store, StoreError,
    StoredSigningKey, TokenHashes,
};
use time::{Duration, OffsetDateTime};

/// Each test as `mod <test> { sqlite, postgres }`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let stores = super::Stores::sqlite().await;
                super::$name(&stores).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let stores = super::Stores::postgres().await;
                super::$name(&stores).await;
            }
        }
    )*};
}

store_tests!(
    // One store.
    a_reply_address_is_issued_once_per_member_correspondent_and_thread,
    directory_entries_are_added_renamed_and_found_by_address,
    directory_groups_are_imported_replaced_and_removed_with_their_entry,
    a_code_is_accepted_once_and_attempts_are_capped,
    an_expired_code_is_refused,
    duplicate_accounts_conflict,
    a_refresh_token_rotates_once_and_not_after_revocation,
    devices_are_listed_revoked_by_kind_and_their_retrievals_recorded,
    retrievals_made_at_once_are_all_recorded_and_a_bad_one_fails_alone,
    a_message_reads_back_with_its_recipients_in_order,
    messages_are_listed_newest_first_and_found_by_client_key,
    a_recalled_or_expired_message_is_purged_once,
    replies_and_notifications_by_the_senders_server_are_recorded,
    a_device_and_a_message_are_found_together_as_they_are_apart,
    a_caller_read_before_is_never_admitted_after_a_revocation_or_rotation,
    queued_notifications_are_leased_retried_and_settled,
    masked_mail_is_queued_claimed_and_logged,
    auto_replies_go_once_a_week_per_sender_and_are_capped_per_hour,
    organization_overrides_are_saved_and_replaced,
    a_shared_secret_is_the_first_candidate_stored,
    signing_keys_are_made_once_and_rotated_with_the_old_ones_kept,
    a_rate_limit_refuses_until_its_window_ends,
    content_is_kept_read_and_removed,
    // Two stores on one database, as two instances.
    a_device_revoked_through_one_instance_is_refused_by_the_other,
    notifications_claimed_at_once_are_each_claimed_once,
    a_lease_is_renewed_only_by_the_worker_that_holds_it,
    copies_of_one_mail_arriving_together_are_answered_once,
    instances_starting_together_make_one_signing_key_and_share_secrets,
    a_rate_limit_holds_across_instances,
    guesses_made_at_once_never_exceed_the_attempts,
    reply_addresses_issued_at_once_agree,
);

/// Two handles on one fresh database.
struct Stores {
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
    /// What the stores need kept until the test ends.
    _dir: Option<tempfile::TempDir>,
    _server: Option<PostgresServer>,
}

impl Stores {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("open store"));
        Self { first: store.clone(), second: store, _dir: Some(dir), _server: None }
    }

    /// Both stores opened together, as instances starting at once migrate together.
    async fn postgres() -> Self {
        let server = PostgresServer::start().await.expect("start PostgreSQL");
        let url = server.url();
        let (first, second) = tokio::join!(PgStore::open(&url, 8), PgStore::open(&url, 8));
        Self {
            first: Arc::new(first.expect("open first store")),
            second: Arc::new(second.expect("open second store")),
            _dir: None,
            _server: Some(server),
        }
    }

    /// The stores in turn, for work spread over both.
    fn either(&self, index: usize) -> Arc<dyn Store> {
        if index.is_multiple_of(2) { self.first.clone() } else { self.second.clone() }
    }
}

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).expect("time")
}

/// Tokens `[seed; 32]` (access) and `[seed + 100; 32]` (refresh), valid until `until`.
fn tokens(seed: u8, until: OffsetDateTime) -> TokenHashes {
    TokenHashes {
        access_hash: [seed; 32],
        access_expires_at: until,
        refresh_hash: [seed + 100; 32],
        refresh_expires_at: until,
    }
}

/// A one-byte message from `sender` to `recipients`, created at `at`.
fn message(sender: &AccountRecord, recipients: &[&str], at: OffsetDateTime) -> MessageRecord {
    MessageRecord {
        id: MessageId::generate(),
        sender_account_id: sender.id.clone(),
        sender_email: sender.email.clone(),
        content_sha256: ContentDigest::of(b"x"),
        size: 1,
        created_at: at,
        recipients: recipients.iter().map(|&r| r.to_owned()).collect(),
        subject: Some("Results".into()),
        expires_at: None,
        recalled_at: None,
        header_message_id: None,
        client_key: None,
    }
}

fn notifications_for(message: &MessageRecord) -> Vec<NewNotification> {
    message
        .recipients
        .iter()
        .map(|r| NewNotification { recipient: r.clone(), email: r.as_bytes().to_vec() })
        .collect()
}

fn entry(email: &str, name: Option<&str>, groups: Option<&[&str]>) -> NewDirectoryEntry {
    NewDirectoryEntry {
        email: email.into(),
        name: name.map(str::to_owned),
        groups: groups.map(|groups| groups.iter().map(|&g| g.to_owned()).collect()),
    }
}

fn signing_key(key_id: &str, created_at: i64) -> StoredSigningKey {
    StoredSigningKey {
        key_id: key_id.into(),
        pkcs8_pem: format!("PEM of {key_id}"),
        created_at: at(created_at),
        active: true,
    }
}

async fn a_reply_address_is_issued_once_per_member_correspondent_and_thread(stores: &Stores) {
    let store = &*stores.first;
    let now = OffsetDateTime::now_utc();
    let pair = |who: &str, candidate: &str| (who.to_owned(), candidate.to_owned());
    let first = store
        .issue_reply_addresses("m@x", "t1", &[pair("b@y", "m.1@r"), pair("a@y", "m.2@r")], now)
        .await
        .expect("issue");
    assert_eq!(first, ["m.1@r", "m.2@r"]);
    // Again with fresh candidates: the addresses issued before.
    let again = store
        .issue_reply_addresses("m@x", "t1", &[pair("a@y", "m.3@r"), pair("b@y", "m.4@r")], now)
        .await
        .expect("issue");
    assert_eq!(again, ["m.2@r", "m.1@r"]);
    let other_thread = store
        .issue_reply_addresses("m@x", "t2", &[pair("a@y", "m.5@r")], now)
        .await
        .expect("issue");
    assert_eq!(other_thread, ["m.5@r"]);
    let issued = store.reply_address("m.1@r").await.expect("read").expect("stored");
    assert_eq!((issued.correspondent.as_str(), issued.thread.as_str()), ("b@y", "t1"));
    assert_eq!(issued.member_email, "m@x");
    assert_eq!(issued.created_at.unix_timestamp(), now.unix_timestamp());
    assert_eq!(issued.disabled_at, None);
    assert_eq!(store.reply_address("m.9@r").await.expect("read"), None);
}

async fn directory_entries_are_added_renamed_and_found_by_address(stores: &Stores) {
    let store = &*stores.first;
    let at = at(1_800_000_000);
    let first =
        [entry("tim@alumni.example", Some("Tim"), None), entry("ann@alumni.example", None, None)];
    let changes = store.import_directory(&first, at).await.expect("import");
    assert_eq!(changes, DirectoryChanges { added: 2, updated: 0, unchanged: 0 });
    let renamed = [
        entry("tim@alumni.example", Some("Timothy"), None),
        entry("ann@alumni.example", None, None),
    ];
    let changes = store.import_directory(&renamed, at).await.expect("import");
    assert_eq!(changes, DirectoryChanges { added: 0, updated: 1, unchanged: 1 });
    let tim = store.directory_entry("tim@alumni.example").await.expect("read");
    assert_eq!(tim.map(|t| (t.name, t.updated_at)), Some((Some("Timothy".into()), at)));
    assert_eq!(store.directory_entry("greg@elsewhere.example").await.expect("read"), None);
    assert!(store.remove_directory_entry("ann@alumni.example").await.expect("remove"));
    assert!(!store.remove_directory_entry("ann@alumni.example").await.expect("remove"));
    assert_eq!(store.directory_page(0, 10).await.expect("page").1, 1);
}

async fn directory_groups_are_imported_replaced_and_removed_with_their_entry(stores: &Stores) {
    let store = &*stores.first;
    let now = at(1_800_000_000);
    let group = |name: &'static str| async move {
        let entries = store.directory_group(name).await.expect("group");
        entries.into_iter().map(|e| e.email).collect::<Vec<_>>()
    };
    let entries = [
        entry("tim@x.example", Some("Tim"), Some(&["board", "alumni"])),
        entry("ann@x.example", None, Some(&["alumni"])),
        entry("greg@x.example", None, None),
    ];
    store.import_directory(&entries, now).await.expect("import");
    assert_eq!(group("alumni").await, ["ann@x.example", "tim@x.example"]);
    assert_eq!(group("board").await, ["tim@x.example"]);
    assert!(group("nobody").await.is_empty());

    // The same groups in another order change nothing; other groups do.
    let same = [entry("tim@x.example", Some("Tim"), Some(&["alumni", "board", "board"]))];
    let changes = store.import_directory(&same, now).await.expect("import");
    assert_eq!(changes, DirectoryChanges { added: 0, updated: 0, unchanged: 1 });
    let fewer = [entry("tim@x.example", Some("Tim"), Some(&["board"]))];
    let changes = store.import_directory(&fewer, now).await.expect("import");
    assert_eq!(changes, DirectoryChanges { added: 0, updated: 1, unchanged: 0 });
    assert_eq!(group("alumni").await, ["ann@x.example"]);
    // A file without a group column keeps the groups.
    let no_groups = [entry("tim@x.example", Some("Tim"), None)];
    let changes = store.import_directory(&no_groups, now).await.expect("import");
    assert_eq!(changes, DirectoryChanges { added: 0, updated: 0, unchanged: 1 });
    assert_eq!(group("board").await, ["tim@x.example"]);

    assert!(store.remove_directory_entry("tim@x.example").await.expect("remove"));
    assert!(group("board").await.is_empty());

    // Pages in the order of the addresses' bytes, as SQLite compares text.
    let addresses = ["a.b@x.example", "a-b@x.example", "a_b@x.example", "ab@x.example", "a0@x"];
    let more: Vec<_> = addresses.iter().map(|&a| entry(a, None, None)).collect();
    store.import_directory(&more, now).await.expect("import");
    let mut expected: Vec<&str> = addresses.to_vec();
    expected.extend(["ann@x.example", "greg@x.example"]);
    expected.sort_unstable();
    let (page, total) = store.directory_page(0, 4).await.expect("page");
    assert_eq!(total, 7);
    assert_eq!(page.iter().map(|e| e.email.as_str()).collect::<Vec<_>>(), expected[..4]);
    let (page, _) = store.directory_page(4, 4).await.expect("page");
    assert_eq!(page.iter().map(|e| e.email.as_str()).collect::<Vec<_>>(), expected[4..]);
}

async fn a_code_is_accepted_once_and_attempts_are_capped(stores: &Stores) {
    let store = &*stores.first;
    let now = OffsetDateTime::now_utc();
    let expires = now + Duration::minutes(15);
    store.put_code("a@example.test", [1; 32], expires).await.expect("put");
    assert_eq!(
        store.check_code("a@example.test", [2; 32], 3, now).await.expect("check"),
        CodeCheck::Rejected
    );
    assert_eq!(
        store.check_code("a@example.test", [1; 32], 3, now).await.expect("check"),
        CodeCheck::Accepted
    );
    assert_eq!(
        store.check_code("a@example.test", [1; 32], 3, now).await.expect("check"),
        CodeCheck::NoValidCode
    );

    store.put_code("a@example.test", [1; 32], expires).await.expect("put");
    for _ in 0..3 {
        assert_eq!(
            store.check_code("a@example.test", [9; 32], 3, now).await.expect("check"),
            CodeCheck::Rejected
        );
    }
    // Out of attempts: even the right code no longer works.
    assert_eq!(
        store.check_code("a@example.test", [1; 32], 3, now).await.expect("check"),
        CodeCheck::NoValidCode
    );
    // A new code starts its attempts afresh.
    store.put_code("a@example.test", [4; 32], expires).await.expect("put");
    assert_eq!(
        store.check_code("a@example.test", [4; 32], 3, now).await.expect("check"),
        CodeCheck::Accepted
    );
}

async fn an_expired_code_is_refused(stores: &Stores) {
    let store = &*stores.first;
    let now = OffsetDateTime::now_utc();
    store.put_code("a@example.test", [1; 32], now - Duration::seconds(1)).await.expect("put");
    assert_eq!(
        store.check_code("a@example.test", [1; 32], 3, now).await.expect("check"),
        CodeCheck::NoValidCode
    );
}

async fn duplicate_accounts_conflict(stores: &Stores) {
    let store = &*stores.first;
    let account = store
        .create_account("a@example.test", Some("Ann"), Some("$argon2id$x"))
        .await
        .expect("first");
    assert!(matches!(
        store.create_account("a@example.test", None, None).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.account_by_email("a@example.test").await.expect("read"), Some(account));
    assert_eq!(store.account_by_email("b@example.test").await.expect("read"), None);
}

async fn a_refresh_token_rotates_once_and_not_after_revocation(stores: &Stores) {
    let store = &*stores.first;
    let now = OffsetDateTime::now_utc();
    let later = now + Duration::hours(1);
    let account = store.create_account("a@example.test", None, None).await.expect("account");
    let pair = |seed: u8| tokens(seed, later);
    let device = store
        .create_device(&account.id, DeviceKind::Agent, "laptop", &pair(1))
        .await
        .expect("device");
    let rotated = store.rotate_tokens([101; 32], &pair(2), now).await.expect("rotate");
    assert_eq!(rotated.map(|d| (d.id, d.name)), Some((device.id.clone(), "laptop".into())));
    assert!(
        store.rotate_tokens([101; 32], &pair(3), now).await.expect("rotate").is_none(),
        "old refresh token reused"
    );
    assert!(
        store.rotate_tokens([102; 32], &pair(4), later).await.expect("rotate").is_none(),
        "expired refresh token used"
    );
    assert!(store.revoke_device(&account.id, &device.id, now).await.expect("revoke"));
    assert!(
        store.rotate_tokens([102; 32], &pair(4), now).await.expect("rotate").is_none(),
        "revoked device refreshed"
    );
}

async fn devices_are_listed_revoked_by_kind_and_their_retrievals_recorded(stores: &Stores) {
    let store = &*stores.first;
    let now = at(1_800_000_000);
    let later = now + Duration::hours(1);
    let account = store.create_account("a@example.test", None, None).await.expect("account");
    let other = store.create_account("o@example.test", None, None).await.expect("account");
    let create = |kind, name: &'static str, seed| {
        let account = &account;
        async move {
            store
                .create_device(&account.id, kind, name, &tokens(seed, later))
                .await
                .expect("device")
        }
    };
    let laptop = create(DeviceKind::Agent, "laptop", 1).await;
    let phone = create(DeviceKind::Agent, "phone", 2).await;
    let browser = create(DeviceKind::Browser, "Firefox", 3).await;

    let mut listed = store.devices_of(&account.id).await.expect("devices");
    assert_eq!(listed.len(), 3);
    let order: Vec<_> =
        listed.iter().map(|d| (d.created_at.unix_timestamp(), d.id.as_str().to_owned())).collect();
    assert!(order.is_sorted(), "devices listed out of order: {order:?}");
    listed.sort_by_key(|d| d.name.clone());
    assert_eq!(
        listed.iter().map(|d| (d.name.as_str(), d.kind)).collect::<Vec<_>>(),
        [
            ("Firefox", DeviceKind::Browser),
            ("laptop", DeviceKind::Agent),
            ("phone", DeviceKind::Agent)
        ]
    );
    assert!(store.devices_of(&other.id).await.expect("devices").is_empty());

    let message = message(&other, &["a@example.test"], now);
    store.insert_message(&message, &[], &[]).await.expect("insert");
    store.record_retrieval(&message.id, &account.id, &browser.id, now).await.expect("retrieval");
    store
        .record_retrieval(&message.id, &account.id, &laptop.id, now + Duration::seconds(5))
        .await
        .expect("retrieval");
    let retrievals = store.retrievals(&message.id).await.expect("retrievals");
    assert_eq!(
        retrievals
            .iter()
            .map(|r| (
                r.account_email.as_str(),
                &r.device_id,
                r.device_kind,
                r.device_name.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            ("a@example.test", &browser.id, DeviceKind::Browser, "Firefox"),
            ("a@example.test", &laptop.id, DeviceKind::Agent, "laptop")
        ]
    );
    assert_eq!(retrievals[1].retrieved_at, now + Duration::seconds(5));

    // Another account's device is not this account's to revoke.
    assert!(!store.revoke_device(&other.id, &laptop.id, now).await.expect("revoke"));
    let agents_but_laptop = store
        .revoke_devices(&account.id, Some(DeviceKind::Agent), Some(&laptop.id), now)
        .await
        .expect("revoke");
    assert_eq!(agents_but_laptop, 1);
    let (revoked, _) = store.device_by_access_hash([2; 32]).await.expect("read").expect("found");
    assert_eq!((revoked.id, revoked.revoked_at), (phone.id, Some(now)));
    let all = store.revoke_devices(&account.id, None, None, later).await.expect("revoke");
    assert_eq!(all, 2);
    assert_eq!(store.revoke_devices(&account.id, None, None, later).await.expect("revoke"), 0);
    // A second revocation keeps the first time.
    assert!(
        store
            .revoke_device(&account.id, &browser.id, later + Duration::hours(1))
            .await
            .expect("revoke")
    );
    let (browser_now, caller) =
        store.device_by_access_hash([3; 32]).await.expect("read").expect("found");
    assert_eq!(browser_now.revoked_at, Some(later));
    assert_eq!(caller.email, "a@example.test");

    store.set_password_hash(&account.id, "$argon2id$new").await.expect("password");
    let read = store.account_by_email("a@example.test").await.expect("read").expect("found");
    assert_eq!(read.password_hash.as_deref(), Some("$argon2id$new"));
}

async fn retrievals_made_at_once_are_all_recorded_and_a_bad_one_fails_alone(stores: &Stores) {
    let store = &*stores.first;
    let now = at(1_800_000_000);
    let account = store.create_account("s@example.test", None, None).await.expect("account");
    let later = now + Duration::hours(1);
    let device = store
        .create_device(&account.id, DeviceKind::Agent, "laptop", &tokens(1, later))
        .await
        .expect("device");
    let message = message(&account, &["a@example.test"], now);
    store.insert_message(&message, &[], &[]).await.expect("insert");
    // Not stored: its row breaks the foreign key, in whichever group it lands.
    let unknown = MessageId::generate();

    let attempts = (0..40).map(|index| {
        let id = if index == 17 { &unknown } else { &message.id };
        store.record_retrieval(id, &account.id, &device.id, now)
    });
    let outcomes = join_all(attempts).await;
    let failed: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(index, outcome)| outcome.is_err().then_some(index))
        .collect();
    assert_eq!(failed, [17]);
    assert_eq!(store.retrievals(&message.id).await.expect("retrievals").len(), 39);
}

async fn a_message_reads_back_with_its_recipients_in_order(stores: &Stores) {
    let store = &*stores.first;
    let sender = store.create_account("s@example.test", None, None).await.expect("account");
    let created = at(1_800_000_000);
    let recipients = ["z@example.test", "a@example.test", "m@example.test"];
    let mut message = message(&sender, &recipients, created);
    message.expires_at = Some(created + Duration::days(30));
    message.header_message_id = Some("results@example.test".into());
    message.client_key = Some("upload-1".into());
    message.size = 5_000_000_000;
    store.insert_message(&message, &[], &[]).await.expect("insert");
    assert_eq!(store.message(&message.id).await.expect("read"), Some(message.clone()));
    assert_eq!(store.message(&MessageId::generate()).await.expect("read"), None);

    // A recipient given twice is kept once, where it came first.
    let mut twice = self::message(&sender, &["b@x", "c@x", "b@x", "a@x"], created);
    store.insert_message(&twice, &[], &[]).await.expect("insert");
    twice.recipients = vec!["b@x".into(), "c@x".into(), "a@x".into()];
    assert_eq!(store.message(&twice.id).await.expect("read"), Some(twice));

    let nobody = self::message(&sender, &[], created);
    store.insert_message(&nobody, &[], &[]).await.expect("insert");
    assert_eq!(store.message(&nobody.id).await.expect("read"), Some(nobody));
}

async fn messages_are_listed_newest_first_and_found_by_client_key(stores: &Stores) {
    let store = &*stores.first;
    let sender =
        store.create_account("s@example.test", Some("Sam Sender"), None).await.expect("account");
    let other = store.create_account("o@example.test", None, None).await.expect("account");
    let t = 1_800_000_000;
    let mut first = message(&sender, &["a@example.test"], at(t));
    first.client_key = Some("key-1".into());
    let second = message(&sender, &["b@example.test", "a@example.test"], at(t + 10));
    // Two at the same second: the greater id first.
    let tied = [
        message(&sender, &["a@example.test"], at(t + 20)),
        message(&sender, &["a@example.test"], at(t + 20)),
    ];
    let from_other = message(&other, &["a@example.test"], at(t + 5));
    for message in [&first, &second, &tied[0], &tied[1], &from_other] {
        store.insert_message(message, &[], &[]).await.expect("insert");
    }
    let mut tied_ids = [tied[0].id.clone(), tied[1].id.clone()];
    tied_ids.sort_by(|a, b| b.as_str().cmp(a.as_str()));

    let received = store.received_messages("a@example.test", 10).await.expect("received");
    let ids: Vec<_> = received.iter().map(|m| m.id.clone()).collect();
    assert_eq!(
        ids,
        [
            tied_ids[0].clone(),
            tied_ids[1].clone(),
            second.id.clone(),
            from_other.id.clone(),
            first.id.clone()
        ]
    );
    let listed_second = &received[2];
    assert_eq!(listed_second.sender_email, "s@example.test");
    assert_eq!(listed_second.sender_name.as_deref(), Some("Sam Sender"));
    assert_eq!(listed_second.subject.as_deref(), Some("Results"));
    assert_eq!((listed_second.size, listed_second.created_at), (1, at(t + 10)));
    assert_eq!(listed_second.recipients, ["b@example.test", "a@example.test"]);
    assert_eq!(received[3].sender_name, None);
    let newest = store.received_messages("a@example.test", 1).await.expect("received");
    assert_eq!(newest.iter().map(|m| &m.id).collect::<Vec<_>>(), [&tied_ids[0]]);
    assert!(store.received_messages("z@example.test", 10).await.expect("received").is_empty());

    let sent = store.sent_messages(&sender.id, 10).await.expect("sent");
    let ids: Vec<_> = sent.iter().map(|m| m.id.clone()).collect();
    assert_eq!(
        ids,
        [tied_ids[0].clone(), tied_ids[1].clone(), second.id.clone(), first.id.clone()]
    );

    let found = store.message_by_client_key(&sender.id, "key-1").await.expect("read");
    assert_eq!(found, Some(first.clone()));
    assert_eq!(store.message_by_client_key(&other.id, "key-1").await.expect("read"), None);
    assert_eq!(store.message_by_client_key(&sender.id, "key-2").await.expect("read"), None);

    // The same client key again, or the same id, is a conflict.
    let mut again = message(&sender, &["a@example.test"], at(t + 30));
    again.client_key = Some("key-1".into());
    assert!(matches!(store.insert_message(&again, &[], &[]).await, Err(StoreError::Conflict)));
    let mut same_id = message(&sender, &["c@example.test"], at(t + 30));
    same_id.id = second.id.clone();
    let outgoing = notifications_for(&same_id);
    assert!(matches!(
        store.insert_message(&same_id, &[], &outgoing).await,
        Err(StoreError::Conflict)
    ));
    // Nothing of a refused message was kept.
    assert!(store.received_messages("c@example.test", 10).await.expect("received").is_empty());
    assert!(store.notifications_of(&second.id).await.expect("notifications").is_empty());
    // Another sender may use the same client key.
    let mut others = message(&other, &["a@example.test"], at(t + 30));
    others.client_key = Some("key-1".into());
    store.insert_message(&others, &[], &[]).await.expect("insert");
}

async fn a_recalled_or_expired_message_is_purged_once(stores: &Stores) {
    let store = &*stores.first;
    let sender = store.create_account("s@example.test", None, None).await.expect("account");
    let t = 1_800_000_000;
    let mut expiring = message(&sender, &["a@example.test"], at(t));
    expiring.expires_at = Some(at(t + 100));
    let recalled = message(&sender, &["a@example.test", "b@example.test"], at(t));
    let kept = message(&sender, &["a@example.test"], at(t));
    store.insert_message(&expiring, &[], &[]).await.expect("insert");
    store.insert_message(&recalled, &[], &notifications_for(&recalled)).await.expect("insert");
    store.insert_message(&kept, &[], &[]).await.expect("insert");
    let sent = store.claim_due_notifications(at(t), at(t + 60), 1).await.expect("claim");
    store.mark_notification_sent(sent[0].id, "250 ok", at(t)).await.expect("sent");

    assert_eq!(store.recall_message(&recalled.id, at(t + 50)).await.expect("recall"), at(t + 50));
    assert_eq!(store.recall_message(&recalled.id, at(t + 60)).await.expect("recall"), at(t + 50));
    assert!(store.recall_message(&MessageId::generate(), at(t + 60)).await.is_err());
    let read = store.message(&recalled.id).await.expect("read").expect("found");
    assert_eq!(read.recalled_at, Some(at(t + 50)));
    // The notification not yet sent will not be.
    let notifications = store.notifications_of(&recalled.id).await.expect("notifications");
    let states: Vec<_> = notifications.iter().map(|n| (n.state, n.last_error.as_deref())).collect();
    assert_eq!(
        states,
        [
            (OutboxState::Sent, None),
            (OutboxState::Failed, Some("recalled by the sender before it was sent"))
        ]
    );
    assert_eq!(notifications[1].updated_at, at(t + 50));

    let recalls = store.recalls_for("b@example.test", at(t), 10).await.expect("recalls");
    assert_eq!(recalls, [(recalled.id.clone(), at(t + 50))]);
    assert!(store.recalls_for("b@example.test", at(t + 51), 10).await.expect("recalls").is_empty());
    assert!(store.recalls_for("c@example.test", at(t), 10).await.expect("recalls").is_empty());

    let due = |now| async move {
        let ids = store.messages_to_purge(at(now), 10).await.expect("purge");
        ids.into_iter().map(|id| id.as_str().to_owned()).collect::<HashSet<_>>()
    };
    let ids = |messages: &[&MessageRecord]| {
        messages.iter().map(|m| m.id.as_str().to_owned()).collect::<HashSet<_>>()
    };
    assert_eq!(due(t + 99).await, ids(&[&recalled]));
    assert_eq!(due(t + 100).await, ids(&[&recalled, &expiring]));
    assert_eq!(store.messages_to_purge(at(t + 100), 1).await.expect("purge").len(), 1);
    store.mark_content_removed(&recalled.id, at(t + 101)).await.expect("removed");
    assert_eq!(due(t + 200).await, ids(&[&expiring]));
    store.mark_content_removed(&expiring.id, at(t + 201)).await.expect("removed");
    assert!(due(t + 300).await.is_empty());
}

async fn replies_and_notifications_by_the_senders_server_are_recorded(stores: &Stores) {
    let store = &*stores.first;
    let sender = store.create_account("s@example.test", None, None).await.expect("account");
    let answerer = store.create_account("a@example.test", None, None).await.expect("account");
    let outsider = store.create_account("x@example.test", None, None).await.expect("account");
    let t = 1_800_000_000;
    let mut original = message(&sender, &["a@example.test", "b@example.test"], at(t));
    original.header_message_id = Some("original@example.test".into());
    // The sender's own server notifies b; a is notified through the outbox.
    let queued = [NewNotification { recipient: "a@example.test".into(), email: b"to a".to_vec() }];
    store.insert_message(&original, &[], &queued).await.expect("insert");

    let answers = ["unknown@example.test".to_owned(), "original@example.test".to_owned()];
    let reply = message(&answerer, &["s@example.test"], at(t + 5));
    store.insert_message(&reply, &answers, &[]).await.expect("reply");
    // Not a recipient of the original: no reply of theirs is recorded.
    let stranger = message(&outsider, &["s@example.test"], at(t + 6));
    store.insert_message(&stranger, &answers, &[]).await.expect("insert");
    // The first reply counts.
    let second = message(&answerer, &["s@example.test"], at(t + 9));
    store.insert_message(&second, &answers, &[]).await.expect("reply");
    assert_eq!(
        store.replies_to(&original.id).await.expect("replies"),
        [("a@example.test".to_owned(), at(t + 5))]
    );
    assert!(store.replies_to(&reply.id).await.expect("replies").is_empty());

    let both = ["a@example.test".to_owned(), "b@example.test".to_owned()];
    store
        .record_sender_notified(&original.id, &both, "250 2.0.0 queued", at(t + 1))
        .await
        .expect("record");
    let more = ["b@example.test".to_owned(), "c@example.test".to_owned()];
    store
        .record_sender_notified(&original.id, &more, "250 again", at(t + 2))
        .await
        .expect("record");
    store.record_sender_notified(&original.id, &[], "250", at(t + 3)).await.expect("record");
    let records = store.notifications_of(&original.id).await.expect("notifications");
    let seen: Vec<_> = records
        .iter()
        .map(|r| {
            (r.recipient.as_str(), r.state, r.attempts, r.relay_answer.as_deref(), r.updated_at)
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a@example.test", OutboxState::Queued, 0, None, at(t)),
            ("b@example.test", OutboxState::Sent, 1, Some("250 2.0.0 queued"), at(t + 1)),
            ("c@example.test", OutboxState::Sent, 1, Some("250 again"), at(t + 2)),
        ]
    );
    // Recorded, not to be sent.
    let claimed = store.claim_due_notifications(at(t + 10), at(t + 70), 10).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|e| e.recipient.as_str()).collect::<Vec<_>>(),
        ["a@example.test"]
    );
    assert_eq!(claimed[0].message_id.as_ref(), Some(&original.id));
}

async fn a_device_and_a_message_are_found_together_as_they_are_apart(stores: &Stores) {
    let store = &*stores.first;
    let account = store.create_account("s@example.test", None, None).await.expect("account");
    let later = at(1_900_000_000);
    store
        .create_device(&account.id, DeviceKind::Agent, "laptop", &tokens(7, later))
        .await
        .expect("device");
    let created = at(1_800_000_000);
    let message = message(&account, &["b@example.test", "a@example.test"], created);
    store.insert_message(&message, &[], &[]).await.expect("insert");

    let apart = store.device_by_access_hash([7; 32]).await.expect("device");
    let (together, found) = store.device_and_message([7; 32], &message.id).await.expect("together");
    assert!(together.is_some());
    assert_eq!(together, apart);
    assert_eq!(found, Some(message.clone()));

    let (device, missing) =
        store.device_and_message([7; 32], &MessageId::generate()).await.expect("together");
    assert_eq!(device, apart);
    assert_eq!(missing, None);

    let nobody = store.device_and_message([9; 32], &message.id).await.expect("together");
    assert_eq!(nobody, (None, None));
}

async fn a_caller_read_before_is_never_admitted_after_a_revocation_or_rotation(stores: &Stores) {
    let store = &*stores.first;
    let now = OffsetDateTime::now_utc();
    let later = now + Duration::hours(1);
    let account = store.create_account("a@example.test", None, None).await.expect("account");
    let laptop = store
        .create_device(&account.id, DeviceKind::Agent, "laptop", &tokens(1, later))
        .await
        .expect("device");
    store
        .create_device(&account.id, DeviceKind::Agent, "phone", &tokens(2, later))
        .await
        .expect("device");
    let message = message(&account, &["b@example.test"], now);
    store.insert_message(&message, &[], &[]).await.expect("insert");
    // Read, and so kept where a store keeps callers, both ways a request reads one.
    for _ in 0..2 {
        assert!(store.device_by_access_hash([1; 32]).await.expect("read").is_some());
        assert!(store.device_and_message([2; 32], &message.id).await.expect("read").0.is_some());
    }

    assert!(store.revoke_device(&account.id, &laptop.id, now).await.expect("revoke"));
    let (device, _) = store.device_by_access_hash([1; 32]).await.expect("read").expect("found");
    assert!(device.revoked_at.is_some(), "a kept caller outlived its revocation");

    assert!(
        store.rotate_tokens([102; 32], &tokens(3, later), now).await.expect("rotate").is_some()
    );
    assert_eq!(store.device_and_message([2; 32], &message.id).await.expect("read").0, None);
    assert_eq!(store.device_by_access_hash([2; 32]).await.expect("read"), None);
    assert!(store.device_by_access_hash([3; 32]).await.expect("read").is_some());
}

async fn queued_notifications_are_leased_retried_and_settled(stores: &Stores) {
    let store = &*stores.first;
    let sender = store.create_account("s@example.test", None, None).await.expect("account");
    let now = at(1_800_000_000);
    let message = message(&sender, &["a@example.test", "b@example.test"], now);
    store.insert_message(&message, &[], &notifications_for(&message)).await.expect("insert");
    assert_eq!(store.next_notification_due().await.expect("due"), Some(now));

    let lease = now + Duration::minutes(5);
    let claimed = store.claim_due_notifications(now, lease, 10).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert_eq!((claimed[0].attempts, claimed[0].email.as_slice()), (1, &b"a@example.test"[..]));
    assert_eq!(claimed[0].message_id.as_ref(), Some(&message.id));
    assert_eq!((claimed[0].envelope_sender.as_deref(), claimed[0].created_at), (None, now));
    // Leased: not claimable again until the lease ends.
    assert!(store.claim_due_notifications(now, lease, 10).await.expect("claim").is_empty());
    let after_lease = store.claim_due_notifications(lease, lease, 10).await.expect("claim");
    assert_eq!(after_lease.len(), 2, "an attempt cut short is retried after its lease");

    let (a, b) = (after_lease[0].id, after_lease[1].id);
    store.mark_notification_sent(a, "250 2.0.0 Ok: queued as ABC", lease).await.expect("sent");
    let retry_at = lease + Duration::minutes(1);
    store.mark_notification_retry(b, "connection refused", retry_at, lease).await.expect("retry");
    assert_eq!(store.next_notification_due().await.expect("due"), Some(retry_at));
    let third = store.claim_due_notifications(retry_at, retry_at, 10).await.expect("claim");
    assert_eq!(third.iter().map(|e| (e.id, e.attempts)).collect::<Vec<_>>(), [(b, 3)]);
    store.mark_notification_failed(b, "550 no such user", retry_at).await.expect("failed");
    // Settled rows never change back to sent, nor are retried.
    store.mark_notification_sent(b, "late", retry_at).await.expect("no-op");
    store.mark_notification_retry(a, "late", retry_at, retry_at).await.expect("no-op");

    let records = store.notifications_of(&message.id).await.expect("records");
    assert_eq!(records[0].state, OutboxState::Sent);
    assert_eq!(records[0].relay_answer.as_deref(), Some("250 2.0.0 Ok: queued as ABC"));
    assert_eq!(records[0].last_error, None);
    assert_eq!(records[1].state, OutboxState::Failed);
    assert_eq!(records[1].last_error.as_deref(), Some("550 no such user"));
    assert_eq!((records[1].attempts, records[1].updated_at), (3, retry_at));
    assert_eq!(store.next_notification_due().await.expect("due"), None);

    assert!(store.mark_notification_bounced(a, "bounced (5.1.1)", retry_at).await.expect("bounce"));
    assert!(!store.mark_notification_bounced(9999, "x", retry_at).await.expect("bounce"));
    let mut counts = store.outbox_counts().await.expect("counts");
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(counts, [(OutboxState::Bounced, 1), (OutboxState::Failed, 1)]);
}

async fn masked_mail_is_queued_claimed_and_logged(stores: &Stores) {
    let store = &*stores.first;
    let now = at(1_800_000_000);
    let mail = |recipient: &str, sender: Option<&str>| NewMail {
        recipient: recipient.into(),
        envelope_sender: sender.map(str::to_owned),
        email: format!("mail to {recipient}").into_bytes(),
    };
    let mails = [mail("c@x", Some("")), mail("a@x", None), mail("b@x", Some("m.1@r"))];
    let ids = store.queue_mail(&mails, now).await.expect("queue");
    assert_eq!(ids.len(), 3);
    assert!(ids.is_sorted() && ids[0] < ids[2], "{ids:?}");
    assert!(store.queue_mail(&[], now).await.expect("queue").is_empty());
    assert_eq!(store.outbox_counts().await.expect("counts"), [(OutboxState::Queued, 3)]);

    let claimed =
        store.claim_due_notifications(now, now + Duration::minutes(5), 10).await.expect("claim");
    let seen: Vec<_> = claimed
        .iter()
        .map(|e| (e.id, e.message_id.clone(), e.recipient.as_str(), e.envelope_sender.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (ids[0], None, "c@x", Some("")),
            (ids[1], None, "a@x", None),
            (ids[2], None, "b@x", Some("m.1@r"))
        ]
    );
    assert_eq!(claimed[1].email, b"mail to a@x");

    let decision = |address: &str, decision: &str, seconds| RelayLogRecord {
        at: at(seconds),
        address: address.into(),
        envelope_sender: String::new(),
        from_address: Some("c@x".into()),
        member_email: None,
        decision: decision.into(),
        reason: format!("{decision} because"),
        header_message_id: Some("id@x".into()),
    };
    let log = [
        decision("m.1@r", "relayed", 1),
        decision("m.2@r", "dropped", 3),
        decision("m.3@r", "refused", 2),
    ];
    for record in &log {
        store.record_relay_decision(record).await.expect("log");
    }
    assert_eq!(store.relay_log(2).await.expect("log"), [log[2].clone(), log[1].clone()]);
    assert_eq!(store.relay_log(10).await.expect("log").len(), 3);

    let pair = [("c@x".to_owned(), "m.9@r".to_owned())];
    store.issue_reply_addresses("m@x", "t", &pair, now).await.expect("issue");
    assert!(store.disable_reply_address("m.9@r", at(1_800_000_100)).await.expect("disable"));
    assert!(store.disable_reply_address("m.9@r", at(1_800_000_200)).await.expect("disable"));
    let disabled = store.reply_address("m.9@r").await.expect("read").expect("found");
    assert_eq!(disabled.disabled_at, Some(at(1_800_000_100)));
    assert!(!store.disable_reply_address("m.0@r", now).await.expect("disable"));
}

async fn auto_replies_go_once_a_week_per_sender_and_are_capped_per_hour(stores: &Stores) {
    let store = &*stores.first;
    let t = at(1_800_000_000);
    let claim = |recipient: &'static str, now: OffsetDateTime| async move {
        store.claim_auto_reply(recipient, now - Duration::weeks(1), 2, now).await.expect("claim")
    };
    assert!(claim("x@y", t).await);
    assert!(!claim("x@y", t + Duration::minutes(1)).await, "answered twice within a week");
    assert!(claim("y@y", t + Duration::minutes(2)).await);
    assert!(!claim("z@y", t + Duration::minutes(3)).await, "over the hourly cap");
    assert!(claim("z@y", t + Duration::minutes(61)).await, "the hour of the first has passed");
    assert!(!claim("x@y", t + Duration::days(6)).await);
    assert!(claim("x@y", t + Duration::weeks(1) + Duration::seconds(1)).await);
}

async fn organization_overrides_are_saved_and_replaced(stores: &Stores) {
    let store = &*stores.first;
    store.ping().await.expect("ping");
    assert_eq!(store.organization_overrides().await.expect("read"), None);
    store.save_organization_overrides(r#"{"name":"A"}"#, at(1_800_000_000)).await.expect("save");
    store.save_organization_overrides(r#"{"name":"B"}"#, at(1_800_000_001)).await.expect("save");
    assert_eq!(
        store.organization_overrides().await.expect("read").as_deref(),
        Some(r#"{"name":"B"}"#)
    );
}

async fn a_shared_secret_is_the_first_candidate_stored(stores: &Stores) {
    let store = &*stores.first;
    let now = at(1_800_000_000);
    let first = store.shared_secret("links", b"first", now).await.expect("secret");
    assert_eq!(first, b"first");
    let second = store.shared_secret("links", b"second", now).await.expect("secret");
    assert_eq!(second, b"first");
    let other = store.shared_secret("verp", &[0, 255, 7], now).await.expect("secret");
    assert_eq!(other, [0, 255, 7]);
}

async fn signing_keys_are_made_once_and_rotated_with_the_old_ones_kept(stores: &Stores) {
    let store = &*stores.first;
    assert!(store.signing_keys().await.expect("keys").is_empty());
    let first = signing_key("k1", 1_800_000_000);
    assert!(store.add_signing_key(&first, true).await.expect("add"));
    assert!(!store.add_signing_key(&signing_key("k0", 1_800_000_001), true).await.expect("add"));
    assert_eq!(store.signing_keys().await.expect("keys"), std::slice::from_ref(&first));

    // Rotated: the new key signs, the old one stays published.
    let second = signing_key("k2", 1_800_000_100);
    assert!(store.add_signing_key(&second, false).await.expect("add"));
    let retired = |key: &StoredSigningKey| StoredSigningKey { active: false, ..key.clone() };
    assert_eq!(store.signing_keys().await.expect("keys"), [second.clone(), retired(&first)]);

    // Active first even when older; then newest first.
    let third = signing_key("k3", 1_700_000_000);
    assert!(store.add_signing_key(&third, false).await.expect("add"));
    let expected = [third.clone(), retired(&second), retired(&first)];
    assert_eq!(store.signing_keys().await.expect("keys"), expected);

    // A key id stored before conflicts, and changes nothing.
    assert!(matches!(store.add_signing_key(&second, false).await, Err(StoreError::Conflict)));
    assert_eq!(store.signing_keys().await.expect("keys"), expected);
}

async fn a_rate_limit_refuses_until_its_window_ends(stores: &Stores) {
    let store = &*stores.first;
    let t = 1_800_000_000;
    let window = Duration::minutes(1);
    let hit = |key: &'static str, now: i64| async move {
        store.hit_rate_limit(key, 3, window, at(now)).await.expect("hit")
    };
    let check = |key: &'static str, now: i64| async move {
        store.check_rate_limit(key, 3, at(now)).await.expect("check")
    };
    assert_eq!(check("a", t).await, RateLimited::Allowed);
    for second in 0..3 {
        assert_eq!(check("a", t + second).await, RateLimited::Allowed);
        assert_eq!(hit("a", t + second).await, RateLimited::Allowed);
    }
    let refused = RateLimited::RefusedUntil(at(t + 60));
    assert_eq!(check("a", t + 3).await, refused);
    assert_eq!(hit("a", t + 3).await, refused);
    assert_eq!(hit("a", t + 59).await, refused);
    assert_eq!(check("a", t + 59).await, refused);
    // Other keys count apart.
    assert_eq!(hit("b", t + 10).await, RateLimited::Allowed);
    assert_eq!(check("b", t + 10).await, RateLimited::Allowed);

    assert_eq!(store.forget_rate_limits(at(t + 59)).await.expect("forget"), 0);
    // The window over, a new one starts with the next event.
    assert_eq!(check("a", t + 60).await, RateLimited::Allowed);
    assert_eq!(hit("a", t + 60).await, RateLimited::Allowed);
    assert_eq!(hit("a", t + 61).await, RateLimited::Allowed);
    assert_eq!(hit("a", t + 62).await, RateLimited::Allowed);
    assert_eq!(hit("a", t + 63).await, RateLimited::RefusedUntil(at(t + 120)));
    // "b"'s window (t + 10 to t + 70) has ended; "a"'s has not.
    assert_eq!(store.forget_rate_limits(at(t + 70)).await.expect("forget"), 1);
    assert_eq!(check("a", t + 70).await, RateLimited::RefusedUntil(at(t + 120)));
    assert_eq!(store.forget_rate_limits(at(t + 120)).await.expect("forget"), 1);
    assert_eq!(check("a", t + 70).await, RateLimited::Allowed, "forgotten");
}

async fn content_is_kept_read_and_removed(stores: &Stores) {
    let store = &*stores.first;
    let id = MessageId::generate();
    assert_eq!(store.content(&id).await.expect("read"), None);
    let content: Vec<u8> = (0..=255).collect();
    store.put_content(&id, &content).await.expect("put");
    assert_eq!(store.content(&id).await.expect("read"), Some(content.clone()));
    assert!(matches!(store.put_content(&id, b"other").await, Err(StoreError::Conflict)));
    assert_eq!(store.content(&id).await.expect("read"), Some(content));
    let empty = MessageId::generate();
    store.put_content(&empty, b"").await.expect("put");
    assert_eq!(store.content(&empty).await.expect("read"), Some(Vec::new()));
    store.remove_content(&id).await.expect("remove");
    assert_eq!(store.content(&id).await.expect("read"), None);
    store.remove_content(&id).await.expect("remove again");
}

async fn a_device_revoked_through_one_instance_is_refused_by_the_other(stores: &Stores) {
    let (one, other) = (&*stores.first, &*stores.second);
    let now = OffsetDateTime::now_utc();
    let later = now + Duration::hours(1);
    let account = one.create_account("a@example.test", None, None).await.expect("account");
    let laptop = one
        .create_device(&account.id, DeviceKind::Agent, "laptop", &tokens(1, later))
        .await
        .expect("device");
    one.create_device(&account.id, DeviceKind::Agent, "phone", &tokens(2, later))
        .await
        .expect("device");
    let message = message(&account, &["b@example.test"], now);
    one.insert_message(&message, &[], &[]).await.expect("insert");
    for _ in 0..2 {
        assert!(one.device_by_access_hash([1; 32]).await.expect("read").is_some());
        assert!(one.device_and_message([2; 32], &message.id).await.expect("read").0.is_some());
    }

    assert!(other.revoke_device(&account.id, &laptop.id, now).await.expect("revoke"));
    let (device, _) = one.device_by_access_hash([1; 32]).await.expect("read").expect("found");
    assert!(
        device.revoked_at.is_some(),
        "revoked through the other instance, admitted by this one"
    );
    assert!(
        other.rotate_tokens([102; 32], &tokens(3, later), now).await.expect("rotate").is_some()
    );
    assert_eq!(one.device_and_message([2; 32], &message.id).await.expect("read").0, None);
    assert_eq!(one.device_by_access_hash([2; 32]).await.expect("read"), None);

    // A recall through the other instance is seen at once too.
    other.recall_message(&message.id, now).await.expect("recall");
    let (_, read) = one.device_and_message([3; 32], &message.id).await.expect("read");
    assert!(read.expect("found").recalled_at.is_some());
    assert!(one.message(&message.id).await.expect("read").expect("found").recalled_at.is_some());
}

async fn notifications_claimed_at_once_are_each_claimed_once(stores: &Stores) {
    let now = at(1_800_000_000);
    let lease = now + Duration::minutes(5);
    let mails: Vec<NewMail> = (0..200)
        .map(|index| NewMail {
            recipient: format!("r{index}@example.test"),
            envelope_sender: None,
            email: b"mail".to_vec(),
        })
        .collect();
    let queued = stores.first.queue_mail(&mails, now).await.expect("queue");
    assert_eq!(queued.len(), 200);

    let claimers = (0..8).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due_notifications(now, lease, 7).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                assert!(batch.iter().all(|entry| entry.attempts == 1), "claimed twice");
                assert!(batch.is_sorted_by_key(|entry| entry.id));
                mine.extend(batch.into_iter().map(|entry| entry.id));
            }
        })
    });
    let mut claimed: Vec<i64> =
        join_all(claimers).await.into_iter().flat_map(|mine| mine.expect("claimer")).collect();
    assert_eq!(claimed.len(), 200, "claimed {} of 200 rows", claimed.len());
    claimed.sort_unstable();
    claimed.dedup();
    assert_eq!(claimed, queued, "a row claimed twice, or one never");
    assert!(stores.second.claim_due_notifications(now, lease, 10).await.expect("claim").is_empty());
    assert_eq!(stores.second.next_notification_due().await.expect("due"), Some(lease));
}

async fn a_lease_is_renewed_only_by_the_worker_that_holds_it(stores: &Stores) {
    let now = at(1_800_000_000);
    let lease = now + Duration::minutes(5);
    let mail = NewMail { recipient: "r@example.test".into(), envelope_sender: None, email: vec![] };
    stores.first.queue_mail(&[mail], now).await.expect("queue");
    let mine = stores.first.claim_due_notifications(now, lease, 1).await.expect("claim").remove(0);

    // Renewed while held: not due again before the new lease ends.
    let renewed = lease + Duration::minutes(5);
    assert!(
        stores
            .first
            .renew_notification_lease(mine.id, mine.attempts, renewed)
            .await
            .expect("renew")
    );
    assert!(
        stores.second.claim_due_notifications(lease, lease, 1).await.expect("claim").is_empty()
    );

    // Once that lease has run out, another worker takes it; the first may not renew any more.
    let theirs = stores.second.claim_due_notifications(renewed, renewed, 1).await.expect("claim");
    assert_eq!(
        theirs.iter().map(|entry| (entry.id, entry.attempts)).collect::<Vec<_>>(),
        [(mine.id, 2)]
    );
    let later = renewed + Duration::minutes(5);
    assert!(
        !stores.first.renew_notification_lease(mine.id, mine.attempts, later).await.expect("renew")
    );
    assert!(stores.second.renew_notification_lease(mine.id, 2, later).await.expect("renew"));

    // A settled row is renewed by nobody.
    stores.second.mark_notification_sent(mine.id, "250 ok", renewed).await.expect("sent");
    assert!(!stores.second.renew_notification_lease(mine.id, 2, later).await.expect("renew"));
}

async fn copies_of_one_mail_arriving_together_are_answered_once(stores: &Stores) {
    let now = at(1_800_000_000);
    let not_since = now - Duration::weeks(1);
    let claims = (0..20).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move {
            store.claim_auto_reply("x@example.test", not_since, 100, now).await.expect("claim")
        })
    });
    let answered =
        join_all(claims).await.into_iter().filter(|won| *won.as_ref().expect("claim")).count();
    assert_eq!(answered, 1);

    // Many senders at once: the hourly cap holds.
    let claims = (0..20).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move {
            let sender = format!("s{index}@example.test");
            store.claim_auto_reply(&sender, not_since, 5, now).await.expect("claim")
        })
    });
    let answered =
        join_all(claims).await.into_iter().filter(|won| *won.as_ref().expect("claim")).count();
    assert_eq!(answered, 4, "five answers an hour, one of them sent before");
}

async fn instances_starting_together_make_one_signing_key_and_share_secrets(stores: &Stores) {
    let starts = (0..10).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move {
            let key = signing_key(&format!("k{index}"), 1_800_000_000);
            let made = store.add_signing_key(&key, true).await.expect("add");
            let secret = store
                .shared_secret("links", format!("secret {index}").as_bytes(), key.created_at)
                .await
                .expect("secret");
            (made, secret)
        })
    });
    let outcomes: Vec<(bool, Vec<u8>)> =
        join_all(starts).await.into_iter().map(|outcome| outcome.expect("start")).collect();
    assert_eq!(outcomes.iter().filter(|(made, _)| *made).count(), 1);
    let keys = stores.second.signing_keys().await.expect("keys");
    assert_eq!(keys.len(), 1);
    assert!(keys[0].active);
    let secrets: HashSet<&Vec<u8>> = outcomes.iter().map(|(_, secret)| secret).collect();
    assert_eq!(secrets.len(), 1, "instances disagree on a shared secret");

    // Rotations at once leave one active key and every key published.
    let rotations = (0..6).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move {
            store.add_signing_key(&signing_key(&format!("r{index}"), 1_800_000_100), false).await
        })
    });
    for rotation in join_all(rotations).await {
        assert!(rotation.expect("rotation").expect("rotate"));
    }
    let keys = stores.first.signing_keys().await.expect("keys");
    assert_eq!(keys.len(), 7);
    assert_eq!(keys.iter().filter(|key| key.active).count(), 1);
    assert!(keys[0].active);
}

async fn a_rate_limit_holds_across_instances(stores: &Stores) {
    let now = at(1_800_000_000);
    let hits = (0..20).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move {
            store.hit_rate_limit("logins:a@example.test", 5, Duration::minutes(10), now).await
        })
    });
    let outcomes: Vec<RateLimited> =
        join_all(hits).await.into_iter().map(|hit| hit.expect("task").expect("hit")).collect();
    let allowed = outcomes.iter().filter(|outcome| **outcome == RateLimited::Allowed).count();
    assert_eq!(allowed, 5);
    let refused = RateLimited::RefusedUntil(now + Duration::minutes(10));
    assert!(outcomes.iter().all(|outcome| *outcome == RateLimited::Allowed || *outcome == refused));
    let checked = stores.second.check_rate_limit("logins:a@example.test", 5, now).await;
    assert_eq!(checked.expect("check"), refused);
}

async fn guesses_made_at_once_never_exceed_the_attempts(stores: &Stores) {
    let now = OffsetDateTime::now_utc();
    stores
        .first
        .put_code("a@example.test", [1; 32], now + Duration::minutes(15))
        .await
        .expect("put");
    let guesses = (0..20).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move { store.check_code("a@example.test", [9; 32], 3, now).await })
    });
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for guess in join_all(guesses).await {
        let outcome = guess.expect("task").expect("check");
        *outcomes.entry(format!("{outcome:?}")).or_default() += 1;
    }
    assert_eq!(outcomes, BTreeMap::from([("NoValidCode".into(), 17), ("Rejected".into(), 3)]));
    let right = stores.second.check_code("a@example.test", [1; 32], 3, now).await;
    assert_eq!(right.expect("check"), CodeCheck::NoValidCode);

    // Of right guesses made at once, one is accepted.
    stores
        .first
        .put_code("b@example.test", [2; 32], now + Duration::minutes(15))
        .await
        .expect("put");
    let guesses = (0..10).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move { store.check_code("b@example.test", [2; 32], 3, now).await })
    });
    let accepted = join_all(guesses)
        .await
        .into_iter()
        .filter(|guess| {
            *guess.as_ref().expect("task").as_ref().expect("check") == CodeCheck::Accepted
        })
        .count();
    assert_eq!(accepted, 1);
}

async fn reply_addresses_issued_at_once_agree(stores: &Stores) {
    let now = at(1_800_000_000);
    let issues = (0..12).map(|index| {
        let store = stores.either(index);
        tokio::spawn(async move {
            let mut candidates: Vec<(String, String)> = ["a@y", "b@y", "c@y"]
                .iter()
                .map(|who| (who.to_string(), format!("m.{index}.{who}")))
                .collect();
            if index % 3 == 1 {
                candidates.reverse();
            }
            let addresses =
                store.issue_reply_addresses("m@x", "t", &candidates, now).await.expect("issue");
            candidates.into_iter().map(|(who, _)| who).zip(addresses).collect::<BTreeMap<_, _>>()
        })
    });
    let issued: Vec<BTreeMap<String, String>> =
        join_all(issues).await.into_iter().map(|issue| issue.expect("issue")).collect();
    assert!(issued.iter().all(|one| *one == issued[0]), "{issued:#?}");
    assert_eq!(issued[0].len(), 3);
}
