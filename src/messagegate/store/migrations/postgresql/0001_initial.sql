-- Gateway keys (only their SHA-256), the generation every key change bumps, the ledger (one row
-- per request, keyed by its id) and its daily rollups (UTC days, kept by the store's insert).
CREATE TABLE keys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE TABLE key_secrets (
    digest BYTEA PRIMARY KEY,
    key_id BIGINT NOT NULL REFERENCES keys(id),
    prefix TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    valid_until DOUBLE PRECISION
);
CREATE INDEX key_secrets_key ON key_secrets(key_id);
CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL);
INSERT INTO generation VALUES (1, 0);
CREATE TABLE ledger (
    request_id TEXT PRIMARY KEY,
    time DOUBLE PRECISION NOT NULL,
    key TEXT NOT NULL,
    model_asked TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    provider TEXT NOT NULL,
    stream BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    cost_micro_usd BIGINT NOT NULL,
    price TEXT,
    outcome TEXT NOT NULL
);
CREATE TABLE usage_daily (
    day TEXT NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    cost_micro_usd BIGINT NOT NULL,
    PRIMARY KEY (day, key, model, provider)
);
