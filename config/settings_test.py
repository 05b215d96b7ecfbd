"""Settings for the test suite: config/settings.py with the test environment's defaults.

Everything else (DATABASE_URL, CELERY_BROKER_URL) comes from the environment as
in production, so CI runs on PostgreSQL and Redis.
"""

import os
import tempfile

os.environ.setdefault("HTTPS", "false")
os.environ.setdefault("ALLOW_PRIVATE_MAIL_HOSTS", "true")
os.environ.setdefault("MAIL_ALLOWED_PORTS", "")
os.environ.setdefault(
    "POSTKAMER_DATA_DIR", os.path.join(tempfile.gettempdir(), f"postkamer-test-{os.getpid()}")
)

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not memory: the Celery worker the end-to-end tests start must see it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405
