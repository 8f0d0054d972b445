"""The Messages API wire contract: request schema, SSE framing and the error envelope (no I/O)."""
