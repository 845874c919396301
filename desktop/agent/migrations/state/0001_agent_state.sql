-- The agent's own state, kept apart from the search index (which can be
-- rebuilt from the mailbox) so that deleting one never loses the other.
-- Times are Unix seconds.

-- Where the next pass over each watched folder starts.
CREATE TABLE folder_cursors (
    folder        TEXT PRIMARY KEY,
    uid_validity  INTEGER NOT NULL,
    next_uid      INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Placeholders left in place, and why; a row goes once the swap succeeds.
CREATE TABLE kept_placeholders (
    folder       TEXT NOT NULL,
    uid          INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    reason       TEXT NOT NULL,
    temporary    INTEGER NOT NULL,   -- 1: retried; 0: will not change (revoked, expired)
    first_seen   INTEGER NOT NULL,
    last_tried   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL,
    PRIMARY KEY (folder, uid)
);
CREATE INDEX kept_placeholders_message ON kept_placeholders (message_id);

-- Notifications that failed verification: possible phishing, left alone.
CREATE TABLE rejected_notifications (
    folder       TEXT NOT NULL,
    uid          INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    seen_at      INTEGER NOT NULL,
    PRIMARY KEY (folder, uid)
);

-- Secure messages swapped in, newest last.
CREATE TABLE swaps (
    id           INTEGER PRIMARY KEY,
    folder       TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    swapped_at   INTEGER NOT NULL
);

-- What each folder's watcher is doing, for `status` in another process.
CREATE TABLE connections (
    folder       TEXT PRIMARY KEY,
    state        TEXT NOT NULL,      -- 'connected' or 'reconnecting'
    detail       TEXT,               -- the last error while reconnecting
    since        INTEGER NOT NULL
);
