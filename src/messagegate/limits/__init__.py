"""Per-key limits checked and reserved at admission: rate (GCRA), concurrency, budgets."""
