"""Single-line text that ends up in an email header: from-names, display names, names.

A line break in a header value would let it add headers (``Bcc:``) or, as the mail
library refuses it, make every send fail; other control characters have no place in
a name either. The services refuse them where the value enters, for the pages and
the API alike.
"""

from __future__ import annotations

import unicodedata

from core.errors import Invalid

# Cc: C0 and C1 controls (CR, LF, TAB, NUL...); Zl, Zp: the Unicode line and
# paragraph separators, which str.splitlines() and some mail software break on.
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def has_control_characters(value: str) -> bool:
    return any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value)


def check_single_line(value: str, *, field: str, label: str) -> str:
    """``value`` unchanged, or Invalid naming ``field`` when it holds a line break or
    another control character."""
    if has_control_characters(value):
        raise Invalid(
            f"The {label} can't contain line breaks or other control characters.",
            errors={field: ["Line breaks and control characters are not allowed."]},
        )
    return value


def one_line(value: str) -> str:
    """``value`` with every run of control characters and whitespace made one space: for
    a name stored before the services refused them, so it can still go in a header."""
    cleaned = "".join(
        " " if unicodedata.category(char) in _REFUSED_CATEGORIES else char for char in value
    )
    return " ".join(cleaned.split())
