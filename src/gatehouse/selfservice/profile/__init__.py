"""The signed-in user's profile: read, update, delete."""
