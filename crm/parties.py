"""Who an email of a personal mailbox is exchanged with, and which of them it is
logged on: the one rule behind R10's "only mail with contacts is stored" and the
never-log list, for the sync's keep decision and for logging alike.

Mail from someone to the mailbox's owner is with its sender; mail the owner sent
(From is the mailbox's own address: their own mail client's copy in Sent) is with its
recipients in To and Cc.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass
from functools import lru_cache

from inboxes.addresses import InvalidAddress, canonical_address


@lru_cache(maxsize=65_536)
def canonical_or_empty(address: str) -> str:
    """``address`` in canonical form, or "" when it is not an address (mail carries
    anything in its headers). Cached: a mailbox's correspondents repeat, and the
    sync asks for every address of every message it fetches."""
    try:
        return canonical_address(address)
    except (InvalidAddress, ValueError):  # (UnicodeError too: a ValueError)
        return ""


@dataclass(frozen=True)
class Exchange:
    outgoing: bool  # the mailbox's owner sent it
    others: tuple[str, ...]  # the other side: the sender, or the recipients
    everyone: tuple[str, ...]  # every address on it but the owner's


def exchange_of(own: str, sender: str, recipients: Iterable[str]) -> Exchange:
    """``own``: the mailbox's canonical address; ``sender`` and ``recipients`` as the
    message has them."""
    from_ = canonical_or_empty(sender) if sender else ""
    to = []
    for address in recipients:
        canonical = canonical_or_empty(address) if address else ""
        if canonical and canonical != own and canonical not in to:
            to.append(canonical)
    outgoing = bool(from_) and from_ == own
    if outgoing:
        return Exchange(True, tuple(to), tuple(to))
    others = (from_,) if from_ else ()
    return Exchange(False, others, others + tuple(a for a in to if a != from_))


def contacts_logged(
    exchange: Exchange, contacts: Collection[str], never_log: Container[str]
) -> list[str]:
    """The canonical addresses of the contacts ``exchange`` is logged on: none when
    anyone on it is on the owner's never-log list (R10: never stored, even when they
    are contacts, and not through another contact on the same email either)."""
    if any(address in never_log for address in exchange.everyone):
        return []
    return [address for address in exchange.others if address in contacts]
