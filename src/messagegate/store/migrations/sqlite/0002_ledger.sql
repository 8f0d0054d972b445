-- The ledger (one row per request, keyed by its id) and its daily rollups, kept by a trigger.
CREATE TABLE ledger (
    request_id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    key TEXT NOT NULL,
    model_asked TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    provider TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cost_micro_usd INTEGER NOT NULL,
    price TEXT,
    outcome TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE usage_daily (
    day TEXT NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cost_micro_usd INTEGER NOT NULL,
    PRIMARY KEY (day, key, model, provider)
);
CREATE TRIGGER ledger_rollup AFTER INSERT ON ledger BEGIN
    INSERT INTO usage_daily VALUES (
        date(NEW.time, 'unixepoch'), NEW.key, NEW.model, NEW.provider, 1,
        NEW.input_tokens, NEW.output_tokens, NEW.cache_read_tokens,
        NEW.cache_write_5m_tokens, NEW.cache_write_1h_tokens, NEW.cost_micro_usd
    ) ON CONFLICT (day, key, model, provider) DO UPDATE SET
        requests = requests + 1,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
        cache_write_5m_tokens = cache_write_5m_tokens + excluded.cache_write_5m_tokens,
        cache_write_1h_tokens = cache_write_1h_tokens + excluded.cache_write_1h_tokens,
        cost_micro_usd = cost_micro_usd + excluded.cost_micro_usd;
END;
