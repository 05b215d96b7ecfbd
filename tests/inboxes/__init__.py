"""Tests of inboxes, the mail engine: connecting, syncing, parsing, sending, providers."""
