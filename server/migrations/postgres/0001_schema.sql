-- The schema of the PostgreSQL store, for several server instances on one
-- database: the tables of the embedded (SQLite) store after all of its
-- migrations, 0001 to 0009, in one step.
--
-- Times are Unix seconds (UTC) in BIGINT columns, the same representation
-- as the embedded store, so the code that reads and writes them and any
-- export of the data are one for both. Ids are random 128-bit values in
-- base32hex. Integers are BIGINT throughout, as SQLite's are 64-bit.
--
-- Text that lists are ordered by (ids, directory addresses and group names,
-- key ids) is COLLATE "C": compared byte by byte, as SQLite compares text,
-- so both stores list in the same order whatever the database's locale.
-- Columns referring to such a column share its collation.

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,      -- normalised: trimmed, lowercase
    display_name  TEXT,
    password_hash TEXT,                      -- argon2id PHC string; NULL for code-only accounts
    created_at    BIGINT NOT NULL
);

-- One outstanding code per address; a new request replaces the old code.
CREATE TABLE verification_codes (
    email       TEXT PRIMARY KEY,
    code_hash   BYTEA NOT NULL,
    expires_at  BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0
);

-- The Secure Message Center signs browsers in as devices of their own
-- kind, so the account page lists and revokes them with the desktop apps
-- and a read in the browser is a retrieval like any other. A browser's
-- session cookie is its access token; it has no refresh token, so its
-- refresh hash is that of a random value never handed out.
CREATE TABLE devices (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts(id),
    kind               TEXT NOT NULL DEFAULT 'agent' CHECK (kind IN ('agent', 'browser')),
    name               TEXT NOT NULL,
    access_hash        BYTEA NOT NULL UNIQUE,   -- SHA-256 of the opaque token
    access_expires_at  BIGINT NOT NULL,
    refresh_hash       BYTEA NOT NULL UNIQUE,
    refresh_expires_at BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    revoked_at         BIGINT
);
CREATE INDEX devices_account ON devices(account_id);

-- Secure messages, and their lifecycle: expiry, recall by the sender.
CREATE TABLE messages (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    sender_account_id  TEXT NOT NULL REFERENCES accounts(id),
    content_sha256     TEXT NOT NULL,
    size               BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    -- Shown in mailbox lists without opening each message's content. NULL
    -- for messages stored before it was kept.
    subject            TEXT,
    expires_at         BIGINT,
    recalled_at        BIGINT,
    -- Set once the content of an expired or recalled message is deleted.
    content_removed_at BIGINT,
    -- The Message-ID header of the stored MIME, without angle brackets: a
    -- later message's In-Reply-To or References naming it is a reply.
    header_message_id  TEXT,
    -- The client's own key for one upload, so an upload sent again after a
    -- lost answer finds the message already stored.
    client_key         TEXT
);
CREATE INDEX messages_sender ON messages(sender_account_id);
CREATE UNIQUE INDEX messages_client_key ON messages(sender_account_id, client_key)
    WHERE client_key IS NOT NULL;
CREATE INDEX messages_header_id ON messages(header_message_id)
    WHERE header_message_id IS NOT NULL;
CREATE INDEX messages_to_purge ON messages(expires_at)
    WHERE content_removed_at IS NULL AND expires_at IS NOT NULL;

-- Recipients are addresses, not accounts: most have no account yet when the
-- message is stored. They read back in the order given (SQLite keeps it in
-- its rowids; here `position` does).
CREATE TABLE message_recipients (
    message_id TEXT COLLATE "C" NOT NULL REFERENCES messages(id),
    email      TEXT NOT NULL,
    position   BIGINT NOT NULL,   -- 1 for the first recipient given, and so on
    PRIMARY KEY (message_id, email)
);
CREATE INDEX message_recipients_email ON message_recipients(email);

-- Retrieval records are only ever appended, many per second under load.
CREATE TABLE retrievals (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   TEXT COLLATE "C" NOT NULL REFERENCES messages(id),
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    device_id    TEXT COLLATE "C" NOT NULL REFERENCES devices(id),
    retrieved_at BIGINT NOT NULL
);
CREATE INDEX retrievals_message ON retrievals(message_id);

