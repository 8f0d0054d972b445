"""Durable state shared by the gateway and the `messagegate` commands: the gateway keys."""
