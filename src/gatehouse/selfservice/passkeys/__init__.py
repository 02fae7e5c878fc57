"""Passkeys (WebAuthn Level 3): registration, listing, removal and sign-in with one."""
