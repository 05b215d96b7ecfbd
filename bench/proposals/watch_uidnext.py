"""Prototype, for measuring only: the IDLE watcher must not miss mail that arrives
while its on_change sync runs.

    .venv/bin/python bench/sync.py --quick --patch bench/proposals/watch_uidnext.py

Not product code: it replaces ``ImapSession.wait_for_change`` in the benchmark's
processes only. Today the watcher re-SELECTs and enters IDLE after each sync;
a message that arrived after the sync's own SELECT and before that IDLE is
already counted in the watcher's SELECT response, so IDLE never reports it and
it waits for the next message or the next poll (SYNC_POLL_SECONDS, 60 s). This
version remembers UIDNEXT from its last SELECT and reports a change at once
when it moved (and on the first call, which covers mail that came during the
start-up catch-up), at the price of one extra, usually empty, sync per burst.
"""

from __future__ import annotations

from inboxes.providers.imap import ImapSession, imap_error


def wait_for_change(self, folder, seconds: float) -> bool:
    assert self.client is not None
    try:
        info = self._select(folder.name)
        uidnext = int(info.get(b"UIDNEXT", 0) or 0)
        previous = getattr(self, "_watch_uidnext", None)
        self._watch_uidnext = uidnext
        if previous is None or uidnext != previous:
            return True  # mail came in while we were not in IDLE
        self.client.idle()
        try:
            responses = self.client.idle_check(timeout=seconds)
        finally:
            self.client.idle_done()
        return any(
            isinstance(item, tuple) and len(item) > 1 and item[1] in (b"EXISTS", b"RECENT")
            for item in responses
        )
    except BaseException as exc:
        raise imap_error(exc) from exc


ImapSession.wait_for_change = wait_for_change
