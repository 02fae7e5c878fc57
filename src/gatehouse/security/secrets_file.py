"""The service's keys: from `GATEHOUSE_SECRETS_JSON`, else the secrets file, which is generated
only in development (`gatehouse keys generate` makes one for production)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from gatehouse.config import Settings
from gatehouse.domain.crypto import Secrets, generate_secrets_document, parse_secrets

log = logging.getLogger(__name__)


def load_secrets(settings: Settings) -> Secrets:
    """Inline JSON, else the secrets file; generated into the file only in development."""
    if settings.secrets_json:
        return parse_secrets(json.loads(settings.secrets_json))
    path = Path(settings.secrets_file)
    if not path.exists():
        if settings.env == "production":
            raise RuntimeError(
                f"no secrets: set GATEHOUSE_SECRETS_JSON or create {path} "
                "with `gatehouse keys generate` (never generated in production)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(generate_secrets_document(), handle, indent=2)
        log.warning("generated development secrets in %s", path)
    return parse_secrets(json.loads(path.read_text()))
