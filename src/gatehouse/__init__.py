"""Gatehouse: self-hosted user onboarding and identity service."""

__version__ = "0.1.0"
