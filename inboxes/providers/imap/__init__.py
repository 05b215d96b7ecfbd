"""IMAP for reading, SMTP for sending, with imapclient and smtplib.

- ``connection``: IMAP and SMTP connections pinned to addresses that passed the
  SSRF guard (also used by the connection test).
- ``auth``: a mailbox's server settings and passwords, or XOAUTH2 sign-in with
  its stored OAuth tokens.
- ``session``: ``ImapSession`` reads (the sync side), and the IDLE watcher lends
  its logged-in session to the syncs it triggers.
- ``transport``: ``SmtpTransport`` sends.

Reading is non-destructive: folders are selected read-only and messages are
fetched with BODY.PEEK[], so no flag changes and nothing moves or is deleted.
Keys are ``uidvalidity:uid``: a UID means nothing once the folder's UIDVALIDITY
changes, and the cursor then resets (the sync service deduplicates by content).
"""
