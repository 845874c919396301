-- The notification outbox: a row exists before anything is sent, so a crash
-- or a relay outage loses nothing. Times are Unix seconds (UTC).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL REFERENCES messages(id),
    recipient       TEXT NOT NULL,
    email           BLOB NOT NULL,              -- the complete RFC 5322 notification, DKIM-signed
    state           TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed', 'bounced')),
    attempts        INTEGER NOT NULL DEFAULT 0, -- sending attempts started
    next_attempt_at INTEGER NOT NULL,           -- also the lease of an attempt in progress
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    relay_answer    TEXT,                       -- the relay's acceptance (its queue id) once sent
    last_error      TEXT,                       -- why the last attempt failed, or the bounce report
    UNIQUE (message_id, recipient)
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
