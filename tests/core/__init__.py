"""Tests of core: bulk inserts, memory settings and the database schema."""
