"""Tests of accounts: sign-in rate limits, createaccount and the start-up checks."""
