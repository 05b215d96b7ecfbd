"""The tests' Redis cache: Django's, whose clear() removes only its own keys.

config/settings_test.py gives every test process (each pytest-xdist worker) its
own KEY_PREFIX on the one Redis database; Django's clear() would FLUSHDB and so
wipe the rate-limit counters of a test running in another worker.
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache


class PrefixedRedisCache(RedisCache):
    def __init__(self, server: str, params: dict) -> None:
        super().__init__(server, params)
        if not self.key_prefix:
            raise ValueError("PrefixedRedisCache needs a KEY_PREFIX")

    def clear(self) -> bool:
        client = self._cache.get_client(None, write=True)
        pattern = f"{self.key_prefix}:*".replace("[", "\\[").replace("?", "\\?")
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return True
