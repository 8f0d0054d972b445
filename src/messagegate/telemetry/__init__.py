"""Telemetry: Prometheus metrics, OpenTelemetry traces and JSON logs, bounded and secret-free."""
