"""The usage ledger: one row per billed request, journalled locally before the answer ends,
shipped in batches, idempotently, to the database's ledger and its rollups."""
