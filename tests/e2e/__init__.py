"""End-to-end tests: the real Claude Code CLI talking to messagegate on loopback."""
