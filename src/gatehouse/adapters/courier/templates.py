"""Message templates shipped in the package: first line the subject, then a blank line, the body."""

from __future__ import annotations

from importlib import resources
from string import Template


class UnknownTemplate(Exception):
    pass


class Templates:
    """Loads every template once, at construction (never at import)."""

    def __init__(self) -> None:
        self._templates: dict[str, tuple[Template, Template]] = {}
        folder = resources.files("gatehouse.adapters.courier") / "templates"
        for entry in folder.iterdir():
            if entry.name.endswith(".txt"):
                subject, _, body = entry.read_text(encoding="utf-8").partition("\n\n")
                self._templates[entry.name[:-4]] = (Template(subject.strip()), Template(body))

    def render(self, name: str, variables: dict[str, str]) -> tuple[str, str]:
        try:
            subject, body = self._templates[name]
        except KeyError:
            raise UnknownTemplate(name) from None
        return subject.safe_substitute(variables), body.safe_substitute(variables)
