"""Address headers (From, To, Cc, Reply-To) parsed into display names and addresses.

Not to be confused with ``inboxes/addresses.py``: the canonical form of an
address that the rules compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inboxes.mime.charsets import _raw_to_text
from inboxes.mime.headers import _ENCODED_WORD, _header_text, _unfold


@dataclass(frozen=True)
class Address:
    name: str
    address: str


def _split_address_list(text: str) -> list[str]:
    """Mailbox strings at top level; group names ("team: a, b;") are dropped."""
    items: list[str] = []
    current: list[str] = []
    in_quote = escaped = False
    comment_depth = 0
    in_angle = in_bracket = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quote = False
        elif comment_depth:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == "(":
                comment_depth += 1
            elif char == ")":
                comment_depth -= 1
        elif char == "=" and text.startswith("=?", index):
            # Sloppy encoders leave "," or ":" inside encoded-words.
            match = _ENCODED_WORD.match(text, index)
            if match:
                current.append(match.group())
                index = match.end()
                continue
        elif char == '"':
            in_quote = True
        elif char == "(":
            comment_depth = 1
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "[":
            in_bracket = True
        elif char == "]":
            in_bracket = False
        elif not in_angle and not in_bracket and char in ",;":
            items.append("".join(current))
            current = []
            index += 1
            continue
        elif not in_angle and not in_bracket and char == ":":
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    items.append("".join(current))
    return [item for item in items if item.strip()]


_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_AROUND_AT = re.compile(r"\s*@\s*")


def _strip_comments(text: str) -> tuple[str, list[str]]:
    comments: list[str] = []
    # Nested comments are rare; peeling innermost first handles them anyway.
    for _ in range(10):
        found = _COMMENT.findall(text)
        if not found:
            break
        comments.extend(found)
        text = _COMMENT.sub(" ", text)
    return text, [comment[1:-1] for comment in comments]


def _top_level_angle(text: str) -> int:
    in_quote = escaped = False
    for index, char in enumerate(text):
        if in_quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == "<":
            return index
    return -1


def _display_name(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
        raw = raw[1:-1]
    raw = re.sub(r'\\(.)|"', lambda m: m.group(1) or "", raw)
    name = _header_text(raw)
    # Encoded-words sometimes carry their own quotes.
    return name.strip('"').strip()


def _parse_mailbox(item: str) -> Address | None:
    angle = _top_level_angle(item)
    if angle >= 0:
        end = item.find(">", angle)
        address = item[angle + 1 : end if end >= 0 else len(item)]
        # Comments inside the angle brackets are not part of the address (RFC 5322 3.4.1).
        address = _AROUND_AT.sub("@", _strip_comments(address)[0])
        if address.startswith("@") and ":" in address:
            address = address.rsplit(":", 1)[1]  # obsolete source route
        # Parentheses before the angle stay: clients show them as part of the name.
        name = _display_name(item[:angle])
    else:
        address, comments = _strip_comments(item)
        # "pete(his account)@silly.test(his host)": the comments go, the address is
        # what is left around the "@"; only a single trailing comment ("a@b (Ann)")
        # is the display name, as mail clients write it.
        address = _AROUND_AT.sub("@", address)
        trailing = len(comments) == 1 and item.rstrip().endswith(")")
        name = _display_name(comments[0]) if trailing else ""
        tokens = address.split()
        with_at = [token for token in tokens if "@" in token]
        if len(tokens) > 1 and with_at:
            # "John Smith john@x" without brackets: the token with "@" is the address.
            address = with_at[-1]
            name = name or _display_name(" ".join(t for t in tokens if t is not address))
    address = _raw_to_text("".join(address.split())).strip("<>")
    if not address:
        return None
    return Address(name=name, address=address)


def parse_addresses(values: list[str]) -> list[Address]:
    addresses: list[Address] = []
    for value in values:
        for item in _split_address_list(_unfold(value)):
            mailbox = _parse_mailbox(item)
            if mailbox is not None:
                addresses.append(mailbox)
    return addresses