-- The outbox: a row exists before anything is sent, so a crash or a relay
-- outage loses nothing. Besides secure messages' notifications it carries
-- mail that is not one: mail sent and relayed for members under their
-- masked addresses, and the "not permitted" answers to unknown senders.
-- Such rows have no message, and may name their own envelope sender (''
-- is the null sender; NULL means the row's VERP address). Ids BY DEFAULT:
-- VERP return paths and bounce reports name them, so a copy of an embedded
-- database keeps its ids.
CREATE TABLE outbox (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    message_id      TEXT COLLATE "C" REFERENCES messages(id),
    recipient       TEXT NOT NULL,
    email           BYTEA NOT NULL,              -- the complete RFC 5322 mail, DKIM-signed
    state           TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed', 'bounced')),
    attempts        BIGINT NOT NULL DEFAULT 0,   -- sending attempts started
    next_attempt_at BIGINT NOT NULL,             -- also the lease of an attempt in progress
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    relay_answer    TEXT,                        -- the relay's acceptance (its queue id) once sent
    last_error      TEXT,                        -- why the last attempt failed, or the bounce report
    envelope_sender TEXT,
    UNIQUE (message_id, recipient)
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);

-- Changes an admin made to the organization's identity through the API, on
-- top of the configuration file: one JSON document (OrganizationUpdate).
CREATE TABLE organization (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    overrides  TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The organization's directory of recognised correspondents: mail from
-- these addresses to a member's masked address may be relayed. Imported
-- from CSV or kept through the admin API.
CREATE TABLE directory (
    email      TEXT COLLATE "C" PRIMARY KEY,   -- normalised: trimmed, lowercase
    name       TEXT,
    updated_at BIGINT NOT NULL
);

-- Named groups of directory entries, as imported from the CSV's group column.
CREATE TABLE directory_groups (
    name  TEXT COLLATE "C" NOT NULL,   -- normalised: trimmed, lowercase
    email TEXT COLLATE "C" NOT NULL REFERENCES directory(email) ON DELETE CASCADE,
    PRIMARY KEY (name, email)
);
CREATE INDEX directory_groups_email ON directory_groups(email);

-- A recipient's first answer to a message, stored through Sealpost.
CREATE TABLE replies (
    message_id TEXT COLLATE "C" NOT NULL REFERENCES messages(id),
    email      TEXT NOT NULL,
    reply_id   TEXT COLLATE "C" NOT NULL REFERENCES messages(id),
    replied_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, email)
);

-- One address per (member, correspondent, conversation): a random local
-- part at the masking domain, never an encoding of the parties.
CREATE TABLE reply_addresses (
    address       TEXT PRIMARY KEY,   -- lowercase
    member_email  TEXT NOT NULL,      -- the member's account address
    correspondent TEXT NOT NULL,      -- lowercase
    thread        TEXT NOT NULL,      -- the conversation's random id
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT,
    UNIQUE (member_email, correspondent, thread)
);

-- Every decision about mail to a masked address, for admins.
CREATE TABLE relay_log (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                BIGINT NOT NULL,
    address           TEXT NOT NULL,   -- the masked address written to
    envelope_sender   TEXT NOT NULL,   -- '' for the null sender
    from_address      TEXT,            -- the From header's address
    member_email      TEXT,            -- whose address it is
    decision          TEXT NOT NULL,   -- relayed, sent_masked, auto_replied, dropped, refused
    reason            TEXT NOT NULL,
    header_message_id TEXT
);
CREATE INDEX relay_log_at ON relay_log(at);

-- When each sender was last told they may not write here (once a week at most).
CREATE TABLE auto_replies (
    recipient TEXT PRIMARY KEY,
    sent_at   BIGINT NOT NULL
);

-- Secrets every instance uses alike: the key of notification links and
-- the key of VERP return paths.
CREATE TABLE shared_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Notification-signing keys: the active one signs, all are published.
CREATE TABLE signing_keys (
    key_id     TEXT COLLATE "C" PRIMARY KEY,
    pkcs8_pem  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    active     BOOLEAN NOT NULL
);
-- At most one active key.
CREATE UNIQUE INDEX signing_keys_active ON signing_keys(active) WHERE active;

-- Fixed-window counters of the rate limits (code requests, failed logins).
CREATE TABLE rate_limits (
    key            TEXT PRIMARY KEY,   -- the limit's name and what it counts, e.g. "codes-ip:192.0.2.1"
    window_ends_at BIGINT NOT NULL,
    count          BIGINT NOT NULL
);

-- The content of small messages; larger content is in object storage.
-- No foreign key: content is written before its message row.
CREATE TABLE message_content (
    message_id TEXT COLLATE "C" PRIMARY KEY,
    content    BYTEA NOT NULL
);
