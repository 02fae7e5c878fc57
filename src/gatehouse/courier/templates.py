"""The message templates shipped in the package (`courier/templates/`), as the `Renderer`."""

from __future__ import annotations

import re
import unicodedata
from importlib import resources
from string import Template

from gatehouse.errors import UnknownTemplate

SHORT_SUFFIX = ".sms.txt"
# The longest a variable renders: a name in a mail is a greeting, not a paragraph.
TEXT_MAX = 64
# What IDNA (UTS 46) reads as a label separator, so "evil。example" is a domain too.
_DOTS = ".\u3002\uff0e\uff61"
_SCHEME = re.compile(r"^[^\W\d_][\w+.-]*:\S")  # http:, mailto:, javascript:, tel:...
_DOTTED = re.compile(rf"\w[{_DOTS}]+\w")  # evil.example, www.x, 10.0.0.1
_INITIALS = re.compile(rf"^(?:[^\W\d_][{_DOTS}])+$")  # "J.R.R." in a name is no domain
_LINK_MARKS = ("/", "\\", "@")
_NOT_TEXT = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def plain_text(value: str, limit: int = TEXT_MAX) -> str:
    """A variable as a message may show it: one line, no control character, no link."""
    # Compatibility forms first: a fullwidth "ｅｖｉｌ．ｅｘａｍｐｌｅ" is a domain too.
    folded = unicodedata.normalize("NFKC", value)
    # Every control, format, line or paragraph separator (CR, LF, VT, FF, NEL, U+2028, U+2029,
    # bidi overrides, zero-widths) becomes a space, so nothing can start a line or hide a dot.
    spaced = "".join(" " if unicodedata.category(ch) in _NOT_TEXT else ch for ch in folded)
    # Then every word a mail client could make a link of goes whole, never half of it.
    words = [word for word in spaced.split() if not _link_like(word.casefold())]
    return " ".join(words)[:limit].rstrip()


def _link_like(word: str) -> bool:
    """Whether a mail client could make a link of `word` (casefolded)."""
    # A scheme, a slash, a backslash or an @; or a dot between two word characters (a domain,
    # www., an IP address) unless the word is initials.
    if any(mark in word for mark in _LINK_MARKS) or _SCHEME.match(word):
        return True
    return _DOTTED.search(word) is not None and _INITIALS.match(word) is None


class Templates:
    """`<name>.txt` is the subject, a blank line, the body; `<name>.sms.txt` is the one-line
    plain text sent by SMS and WhatsApp instead. Loads every template once, at construction
    (never at import); an unknown name raises `errors.UnknownTemplate`. Every variable goes
    through `plain_text`: one sanitiser for whatever text reaches a message (DESIGN section 9),
    which also keeps subjects one header line."""

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
        variables = {key: plain_text(value) for key, value in variables.items()}
        if short:
            # A phone has no subject line; without a short variant the body goes as it is.
            text = self._short.get(name, body)
            return "", text.safe_substitute(variables).strip()
        return subject.safe_substitute(variables), body.safe_substitute(variables)
