-- The message lifecycle: expiry, recall by the sender, and the replies
-- that answer a message, for the delivery slip.
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
ALTER TABLE messages ADD COLUMN recalled_at INTEGER;
-- Set once the content of an expired or recalled message is deleted.
ALTER TABLE messages ADD COLUMN content_removed_at INTEGER;
-- The Message-ID header of the stored MIME, without angle brackets: a
-- later message's In-Reply-To or References naming it is a reply.
ALTER TABLE messages ADD COLUMN header_message_id TEXT;
-- The client's own key for one upload, so an upload sent again after a
-- lost answer finds the message already stored.
ALTER TABLE messages ADD COLUMN client_key TEXT;

CREATE UNIQUE INDEX messages_client_key ON messages(sender_account_id, client_key)
    WHERE client_key IS NOT NULL;
CREATE INDEX messages_header_id ON messages(header_message_id)
    WHERE header_message_id IS NOT NULL;
CREATE INDEX messages_to_purge ON messages(expires_at)
    WHERE content_removed_at IS NULL AND expires_at IS NOT NULL;

-- A recipient's first answer to a message, stored through Sealpost.
CREATE TABLE replies (
    message_id TEXT NOT NULL REFERENCES messages(id),
    email      TEXT NOT NULL,
    reply_id   TEXT NOT NULL REFERENCES messages(id),
    replied_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, email)
);
