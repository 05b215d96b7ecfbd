"""Settings for the test suite: config/settings.py with the test environment's defaults.

Everything else (DATABASE_URL, CELERY_BROKER_URL) comes from the environment as
in production, so CI runs on PostgreSQL and Redis.

Each test process (a plain pytest run, or each pytest-xdist worker) has its own
data directory and its own prefix for the keys it keeps in Redis (broker queues,
cache), so parallel workers on one Redis database never see each other's keys.
The processes a test starts (Celery workers, beat, the watcher) inherit both
through the environment.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HTTPS", "false")
os.environ.setdefault("ALLOW_PRIVATE_MAIL_HOSTS", "true")
os.environ.setdefault("MAIL_ALLOWED_PORTS", "")
_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _xdist_worker and os.environ.get("POSTKAMER_TEST_WORKER") != _xdist_worker:
    # A pytest-xdist worker (not a process one started): what it inherited from the
    # controller is the controller's, so it makes its own below.
    os.environ["POSTKAMER_TEST_WORKER"] = _xdist_worker
    os.environ.pop("POSTKAMER_DATA_DIR", None)
    os.environ.pop("POSTKAMER_TEST_KEY_PREFIX", None)
if "POSTKAMER_DATA_DIR" not in os.environ:
    # A data directory of this process's own (its children inherit it), removed
    # when it exits: the tests' keys, mail files and SQLite database.
    _data_dir = os.path.join(tempfile.gettempdir(), f"postkamer-test-{os.getpid()}")
    os.environ["POSTKAMER_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)
os.environ.setdefault("POSTKAMER_TEST_KEY_PREFIX", f"postkamer-test-{os.getpid()}")
TEST_KEY_PREFIX = os.environ["POSTKAMER_TEST_KEY_PREFIX"]

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not memory: the Celery worker the end-to-end tests start must see it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405

# Every Redis key of the broker (queues, bindings, unacked) starts with the prefix; on
# the filesystem broker the option is ignored. tests/support/workers.py reads it.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405
    "global_keyprefix": f"{TEST_KEY_PREFIX}:",
}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":  # noqa: F405
    # clear() (before and after every test) removes this process's keys only, not the
    # whole database as Django's FLUSHDB would.
    CACHES["default"]["BACKEND"] = "tests.support.cache.PrefixedRedisCache"  # noqa: F405
    CACHES["default"]["KEY_PREFIX"] = TEST_KEY_PREFIX  # noqa: F405
