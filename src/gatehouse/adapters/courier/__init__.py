"""Delivery channels of the courier, one module per provider, and the message templates."""
