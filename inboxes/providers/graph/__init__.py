"""Microsoft 365 mailboxes through Microsoft Graph.

Sign-in (``MicrosoftOAuthClient``, signin.py) is msal's auth-code flow with PKCE, state and
nonce. The mail calls (``GraphSession`` reads, session.py; ``GraphTransport`` sends,
transport.py) go through ``GraphMailbox`` (client.py): plain ``requests``
(http.py) with a bearer token from ``inboxes.credentials.access_token_for``,
which refreshes it under a per-mailbox lease and commits the rotated refresh
token at once. msal keeps no token cache of ours: each call gets a fresh
in-memory one, because the tokens live encrypted on the mailbox row.

Scopes (delegated permissions), and why each is asked for:

- ``Mail.ReadWrite``: read the inbox and Sent Items, and create the draft every
  send starts from (``Mail.Read`` cannot create drafts, and a draft is what
  gives a send an id and an ``internetMessageId`` to check afterwards).
- ``Mail.Send``: send that draft.
- ``User.Read``: ``/me``, where the mailbox address comes from; never from what
  the user typed.
- ``offline_access`` (msal adds it, with ``openid`` and ``profile``): a refresh
  token, so the workers keep syncing after the hour an access token lasts.

Team emails are addressed as ``/users/{address}``, personal ones as ``/me``:
every team call names the mailbox it means, so a token of another account
fails (403) instead of reading the wrong mailbox. As the connect flow takes the
address from ``/me``, that address is the signed-in account's own, which
``Mail.ReadWrite``/``Mail.Send`` cover. An Exchange *shared* mailbox (one with
no sign-in of its own, opened by a delegate) at ``/users/{address}`` needs
``Mail.ReadWrite.Shared`` and ``Mail.Send.Shared`` (``SHARED_SCOPES``) instead.
They are not requested: nothing can connect such a mailbox yet (its address
would have to come from somewhere other than ``/me``), and a consent screen
should not ask for access that is never used.

Reading: one delta round per folder (``inbox``, and ``sentitems`` for personal
emails) follows ``@odata.nextLink`` to ``@odata.deltaLink``; the cursor is that
link. Keys are Graph message ids, oldest first. ``@removed`` entries are
ignored: deleting mail at Microsoft never deletes what was imported. An expired
delta state (410 ``SyncStateNotFound``) starts a new round with ``reset=True``;
the sync service skips keys it has and deduplicates by content.

Sending: ``POST messages`` makes a draft from our MIME (Graph answers with its
id and ``internetMessageId``), then ``POST messages/{id}/send``. The send
request is never repeated after it may have reached Microsoft: no answer (a
timeout, a dropped connection) or an ambiguous 5xx raises
``SendOutcomeUnknown``, and the outbox looks the Message-ID up in Sent Items.

Throttling: 429 and 503 are retried after their ``Retry-After`` (bounded per
wait, in total and in attempts; beyond that the error is transient and the task
retries later). At most ``MAX_CONCURRENT_REQUESTS`` requests per mailbox run at
once in a process (Graph's limit is 4 per mailbox and app); across processes the
sync lease keeps one sync per mailbox, and a 429 ``MailboxConcurrency`` from
Graph is retried like any 429.
"""
