"""The HTTP door's shared parts: envelope, error table, dependencies, limits, middleware and
the hot routes."""
