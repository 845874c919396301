-- The agent's local search index of swapped messages. Times are Unix seconds.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    message_id  TEXT NOT NULL UNIQUE,   -- the Sealpost message id
    folder      TEXT NOT NULL,
    uid         INTEGER NOT NULL,       -- where a client opens it
    sender      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    date        INTEGER,
    indexed_at  INTEGER NOT NULL
);

-- Full text, one row per message (rowid = messages.id).
CREATE VIRTUAL TABLE message_text USING fts5(
    sender, recipients, subject, body, attachments,
    tokenize = 'unicode61 remove_diacritics 2'
);
