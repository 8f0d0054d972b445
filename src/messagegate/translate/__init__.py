"""Pure translation between the Messages API and upstream dialects (no I/O)."""
