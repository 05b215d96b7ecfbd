"""Contact variables in a sequence step's subject and body, and their small renderer.

The one syntax (shown on the sequence form):

    {{ contact.first_name }}
    {{ contact.first_name | default: "there" }}

Names: ``contact.first_name``, ``contact.last_name``, ``contact.name``,
``contact.email``, ``contact.company``. An empty value takes the fallback (or stays
empty without one). The renderer is a regular expression and a dictionary lookup:
user text never reaches a template engine, so it cannot call anything. In an HTML
body the values (and fallbacks) are HTML-escaped; the rest of the HTML is the
author's own. Anything else between ``{{`` and ``}}`` is refused when the sequence
is saved (``variables_check``), so a typo never reaches a contact.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass

VARIABLE_NAMES = (
    "contact.first_name",
    "contact.last_name",
    "contact.name",
    "contact.email",
    "contact.company",
)

_VARIABLE = re.compile(
    r"\{\{\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*"
    r"(?:\|\s*default\s*:\s*\"(?P<fallback>[^\"{}]*)\"\s*)?\}\}"
)
_OPENING = re.compile(r"\{\{")


@dataclass(frozen=True)
class ContactValues:
    first_name: str
    last_name: str
    name: str
    email: str
    company: str

    @classmethod
    def of(cls, *, name: str, email: str, company: str) -> ContactValues:
        parts = name.strip().split(None, 1)
        return cls(
            first_name=parts[0] if parts else "",
            last_name=parts[1] if len(parts) > 1 else "",
            name=name.strip(),
            email=email,
            company=company.strip(),
        )

    def lookup(self) -> dict[str, str]:
        return {
            "contact.first_name": self.first_name,
            "contact.last_name": self.last_name,
            "contact.name": self.name,
            "contact.email": self.email,
            "contact.company": self.company,
        }


def variables_check(template: str) -> list[str]:
    """What is wrong with the variables of ``template``: one sentence per problem."""
    problems: list[str] = []
    matched_at: set[int] = set()
    for match in _VARIABLE.finditer(template):
        matched_at.add(match.start())
        if match.group("name") not in VARIABLE_NAMES:
            problems.append(
                f"Unknown variable {match.group('name')!r}: use one of "
                + ", ".join(VARIABLE_NAMES)
                + "."
            )
    for opening in _OPENING.finditer(template):
        if opening.start() not in matched_at and opening.start() - 1 not in matched_at:
            snippet = template[opening.start() : opening.start() + 40].split("\n", 1)[0]
            problems.append(
                f"Cannot read {snippet!r}: write {{{{ contact.first_name }}}} or "
                '{{ contact.first_name | default: "there" }}.'
            )
            break
    return problems


def render(template: str, values: ContactValues, *, escape_html: bool = False) -> str:
    lookup = values.lookup()

    def value_of(match: re.Match[str]) -> str:
        value = lookup.get(match.group("name"), "") or (match.group("fallback") or "")
        return html_lib.escape(value) if escape_html else value

    return _VARIABLE.sub(value_of, template)
