"""The ASGI app: endpoints, auth, SSE writing and the request lifecycle."""
