-- Times are Unix seconds (UTC). Ids are random 128-bit values in base32hex.

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,      -- normalised: trimmed, lowercase
    display_name  TEXT,
    password_hash TEXT,                      -- argon2id PHC string; NULL for code-only accounts
    created_at    INTEGER NOT NULL
);

-- One outstanding code per address; a new request replaces the old code.
CREATE TABLE verification_codes (
    email       TEXT PRIMARY KEY,
    code_hash   BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE devices (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts(id),
    name               TEXT NOT NULL,
    access_hash        BLOB NOT NULL UNIQUE,   -- SHA-256 of the opaque token
    access_expires_at  INTEGER NOT NULL,
    refresh_hash       BLOB NOT NULL UNIQUE,
    refresh_expires_at INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    revoked_at         INTEGER
);
CREATE INDEX devices_account ON devices(account_id);

CREATE TABLE messages (
    id                TEXT PRIMARY KEY,
    sender_account_id TEXT NOT NULL REFERENCES accounts(id),
    content_sha256    TEXT NOT NULL,
    size              INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX messages_sender ON messages(sender_account_id);

-- Recipients are addresses, not accounts: most have no account yet when the
-- message is stored.
CREATE TABLE message_recipients (
    message_id TEXT NOT NULL REFERENCES messages(id),
    email      TEXT NOT NULL,
    PRIMARY KEY (message_id, email)
);
CREATE INDEX message_recipients_email ON message_recipients(email);

CREATE TABLE retrievals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT NOT NULL REFERENCES messages(id),
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    device_id    TEXT NOT NULL REFERENCES devices(id),
    retrieved_at INTEGER NOT NULL
);
CREATE INDEX retrievals_message ON retrievals(message_id);
