"""Settings for the test suite: config/settings.py with the test environment's defaults.

Everything else (DATABASE_URL, CELERY_BROKER_URL) comes from the environment as
in production, so CI runs on PostgreSQL and Redis.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HTTPS", "false")
os.environ.setdefault("ALLOW_PRIVATE_MAIL_HOSTS", "true")
os.environ.setdefault("MAIL_ALLOWED_PORTS", "")
if "POSTKAMER_DATA_DIR" not in os.environ:
    # A data directory of this process's own (its children inherit it), removed
    # when it exits: the tests' keys, mail files and SQLite database.
    _data_dir = os.path.join(tempfile.gettempdir(), f"postkamer-test-{os.getpid()}")
    os.environ["POSTKAMER_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not memory: the Celery worker the end-to-end tests start must see it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405
