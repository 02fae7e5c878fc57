"""The message templates shipped in the package (`courier/templates/`), as the `Renderer`."""

from __future__ import annotations

from importlib import resources
from string import Template

from gatehouse.errors import UnknownTemplate

SHORT_SUFFIX = ".sms.txt"


class Templates:
    """`<name>.txt` is the subject, a blank line, the body; `<name>.sms.txt` is the one-line
    plain text sent by SMS and WhatsApp instead. Loads every template once, at construction
    (never at import); an unknown name raises `errors.UnknownTemplate`."""

    def __init__(self) -> None:
        self._templates: dict[str, tuple[Template, Template]] = {}
        self._short: dict[str, Template] = {}
        folder = resources.files("gatehouse.courier") / "templates"
        for entry in folder.iterdir():
            text = entry.read_text(encoding="utf-8") if entry.name.endswith(".txt") else ""
            if entry.name.endswith(SHORT_SUFFIX):
                self._short[entry.name[: -len(SHORT_SUFFIX)]] = Template(" ".join(text.split()))
            elif entry.name.endswith(".txt"):
                subject, _, body = text.partition("\n\n")
                self._templates[entry.name[:-4]] = (Template(subject.strip()), Template(body))

    def render(
        self, name: str, variables: dict[str, str], *, short: bool = False
    ) -> tuple[str, str]:
        try:
            subject, body = self._templates[name]
        except KeyError:
            raise UnknownTemplate(name) from None
        if short:
            # A phone has no subject line; without a short variant the body goes as it is.
            text = self._short.get(name, body)
            return "", text.safe_substitute(variables).strip()
        return subject.safe_substitute(variables), body.safe_substitute(variables)
