"""The Celery application. All Celery settings live in config/settings.py (CELERY_*)."""

import os

from celery import Celery

from core.memory import malloc_tune

# Before the worker forks its children: they inherit it (core/memory.py says why).
malloc_tune()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("postkamer")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
