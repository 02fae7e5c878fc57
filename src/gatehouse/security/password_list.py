"""The common-password list shipped with the package (30,000 entries, see data/*.LICENSE)."""

from __future__ import annotations

from importlib import resources


def load_common_passwords() -> frozenset[str]:
    """Lower-cased, NFKC-normalised entries; read once by bootstrap, never at import."""
    text = (resources.files("gatehouse.security") / "data" / "common-passwords.txt").read_text(
        encoding="utf-8"
    )
    return frozenset(line for line in text.splitlines() if line)
