"""Gatehouse's own self-service pages (DESIGN 10): sign up, sign in, recover, the account."""
