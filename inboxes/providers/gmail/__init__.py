"""Gmail through the Gmail API (google-api-python-client), signed in with OAuth 2.0.

Scopes, and why each is asked for (the least that does the job):

- ``gmail.readonly``: list and read INBOX and SENT, ``users.getProfile`` (where
  the mailbox address comes from, never from what the user typed), and find a
  sent message by its Message-ID when a send's outcome is unknown.
- ``gmail.send``: send mail.

``gmail.modify`` is not requested: Postkamer never changes, moves or deletes
anything in the user's mailbox, and a consent screen should not ask for access
that is never used.

Sign-in (``GoogleOAuthClient``, signin.py): google-auth-oauthlib's ``Flow`` with
PKCE (S256) and ``prompt=consent``, so Google hands out a refresh token on every
consent, also on a reconnect. Refreshes use google-auth; the tokens live encrypted
on the mailbox (``inboxes.credentials``). The API calls (api.py) use a bearer token
from ``inboxes.credentials.access_token_for`` in credentials that hold no refresh
token, so the client library can never refresh (and rotate) by itself: all refreshes
go through the per-mailbox lease that commits a rotated token at once. A 401 expires
the stored token and retries once; a second 401 means the grant is unusable and the
mailbox needs a new sign-in.

Reading (``GmailSession``, session.py): label ``INBOX``, plus ``SENT`` for personal
mailboxes. The first sync lists
``messages.list(labelIds=[label], q="after:<epoch>")``; its cursor is the profile's
historyId taken *before* the listing, so mail that arrives while it runs is picked
up by the next round. Later rounds read ``history.list`` from that id
(``messageAdded`` only); an expired history id (404) lists everything again with
``reset=True`` and the sync service skips what it has. Keys are Gmail message ids,
oldest first. The cursor only moves once a round is done (there is no partial
cursor): a round cut short is read again from the old history id, and the keys
already stored are skipped. Messages are fetched as ``format=raw`` in batch requests
(``GMAIL_BATCH_URI``: the client library would send batches to Google's host
whatever ``api_endpoint`` says) of at most 50 and about ``FETCH_BATCH_BYTES`` by the
sizes seen so far (the lists give none). The batches are written and read by hand
(batch.py), not by the client library's ``BatchHttpRequest``, whose
``email.FeedParser`` held several copies of every answer: each answer is cut into
its parts as it streams in, each message handed on as soon as its part is whole,
and the next request is already with Google while this one is read and stored (at
most one ahead). One that was deleted in between (404) is skipped. Rate limits
(429, 403 ``rateLimitExceeded`` / ``userRateLimitExceeded``) and 5xx are retried
with exponential backoff and ``Retry-After``, bounded, and so is the rest of an
answer that breaks off (what came whole is kept); beyond that the error is
transient and the task retries later.

Sending (``GmailTransport``, transport.py): ``users.messages.send`` with the raw
MIME (base64url JSON; a multipart media upload above ``JSON_SEND_MAX_BYTES``), in
the thread of the message it replies to (found by ``rfc822msgid:``). The send
request is made exactly once: not through httplib2 (which sends a request again when
the connection drops before the answer, i.e. a second copy of the mail), not with
``num_retries``. No answer, a dropped connection or an ambiguous 5xx raises
``SendOutcomeUnknown``, and the outbox looks the Message-ID up in SENT. Gmail files
what it sends in SENT by itself, so ``store_sent_copy`` does nothing.

TLS (http.py): ``OAUTH_CA_FILE``, when set, is the CA bundle trusted for Google's
endpoints (httplib2 ``ca_certs``, requests ``verify``, the send connection)
instead of the default store. Environment proxies and CA variables
(``REQUESTS_CA_BUNDLE``, ``HTTPS_PROXY``) are ignored, so what the settings say
is what is used.
"""
