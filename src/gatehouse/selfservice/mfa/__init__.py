"""Second factors a user manages: an authenticator app and recovery codes."""
