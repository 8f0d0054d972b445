"""I/O clients for each upstream kind: connection pool, timeouts, stream reading."""
