-- The organization's directory of recognised correspondents: mail from
-- these addresses to a member's masked address may be relayed. Imported
-- from CSV or kept through the admin API. Times are Unix seconds (UTC).
CREATE TABLE directory (
    email      TEXT PRIMARY KEY,   -- normalised: trimmed, lowercase
    name       TEXT,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
