"""Password sign-in: the account's credentials checked, a session opened."""
