"""Postkamer settings: one module, configured from the environment.

With no configuration at all Postkamer runs on a SQLite file and a Celery broker
that needs no server, both under ``POSTKAMER_DATA_DIR`` (default ``./var``).
Production sets ``DATABASE_URL``, ``CELERY_BROKER_URL``, ``SECRET_KEY`` and
``FIELD_ENCRYPTION_KEYS``; see README.md.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet

from config.env import ConfigError, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("POSTKAMER_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _generated_secret(filename: str, make: Callable[[], str]) -> str:
    """A secret kept in DATA_DIR for the zero-configuration default.

    Generated once, readable only by the owner; production passes the value in
    the environment instead and this file is never created.
    """
    path = DATA_DIR / filename
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or _generated_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# Encryption of mailbox secrets at rest: comma-separated urlsafe-base64 32-byte
# keys, the first one encrypts, all of them decrypt (see inboxes/credentials.py).
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS") or [
    _generated_secret("field_encryption_key", lambda: Fernet.generate_key().decode())
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "csp",
    "core",
    "accounts",
    "inboxes",
    "notifications",
    "crm",
    "conversations",
    "meetings",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.middleware.NoStoreMiddleware",
    "core.middleware.RetryAfterMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # AxesMiddleware last: it turns a lockout raised by the backend into a response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "notifications.context.bell",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'postkamer.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # No JIT: the app's queries are short index lookups, and JIT compiled for up to
    # 2.6 s before a search plan ran (bench/inbox.py).
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction starts, so two writers
    # queue on the busy timeout instead of failing with "database is locked"
    # when a read lock cannot be upgraded; WAL lets readers run beside a writer.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (rate-limit counters) ---------------------------------------------
_cache_url = env_str("CACHE_URL")
if _cache_url.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _cache_url,
        }
    }
elif _cache_url:
    raise ConfigError(f"CACHE_URL={_cache_url!r}: only redis:// URLs are supported")
else:
    # Shared between the web and worker processes of one machine, unlike locmem.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

# --- Authentication -------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "settings-email"
LOGOUT_REDIRECT_URL = "login"
# How long the links the product mails stay good: an invitation to choose a first
# password (accounts/invites.py) and a password reset (Django's own token).
INVITE_MAX_AGE = env_int("INVITE_MAX_AGE", 7 * 24 * 3600)
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3 * 3600)
# "Forgot password?" is open to anyone: at most this many reset emails per address an hour.
RESET_MAILS_PER_HOUR = env_int("RESET_MAILS_PER_HOUR", 3)

# Failed logins (web form and token endpoint together) are counted per address
# from one IP, per address from any IP and per IP across addresses, each against
# its own limit (accounts/lockouts.py). Only failures count, and an IP alone is
# locked only far above what an office behind one NAT address ever mistypes.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
LOGIN_ADDRESS_FAILURE_LIMIT = env_int("LOGIN_ADDRESS_FAILURE_LIMIT", 30)
LOGIN_IP_FAILURE_LIMIT = env_int("LOGIN_IP_FAILURE_LIMIT", 100)
AXES_COOLOFF_TIME = env_int("LOGIN_COOLOFF_MINUTES", 15) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "username", "ip_address"]
AXES_HANDLER = "accounts.lockouts.LoginLimitsHandler"
# Tries during a lock-out are refused but not counted: hammering one address from
# one IP must not add up to the address's lock-out everywhere.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.services.lockout_response"
AXES_USERNAME_CALLABLE = "accounts.services.login_username"
AXES_VERBOSE = False
AXES_ENABLED = env_bool("LOGIN_RATE_LIMIT_ENABLED", True)

# Failed connection tests, per user and per IP (django-ratelimit rate strings).
CONNECTION_TEST_RATE_PER_USER = env_str("CONNECTION_TEST_RATE_PER_USER", "20/h")
CONNECTION_TEST_RATE_PER_IP = env_str("CONNECTION_TEST_RATE_PER_IP", "60/h")
RATELIMIT_ENABLE = env_bool("CONNECTION_TEST_RATE_LIMIT_ENABLED", True)
RATELIMIT_IP_META_KEY = env_str("RATELIMIT_IP_META_KEY", "REMOTE_ADDR")

# --- Plans ------------------------------------------------------------------------
PLAN_INBOX_LIMITS = {"free": 1, "starter": 2, "professional": 100, "enterprise": 100}
for _item in env_list("PLAN_INBOX_LIMITS"):
    _plan, _, _limit = _item.partition("=")
    if _plan not in PLAN_INBOX_LIMITS or not _limit.isdigit():
        raise ConfigError(f"PLAN_INBOX_LIMITS entry {_item!r} is not plan=number")
    PLAN_INBOX_LIMITS[_plan] = int(_limit)

# --- Mail servers -----------------------------------------------------------------
# User-supplied IMAP/SMTP hosts may not reach private, loopback or link-local
# addresses unless this is set (the test suite sets it to reach 127.0.0.1).
ALLOW_PRIVATE_MAIL_HOSTS = env_bool("ALLOW_PRIVATE_MAIL_HOSTS", False)
# Ports a user may name; empty means any (tests run servers on free ports).
MAIL_ALLOWED_PORTS = [int(p) for p in env_list("MAIL_ALLOWED_PORTS", "993,143,465,587,25")]
MAIL_CONNECT_TIMEOUT = env_int("MAIL_CONNECT_TIMEOUT", 15)
# An extra CA bundle trusted for mail servers (a private CA; the tests' CA).
MAIL_TLS_CA_FILE = env_str("MAIL_TLS_CA_FILE")
# The connect forms may ask an address's domain for its server settings
# (Thunderbird-style autoconfig, inboxes/autoconfig.py): outbound HTTPS to a
# domain a user typed, so off unless the operator turns it on.
MAIL_AUTOCONFIG_LOOKUP = env_bool("MAIL_AUTOCONFIG_LOOKUP", False)
MAIL_AUTOCONFIG_URLS = [
    "https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={address}",
    "https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
]

# --- REST API -----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.api.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Postkamer API",
    "DESCRIPTION": "Inbox connections, conversations and CRM email over REST.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "MailboxKindEnum": "inboxes.models.MailboxKind",
        "MailboxStatusEnum": "inboxes.models.MailboxStatus",
        "ConversationStatusEnum": "conversations.models.ConversationStatus",
        "EventKindEnum": "conversations.models.EventKind",
    },
}

# --- Celery ---------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
if not CELERY_BROKER_URL:
    # kombu's filesystem transport: a broker that needs no server, shared by the
    # web app and the worker through a folder (one machine only).
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict = {}

# --- Static files, i18n -------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = DATA_DIR / "media"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security ------------------------------------------------------------------------------
# HTTPS defaults to on outside DEBUG; a local run over plain http sets HTTPS=false.
HTTPS = env_bool("HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "frame-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Links in emails ------------------------------------------------------------------
# The product's own external base URL: tracking pixels and links, booking and
# notification links and the push endpoints start with it (DESIGN.md section 6).
PUBLIC_URL = env_str("PUBLIC_URL", f"http://127.0.0.1:{env_str('PORT', '8000')}").rstrip("/")

# --- Mail engine --------------------------------------------------------------------------------------
SYNC_POLL_SECONDS = env_int("SYNC_POLL_SECONDS", 60)
SYNC_LEASE_SECONDS = env_int("SYNC_LEASE_SECONDS", 120)
RECONCILE_SECONDS = env_int("RECONCILE_SECONDS", 3600)
# Parse fetched mail in a helper process per syncing process, on another core
# (inboxes/sync/parse_helper.py); off: parse in the syncing process itself.
SYNC_PARSE_HELPER = env_bool("SYNC_PARSE_HELPER", True)
IDLE_RENEW_SECONDS = env_int("IDLE_RENEW_SECONDS", 25 * 60)
# Push (inboxes/push/, inboxes/sync/watch*.py): while a mailbox's push holds (IMAP IDLE,
# a Gmail watch, Graph subscriptions) the poll only checks it this often, as a safety
# net; a mailbox without push is polled every SYNC_POLL_SECONDS.
PUSH_SAFETY_POLL_SECONDS = env_int("PUSH_SAFETY_POLL_SECONDS", 15 * 60)
# How often the push channels (Gmail watches, Graph subscriptions) are looked at and
# renewed when due; Gmail's are renewed daily (they lapse after 7 days), Graph's
# before they expire.
PUSH_RENEW_SECONDS = env_int("PUSH_RENEW_SECONDS", 3600)
# IMAP watchers (manage.py watch_mailboxes, any number, on any machines) hold their
# mailboxes with leases in the database: renewed every third of this (one UPDATE per
# watcher); a watcher that dies lets its leases run out and the others take its
# mailboxes over, so mail to them waits at most about this long (bench/scale.py: with
# 60 s, the mail of a killed watcher's mailboxes made the p95 of the whole run 40 s;
# with 15 s its p99 16 s).
WATCH_LEASE_SECONDS = env_int("WATCH_LEASE_SECONDS", 10)
# Gmail push: the operator's Pub/Sub topic (projects/<project>/topics/<topic>) that
# Gmail publishes to, and the push subscription's OIDC token: its audience (by default
# PUBLIC_URL + "/hooks/gmail/") and the service account that signs it. Unset topic:
# Gmail mailboxes are polled.
GMAIL_PUBSUB_TOPIC = env_str("GMAIL_PUBSUB_TOPIC", "")
GMAIL_PUSH_AUDIENCE = env_str("GMAIL_PUSH_AUDIENCE", "")
GMAIL_PUSH_SERVICE_ACCOUNT = env_str("GMAIL_PUSH_SERVICE_ACCOUNT", "")
# Where Google's OIDC signing keys are read (cached); the tests point it at a fake.
GOOGLE_OIDC_CERTS_URL = env_str(
    "GOOGLE_OIDC_CERTS_URL", "https://www.googleapis.com/oauth2/v1/certs"
)
# Microsoft Graph push: on unless turned off; Graph must reach PUBLIC_URL + "/hooks/microsoft/"
# over HTTPS, so it is off by default when PUBLIC_URL is not https.
GRAPH_PUSH = env_bool("GRAPH_PUSH", PUBLIC_URL.startswith("https://"))
OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 8)
OUTBOX_RETRY_BASE_SECONDS = env_int("OUTBOX_RETRY_BASE_SECONDS", 30)
# Longer than the task time limit, so a live (slow) send is never taken for a dead one.
OUTBOX_SEND_LEASE_SECONDS = env_int("OUTBOX_SEND_LEASE_SECONDS", 600)
OUTBOX_SWEEP_SECONDS = env_int("OUTBOX_SWEEP_SECONDS", 30)
# Send limits of personal mailboxes (inboxes/outbox/limits.py has the defaults per
# provider and why): SEND_LIMIT_<GMAIL|MICROSOFT|IMAP>_PER_DAY / _PER_MINUTE override
# them (0: keep the default); admins override them per mailbox. The windows are a
# rolling minute and day; shorter ones are for tests.
for _provider in ("GMAIL", "MICROSOFT", "IMAP"):
    for _per in ("PER_DAY", "PER_MINUTE"):
        globals()[f"SEND_LIMIT_{_provider}_{_per}"] = env_int(f"SEND_LIMIT_{_provider}_{_per}", 0)
SEND_LIMIT_MINUTE_SECONDS = env_int("SEND_LIMIT_MINUTE_SECONDS", 60)
SEND_LIMIT_DAY_SECONDS = env_int("SEND_LIMIT_DAY_SECONDS", 24 * 3600)

# Queues: "sync" and "send" so a big initial sync never delays a reply.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "inboxes.tasks.sync_mailbox": {"queue": "sync"},
    "inboxes.tasks.reconcile_mailbox": {"queue": "sync"},
    "inboxes.tasks.sync_due_mailboxes": {"queue": "sync"},
    "inboxes.tasks.reconcile_all_mailboxes": {"queue": "sync"},
    "inboxes.tasks.keep_push_channel": {"queue": "sync"},
    "inboxes.tasks.keep_all_push_channels": {"queue": "sync"},
    "inboxes.tasks.send_outbox": {"queue": "send"},
    "inboxes.tasks.sweep_outbox": {"queue": "send"},
}
# Ack after the task ran, and hand a task back to the broker when its worker
# process dies (SIGKILL, OOM): every task here is idempotent (sync by its
# cursor, ledger keys and content dedupe; send by its conditional claim), so
# running one twice is harmless, while losing one is not.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Redis re-delivers a task that was not acked within the visibility timeout. It
# must exceed the longest task (the hard time limit) and the longest retry
# countdown (an hour), or long syncs and delayed retries would run
# twice in parallel; the sync lease would stop the second, but we would rather
# not start it.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **globals().get("CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    "visibility_timeout": max(CELERY_TASK_TIME_LIMIT * 2, 7200),
}
# The files attached to one reply from the inbox, together (conversations/composer.py).
ATTACHMENT_MAX_BYTES = env_int("ATTACHMENT_MAX_BYTES", 20 * 1024 * 1024)
# How often due sequence steps are sent (crm/steps.py).
SEQUENCE_STEPS_SECONDS = env_int("SEQUENCE_STEPS_SECONDS", 60)
# Steps sent per transaction: a worker killed mid-run loses (and resends) at most one chunk.
SEQUENCE_STEPS_CHUNK = env_int("SEQUENCE_STEPS_CHUNK", 200)
# How often beat indexes the messages no ingest asked for (inboxes/search_index.py),
# and how long one indexing task runs before it queues the next.
SEARCH_INDEX_SECONDS = env_int("SEARCH_INDEX_SECONDS", 60)
SEARCH_INDEX_RUN_SECONDS = env_int("SEARCH_INDEX_RUN_SECONDS", 50)
CELERY_BEAT_SCHEDULE = {
    "sync-due-mailboxes": {
        "task": "inboxes.tasks.sync_due_mailboxes",
        "schedule": SYNC_POLL_SECONDS,
    },
    "reconcile-mailboxes": {
        "task": "inboxes.tasks.reconcile_all_mailboxes",
        "schedule": RECONCILE_SECONDS,
    },
    "keep-push-channels": {
        "task": "inboxes.tasks.keep_all_push_channels",
        "schedule": PUSH_RENEW_SECONDS,
    },
    "sweep-outbox": {"task": "inboxes.tasks.sweep_outbox", "schedule": OUTBOX_SWEEP_SECONDS},
    "index-messages": {"task": "inboxes.tasks.index_messages", "schedule": SEARCH_INDEX_SECONDS},
    "notification-emails": {"task": "notifications.tasks.send_digests", "schedule": 60},
    "mailbox-health": {"task": "notifications.tasks.check_mailbox_health", "schedule": 300},
    "wake-snoozed-conversations": {"task": "conversations.tasks.wake_snoozed", "schedule": 60},
    "send-due-sequence-steps": {
        "task": "crm.tasks.send_due_steps",
        "schedule": SEQUENCE_STEPS_SECONDS,
    },
}

# --- Meetings ------------------------------------------------------------------------------
# The public booking API is throttled per IP (DRF rate strings: N/second|minute|hour|day):
# listing free slots, and booking (against slot-scraping and spam bookings).
MEETINGS_SLOTS_RATE = env_str("MEETINGS_SLOTS_RATE", "120/min")
MEETINGS_BOOKINGS_RATE = env_str("MEETINGS_BOOKINGS_RATE", "10/hour")
# The most days one request for free slots may cover.
MEETINGS_SLOTS_MAX_DAYS = env_int("MEETINGS_SLOTS_MAX_DAYS", 62)
for _name in ("MEETINGS_SLOTS_RATE", "MEETINGS_BOOKINGS_RATE"):
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", globals()[_name]):
        raise ConfigError(f"{_name}={globals()[_name]!r}: use N/second, N/minute, N/hour or N/day")
if MEETINGS_SLOTS_MAX_DAYS < 1:
    raise ConfigError("MEETINGS_SLOTS_MAX_DAYS must be at least 1")

# --- Gmail and Microsoft 365 (OAuth) --------------------------------------------------------------
# Register the applications as README.md says; without the ids and secrets the
# Connect buttons explain what is missing.
GOOGLE_CLIENT_ID = env_str("GOOGLE_CLIENT_ID")
GOOGLE_CLIENT_SECRET = env_str("GOOGLE_CLIENT_SECRET")
GOOGLE_AUTH_URI = env_str("GOOGLE_AUTH_URI", "https://accounts.google.com/o/oauth2/auth")
GOOGLE_TOKEN_URI = env_str("GOOGLE_TOKEN_URI", "https://oauth2.googleapis.com/token")
GMAIL_API_ENDPOINT = env_str("GMAIL_API_ENDPOINT", "https://gmail.googleapis.com/")
GMAIL_BATCH_URI = env_str("GMAIL_BATCH_URI", "https://gmail.googleapis.com/batch/gmail/v1")
GOOGLE_CALENDAR_API_ENDPOINT = env_str(
    "GOOGLE_CALENDAR_API_ENDPOINT", "https://www.googleapis.com/calendar/v3/"
)
MICROSOFT_CLIENT_ID = env_str("MICROSOFT_CLIENT_ID")
MICROSOFT_CLIENT_SECRET = env_str("MICROSOFT_CLIENT_SECRET")
MICROSOFT_AUTHORITY = env_str("MICROSOFT_AUTHORITY", "https://login.microsoftonline.com/common")
GRAPH_API_ENDPOINT = env_str("GRAPH_API_ENDPOINT", "https://graph.microsoft.com/v1.0")
# The CA bundle trusted for the OAuth and API endpoints instead of the system store
# (the tests point it at their fakes; leave it unset in production).
OAUTH_CA_FILE = env_str("OAUTH_CA_FILE")
PROVIDER_HTTP_TIMEOUT = env_int("PROVIDER_HTTP_TIMEOUT", 30)


# --- The product's own mail (notifications) ---------------------------------------------
# EMAIL_URL (dj-email-url: submission://user:pass@host:587 for STARTTLS,
# smtp://user:pass@host:465?ssl=True for TLS from the start, smtp://host:25 plain) is the
# operator's outgoing mail server, never a customer's mailbox. Unset: off, each email
# is written to the log instead (core/mail_backends.py).
_email_url = env_str("EMAIL_URL")
if _email_url:
    import dj_email_url

    _email = dj_email_url.parse(_email_url)
    EMAIL_BACKEND = _email["EMAIL_BACKEND"]
    EMAIL_HOST = _email["EMAIL_HOST"]
    EMAIL_PORT = _email["EMAIL_PORT"]
    EMAIL_HOST_USER = _email["EMAIL_HOST_USER"]
    EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"]
    EMAIL_USE_TLS = _email["EMAIL_USE_TLS"]
    EMAIL_USE_SSL = _email["EMAIL_USE_SSL"]
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20)
else:
    EMAIL_BACKEND = "core.mail_backends.LogBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Postkamer <postkamer@localhost>")
# At most one notification email per person per this many minutes (a digest).
NOTIFICATION_EMAIL_MINUTES = env_int("NOTIFICATION_EMAIL_MINUTES", 5)
NOTIFICATION_POLL_SECONDS = env_int("NOTIFICATION_POLL_SECONDS", 15)
