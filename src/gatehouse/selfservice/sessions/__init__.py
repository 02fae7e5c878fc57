"""Sessions: refresh-token rotation, logout, revocation."""
