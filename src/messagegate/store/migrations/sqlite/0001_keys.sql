-- Gateway keys (only their SHA-256) and the generation every key change bumps.
CREATE TABLE keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE key_secrets (
    digest BLOB PRIMARY KEY,
    key_id INTEGER NOT NULL REFERENCES keys(id),
    prefix TEXT NOT NULL,
    created_at REAL NOT NULL,
    valid_until REAL
);
CREATE INDEX key_secrets_key ON key_secrets(key_id);
CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT INTO generation VALUES (1, 0);
