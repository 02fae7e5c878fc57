"""Use cases as plain async functions over ports: the same code answers HTTP and queue jobs."""
