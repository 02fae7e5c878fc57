"""Logs, health and (later) metrics and traces."""
