"""Adapters: one module per technology, each implementing ports of `gatehouse.ports`."""
