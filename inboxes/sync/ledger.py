"""The folder's ledger: which of the server's keys are stored already.

Every key fetched from a folder is recorded (``MailboxMessage``) in the same
transaction as its message and the cursor, so a key in the ledger is never
fetched again, and a key the server lists that is not in it is a gap.
"""

from __future__ import annotations

from collections.abc import Sequence

from inboxes.models import MailboxFolder, MailboxMessage

# Keys looked up in the ledger at a time (which of them are stored already).
LEDGER_CHUNK = 1000


def known_keys(folder: MailboxFolder, keys: Sequence[str]) -> set[str]:
    """Those of ``keys`` (at most ``LEDGER_CHUNK``) stored for ``folder``."""
    return set(
        MailboxMessage.objects.filter(folder=folder, provider_key__in=keys).values_list(
            "provider_key", flat=True
        )
    )


def missing_keys(folder: MailboxFolder, server_keys: Sequence[str]) -> list[str]:
    """Those of ``server_keys`` not stored for ``folder``, in their order."""
    missing: list[str] = []
    for start in range(0, len(server_keys), LEDGER_CHUNK):
        chunk = server_keys[start : start + LEDGER_CHUNK]
        known = known_keys(folder, chunk)
        missing.extend(key for key in chunk if key not in known)
    return missing
