-- State that several server instances on one database must share, and
-- that the embedded store keeps the same way. Times are Unix seconds (UTC).

-- Secrets every instance uses alike: the key of notification links and
-- the key of VERP return paths.
CREATE TABLE shared_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Notification-signing keys: the active one signs, all are published.
CREATE TABLE signing_keys (
    key_id     TEXT PRIMARY KEY,
    pkcs8_pem  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    active     INTEGER NOT NULL CHECK (active IN (0, 1))
) WITHOUT ROWID;
-- At most one active key.
CREATE UNIQUE INDEX signing_keys_active ON signing_keys(active) WHERE active = 1;

-- Fixed-window counters of the rate limits (code requests, failed logins).
CREATE TABLE rate_limits (
    key            TEXT PRIMARY KEY,   -- the limit's name and what it counts, e.g. "codes-ip:192.0.2.1"
    window_ends_at INTEGER NOT NULL,
    count          INTEGER NOT NULL
) WITHOUT ROWID;

-- The content of small messages; larger content is in object storage.
-- No foreign key: content is written before its message row.
CREATE TABLE message_content (
    message_id TEXT PRIMARY KEY,
    content    BLOB NOT NULL
) WITHOUT ROWID;
