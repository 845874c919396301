-- Changes an admin made to the organization's identity through the API, on
-- top of the configuration file: one JSON document (OrganizationUpdate).
CREATE TABLE organization (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    overrides  TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
