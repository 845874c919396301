-- The Secure Message Center signs browsers in as devices of their own
-- kind, so the account page lists and revokes them with the desktop apps
-- and a read in the browser is a retrieval like any other. A browser's
-- session cookie is its access token; it has no refresh token, so its
-- refresh hash is that of a random value never handed out.
ALTER TABLE devices ADD COLUMN kind TEXT NOT NULL DEFAULT 'agent' CHECK (kind IN ('agent', 'browser'));

-- Shown in mailbox lists without opening each message's content. NULL for
-- messages stored before it was kept.
ALTER TABLE messages ADD COLUMN subject TEXT;
