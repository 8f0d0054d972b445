-- A ledger row stored as its request id and its journal line, two bound values per row instead of
-- nineteen: a JSON array of request_id, time, key, model, provider, the summed columns, then an
-- array of the rest, its price a JSON object (ledger/row.py). The `ledger` view reads the same
-- columns as the table it replaces. (Not VIRTUAL generated columns: SQLite computes those on
-- every insert too.)
CREATE TABLE ledger_lines (
    request_id TEXT PRIMARY KEY,
    line TEXT NOT NULL
) WITHOUT ROWID;
-- The time with 17 digits: json_array writes a REAL with 15, which would round it to 10 us.
INSERT INTO ledger_lines
SELECT request_id, json_array(
    request_id, json(printf('%!.17g', time)), key, model, provider, input_tokens, output_tokens,
    cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_micro_usd, json_array(
        model_asked, route, json(iif(stream, 'true', 'false')), status, latency_ms, ttft_ms,
        json(price), outcome
    )
) FROM ledger;
DROP TABLE ledger;
CREATE VIEW ledger AS SELECT
    request_id,
    line ->> 1 AS time,
    line ->> 2 AS key,
    line ->> 3 AS model,
    line ->> 4 AS provider,
    line ->> 5 AS input_tokens,
    line ->> 6 AS output_tokens,
    line ->> 7 AS cache_read_tokens,
    line ->> 8 AS cache_write_5m_tokens,
    line ->> 9 AS cache_write_1h_tokens,
    line ->> 10 AS cost_micro_usd,
    line ->> '$[11][0]' AS model_asked,
    line ->> '$[11][1]' AS route,
    line ->> '$[11][2]' AS stream,
    line ->> '$[11][3]' AS status,
    line ->> '$[11][4]' AS latency_ms,
    line ->> '$[11][5]' AS ttft_ms,
    line ->> '$[11][6]' AS price,
    line ->> '$[11][7]' AS outcome
FROM ledger_lines;
