"""The `verification` queue: a code sent on the channel asked for, for sign-up or recovery."""
