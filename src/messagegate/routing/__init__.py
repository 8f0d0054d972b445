"""Choosing, ordering and failing over routes; provider health."""
