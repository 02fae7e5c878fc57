"""How secrets and limits are kept: password hashing, code stores, rate limits, failure counts."""
