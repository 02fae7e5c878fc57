"""The operator's surface: admin API and command-line tasks."""
