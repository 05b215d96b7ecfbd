import os
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Plan
from accounts.services import account_create
from core.errors import DomainError


class Command(BaseCommand):
    help = (
        "Create a company account and its first admin. Prints the account id and, on the "
        "last line, the admin's API token as 'token: KEY'."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="The company name.")
        parser.add_argument("--plan", choices=Plan.values, default=Plan.FREE)
        parser.add_argument("--admin-email", required=True)
        parser.add_argument("--admin-name", default="", help="The admin's full name.")
        parser.add_argument(
            "--admin-password",
            help="The admin's password (default: the ADMIN_PASSWORD environment variable).",
        )

    def handle(
        self,
        *args: Any,
        name: str,
        plan: str,
        admin_email: str,
        admin_name: str,
        admin_password: str | None,
        **options: Any,
    ) -> None:
        password = admin_password or os.environ.get("ADMIN_PASSWORD")
        if not password:
            raise CommandError("Give --admin-password or set ADMIN_PASSWORD.")
        try:
            account, admin, token = account_create(
                name=name,
                plan=plan,
                admin_email=admin_email,
                admin_password=password,
                admin_full_name=admin_name,
            )
        except DomainError as exc:
            problems = "; ".join(
                f"{field}: {' '.join(messages)}"
                for field, messages in exc.extra.get("errors", {}).items()
            )
            raise CommandError(f"{exc.detail} {problems}".strip()) from exc
        self.stdout.write(f"account: {account.pk} ({account.name}, plan {account.plan})")
        self.stdout.write(f"admin: {admin.email}")
        self.stdout.write(f"token: {token}")
