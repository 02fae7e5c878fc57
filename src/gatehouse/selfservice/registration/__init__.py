"""Sign-up: a pending registration, its emailed code, and the account it becomes."""
