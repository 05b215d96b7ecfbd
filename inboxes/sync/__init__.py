"""Sync: cursor -> fetch -> parse once -> idempotent ingest, one worker per mailbox.

- ``lease``: one worker syncs a mailbox at a time (a lease on its row);
- ``schedule``: which mailboxes sync, and asking for a sync on commit;
- ``run``: ``mailbox_sync``, every folder of a mailbox, and the mailbox's sync state;
- ``folders``: one folder from its cursor, history filed without notifications;
- ``history``: older mail, when a mailbox's import window was made larger;
- ``ledger``: which of the server's keys are stored already;
- ``batches``: fetched in batches bounded by bytes, parsed one batch ahead;
- ``ingest``: a batch stored once, with the folder's cursor, in one transaction;
- ``reconcile``: gaps between the server and what is stored; an admin's resync;
- ``parse_helper`` / ``parse_child``: parsing on the second core, in a process
  that imports no Django;
- ``watch``: IMAP IDLE, a sync the moment mail arrives.

The names below are imported on first use, not with the package: the parse
helper's process runs ``python -m inboxes.sync.parse_child``, which imports this
package and must not import Django.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inboxes.sync.lease import LeaseLost, lease_acquire, lease_release, lease_renew
    from inboxes.sync.reconcile import ReconcileResult, mailbox_reconcile, mailbox_resync
    from inboxes.sync.run import SyncResult, mailbox_sync
    from inboxes.sync.schedule import (
        mailbox_syncable,
        mailboxes_due,
        mailboxes_syncable,
        schedule_sync,
    )

_EXPORTS = {
    "LeaseLost": "inboxes.sync.lease",
    "lease_acquire": "inboxes.sync.lease",
    "lease_release": "inboxes.sync.lease",
    "lease_renew": "inboxes.sync.lease",
    "ReconcileResult": "inboxes.sync.reconcile",
    "mailbox_reconcile": "inboxes.sync.reconcile",
    "mailbox_resync": "inboxes.sync.reconcile",
    "SyncResult": "inboxes.sync.run",
    "mailbox_sync": "inboxes.sync.run",
    "mailbox_syncable": "inboxes.sync.schedule",
    "mailboxes_due": "inboxes.sync.schedule",
    "mailboxes_syncable": "inboxes.sync.schedule",
    "schedule_sync": "inboxes.sync.schedule",
}

__all__ = [
    "LeaseLost",
    "ReconcileResult",
    "SyncResult",
    "lease_acquire",
    "lease_release",
    "lease_renew",
    "mailbox_reconcile",
    "mailbox_resync",
    "mailbox_sync",
    "mailbox_syncable",
    "mailboxes_due",
    "mailboxes_syncable",
    "schedule_sync",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value
