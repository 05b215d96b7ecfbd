"""Tests of conversations: the inbox screen, routing, threading, summaries, its API and settings."""
