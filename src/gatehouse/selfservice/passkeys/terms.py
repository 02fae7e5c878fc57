"""What the passkey flow needs of its ceremonies before it runs one, without py_webauthn: that
library and what it loads (pyOpenSSL, cbor2, pyasn1: 13 MB) are imported by the first ceremony
of a process (`flow._ceremony`), not by every api process at start."""

from __future__ import annotations

# How long a browser may keep its dialog open: the flow's life, so neither outlives the other.
TIMEOUT_MS = 300_000


class Refused(Exception):
    """The authenticator's answer is not accepted; the message is for the audit trail."""
