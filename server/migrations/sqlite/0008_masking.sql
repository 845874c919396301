-- Masked addresses and reply routing. Times are Unix seconds (UTC).

-- The outbox also carries mail that is not a secure message's notification:
-- mail sent and relayed for members under their masked addresses, and the
-- "not permitted" answers to unknown senders. Such rows have no message,
-- and may name their own envelope sender ('' is the null sender; NULL
-- means the row's VERP address). SQLite cannot relax a NOT NULL column in
-- place, so the table is rebuilt with its rows and index.
CREATE TABLE outbox_rebuilt (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT REFERENCES messages(id),
    recipient       TEXT NOT NULL,
    email           BLOB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed', 'bounced')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    relay_answer    TEXT,
    last_error      TEXT,
    envelope_sender TEXT,
    UNIQUE (message_id, recipient)
);
INSERT INTO outbox_rebuilt (id, message_id, recipient, email, state, attempts, next_attempt_at,
                            created_at, updated_at, relay_answer, last_error)
    SELECT id, message_id, recipient, email, state, attempts, next_attempt_at,
           created_at, updated_at, relay_answer, last_error FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);

-- Named groups of directory entries, as imported from the CSV's group column.
CREATE TABLE directory_groups (
    name  TEXT NOT NULL,   -- normalised: trimmed, lowercase
    email TEXT NOT NULL REFERENCES directory(email) ON DELETE CASCADE,
    PRIMARY KEY (name, email)
) WITHOUT ROWID;
CREATE INDEX directory_groups_email ON directory_groups(email);

-- One address per (member, correspondent, conversation): a random local
-- part at the masking domain, never an encoding of the parties.
CREATE TABLE reply_addresses (
    address       TEXT PRIMARY KEY,   -- lowercase
    member_email  TEXT NOT NULL,      -- the member's account address
    correspondent TEXT NOT NULL,      -- lowercase
    thread        TEXT NOT NULL,      -- the conversation's random id
    created_at    INTEGER NOT NULL,
    disabled_at   INTEGER,
    UNIQUE (member_email, correspondent, thread)
) WITHOUT ROWID;

-- Every decision about mail to a masked address, for admins.
CREATE TABLE relay_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    address         TEXT NOT NULL,   -- the masked address written to
    envelope_sender TEXT NOT NULL,   -- '' for the null sender
    from_address    TEXT,            -- the From header's address
    member_email    TEXT,            -- whose address it is
    decision        TEXT NOT NULL,   -- relayed, sent_masked, auto_replied, dropped, refused
    reason          TEXT NOT NULL,
    header_message_id TEXT
);
CREATE INDEX relay_log_at ON relay_log(at);

-- When each sender was last told they may not write here (once a week at most).
CREATE TABLE auto_replies (
    recipient TEXT PRIMARY KEY,
    sent_at   INTEGER NOT NULL
) WITHOUT ROWID;
