"""messagegate: a gateway that serves the Anthropic Messages API in front of many providers."""

__version__ = "0.1.0"
