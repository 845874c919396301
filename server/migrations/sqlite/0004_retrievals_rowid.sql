-- Retrieval records are only ever appended, many per second under load:
-- plain rowids keep them in order without the bookkeeping row that
-- AUTOINCREMENT rewrites on every insert.
CREATE TABLE retrievals_appended (
    id           INTEGER PRIMARY KEY,
    message_id   TEXT NOT NULL REFERENCES messages(id),
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    device_id    TEXT NOT NULL REFERENCES devices(id),
    retrieved_at INTEGER NOT NULL
);
INSERT INTO retrievals_appended (id, message_id, account_id, device_id, retrieved_at)
    SELECT id, message_id, account_id, device_id, retrieved_at FROM retrievals;
DROP TABLE retrievals;
ALTER TABLE retrievals_appended RENAME TO retrievals;
CREATE INDEX retrievals_message ON retrievals(message_id);
