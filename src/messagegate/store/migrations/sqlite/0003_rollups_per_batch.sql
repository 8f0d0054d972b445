-- The daily rollups are summed per batch by the shipper (one upsert per day, key, model and
-- provider a batch holds), not by a trigger per ledger row.
DROP TRIGGER ledger_rollup;
