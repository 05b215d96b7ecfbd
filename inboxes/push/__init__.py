"""Push: the providers tell us when a mailbox changes; the sync finds out what.

- ``state``: a mailbox's push holding or lapsed (``Mailbox.pushed_until``/``push_error``),
  what a push does (it only says "look": a sync of the mailbox), and how the mailbox
  page shows it;
- ``renewal``: making and renewing the channels of every Gmail and Microsoft mailbox
  (beat, PUSH_RENEW_SECONDS), falling back to polling when that fails;
- ``gmail`` / ``gmail_hook`` / ``oidc``: ``users.watch`` with the operator's Pub/Sub
  topic; the ``/hooks/gmail/`` endpoint and its OIDC token check (Google's keys cached);
- ``microsoft`` / ``microsoft_hook``: Graph subscriptions per folder, ``/hooks/microsoft/``
  (validation handshake, clientState, lifecycle notifications).

IMAP's push is IDLE, held by the watchers (inboxes/sync/watch*.py).
A push never carries data we trust: the sync stays the source of truth, so a
duplicate, late or forged push can at most cause one more (harmless) sync.
"""
