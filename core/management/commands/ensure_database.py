"""``manage.py ensure_database``: create the configured PostgreSQL database if it is
missing (``scripts/run`` calls it before ``migrate``); see core/database.py."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from core.database import DatabaseSetupError, ensure_database


class Command(BaseCommand):
    help = "Create the configured PostgreSQL database if it does not exist yet."
    requires_system_checks: list[str] = []  # the checks may need the database

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, **options: Any) -> None:
        settings_dict = connections[options["database"]].settings_dict
        try:
            created = ensure_database(settings_dict)
        except DatabaseSetupError as exc:
            raise CommandError(str(exc)) from None
        if created:
            self.stdout.write(f"Created database {settings_dict['NAME']}.")
