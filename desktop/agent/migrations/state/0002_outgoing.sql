-- Secure messages on their way out, one row per draft, written before
-- anything is sent so that a crash at any step resumes where it stopped:
-- the upload carries `client_key` (sent again, it finds the stored
-- message), each recipient's notification is recorded once its mail
-- server accepted it, the copy filed in Sent is found by its header, and
-- the draft leaves the Outbox folder last. Times are Unix seconds.
CREATE TABLE outgoing (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    client_key          TEXT NOT NULL UNIQUE,
    -- The draft as written, Bcc included; dropped once it is filed in Sent.
    draft               BLOB,
    subject             TEXT NOT NULL,
    -- 'queued' (to be sent or resumed), 'sent', or 'failed' (told to the user).
    state               TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed')),
    error               TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    -- The sender's expiry choice: Unix seconds, or -1 for never; NULL: the
    -- organization's default.
    expires_at          INTEGER,
    -- Where the draft came from, when a mail client put it in the Outbox folder.
    source_folder       TEXT,
    source_uid_validity INTEGER,
    source_uid          INTEGER,
    -- The server's answer to the upload (the message id and the signed
    -- notifications), once stored.
    message_id          TEXT,
    stored              TEXT,
    filed_at            INTEGER,
    source_removed_at   INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (source_folder, source_uid_validity, source_uid)
);
CREATE INDEX outgoing_due ON outgoing(state, next_attempt_at);

CREATE TABLE outgoing_recipients (
    outgoing_id  INTEGER NOT NULL REFERENCES outgoing(id) ON DELETE CASCADE,
    recipient    TEXT NOT NULL,
    -- When the sender's mail server accepted this recipient's notification.
    sent_at      INTEGER,
    relay_answer TEXT,
    -- Why it refused it for good.
    error        TEXT,
    PRIMARY KEY (outgoing_id, recipient)
);

-- Where the last look at the server's recalls ended.
CREATE TABLE recall_cursor (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    since INTEGER NOT NULL
);
