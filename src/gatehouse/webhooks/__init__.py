"""Webhooks (DESIGN 12): endpoints registered by operators, `user-events` delivered to them."""
