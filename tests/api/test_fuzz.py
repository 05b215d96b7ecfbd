"""Schemathesis over /api/schema/: every operation, as an admin and as a member.

Inputs are generated from the schema (valid ones and, for the negative cases,
invalid ones) and sent to the Django app in-process (WSGI). Nothing may answer a
5xx, and every error (4xx) must be JSON with ``code`` and ``detail`` (DESIGN.md 4).

Bounded to about a minute on two cores (some 4,500 requests): at most 25 generated
examples per operation besides schemathesis's own boundary cases, a deadline per
example, no shrinking (a failure reports the request as generated, as curl).

No network: name resolution fails at once during the run (but for the database,
cache and broker hosts of a PostgreSQL and Redis run) and private addresses are
refused, so a mailbox connect or connection test with any fuzzed host answers
``connection_failed`` without waiting on a socket (a public address literal gets
one second).
"""

from __future__ import annotations

import json
import socket
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import time, timedelta
from urllib.parse import urlsplit

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from accounts.models import Team, User
from conversations.models import Conversation
from crm.contacts import contact_create
from crm.enrollments import enrollment_create
from crm.models import Contact, Sequence
from crm.sequences import SequenceInput, StepInput, sequence_create
from inboxes.models import Inbox, Mailbox
from tests.support.conversations_factory import make_conversation
from tests.support.factories import UserFactory

# Each test is one operation; the whole run takes about a minute.
pytestmark = [pytest.mark.django_db, pytest.mark.timeout(120)]

FUZZ_SETTINGS = hypothesis_settings(
    max_examples=25,
    deadline=timedelta(seconds=10),
    phases=[Phase.explicit, Phase.generate],
    database=None,
    # The examples of one operation share its fixtures (one database, one World) on
    # purpose, and a slow or filtered generation is not a failure of the API.
    suppress_health_check=list(HealthCheck),
)


def error_has_the_api_shape(ctx, response, case) -> None:
    """Every error answers ``{"code": ..., "detail": ...}`` (DESIGN.md 4)."""
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(
            f"{response.status_code} answered {response.headers.get('content-type')}, "
            f"not JSON: {response.content[:200]!r}"
        ) from exc
    assert isinstance(body, dict) and {"code", "detail"} <= body.keys(), (
        f"{response.status_code} without code and detail: {body!r:.300}"
    )


@dataclass
class World:
    """An account with an admin, a member, a teammate and one object of each kind, whose
    ids replace the generated ones in about half of the cases, so operations on an
    object that exists are fuzzed too (not only 404s)."""

    account: object
    tokens: dict[str, str]
    teammate: User
    objects: dict[str, object] = field(default_factory=dict)

    def ensure(self) -> dict[str, str]:
        """The ids to use, recreating what an earlier case deleted."""
        mailbox = self.objects.get("mailbox")
        if mailbox is None or not Mailbox.objects.filter(pk=mailbox.pk).exists():
            mailbox = self.objects["mailbox"] = Mailbox.objects.create(
                account=self.account,
                kind="team",
                address=f"support{Mailbox.objects.count()}@acme.example.com",
                canonical_address=f"support{Mailbox.objects.count()}@acme.example.com",
                imap_host="imap.acme.example.com",
                imap_port=993,
                imap_security="ssl",
                imap_username="support",
                smtp_host="smtp.acme.example.com",
                smtp_port=587,
                smtp_security="starttls",
                smtp_username="support",
            )
        inbox = self.objects.get("inbox")
        if inbox is None or not Inbox.objects.filter(pk=inbox.pk).exists():
            inbox = self.objects["inbox"] = Inbox.objects.create(
                account=self.account, name=f"Support {Inbox.objects.count()}", from_name="Acme"
            )
        if inbox.mailbox_id is None and not Inbox.objects.filter(mailbox=mailbox).exists():
            Inbox.objects.filter(pk=inbox.pk).update(mailbox=mailbox)
            inbox.refresh_from_db()
        conversation = self.objects.get("conversation")
        if conversation is None or not Conversation.objects.filter(pk=conversation.pk).exists():
            conversation = self.objects["conversation"] = make_conversation(inbox, messages=2)
        team = self.objects.get("team")
        if team is None or not Team.objects.filter(pk=team.pk).exists():
            team = self.objects["team"] = Team.objects.create(
                account=self.account, name=f"Tier {Team.objects.count()}"
            )
            team.members.add(self.teammate)
        contact = self.objects.get("contact")
        if contact is None or not Contact.objects.filter(pk=contact.pk).exists():
            contact = self.objects["contact"] = Contact.objects.create(
                account=self.account,
                email=f"dana{Contact.objects.count()}@example.com",
                canonical_email=f"dana{Contact.objects.count()}@example.com",
            )
        sequence = self.objects.get("sequence")
        if sequence is None:
            sequence = self.objects["sequence"] = _sequence_with_an_enrolment(self.teammate)
        enrollment = sequence.enrollments.first()
        return {
            "contacts": str(contact.pk),
            "sequences": str(sequence.pk),
            # (gone with its contact when a fuzzed DELETE removed it: an unknown id then)
            "enrollments": str(enrollment.pk if enrollment else uuid.uuid4()),
            "conversations": str(conversation.pk),
            "inboxes": str(inbox.pk),
            "mailboxes": str(mailbox.pk),
            "teams": str(team.pk),
            "users": str(self.teammate.pk),
        }

    def point_at_real_objects(self, case) -> None:
        if "id" not in (case.path_parameters or {}):
            return
        # Half of the cases, chosen by their content so a replay chooses the same.
        seen = f"{case.path_parameters['id']}|{case.query!r}|{case.body!r}"
        if zlib.crc32(seen.encode()) % 2:
            return  # keep the generated id: unknown ids must answer 404 in the shape
        resource = case.path.split("/")[3]  # /api/v1/<resource>/{id}/...
        ids = self.ensure()
        if resource in ids:
            case.path_parameters["id"] = ids[resource]


def _sequence_with_an_enrolment(owner: User) -> Sequence:
    mailbox = Mailbox.objects.create(
        account=owner.account,
        kind="personal",
        owner=owner,
        address="cy@acme.example.com",
        canonical_address="cy@acme.example.com",
    )
    sequence = sequence_create(
        owner=owner,
        data=SequenceInput(
            name="Follow up",
            mailbox=mailbox,
            window_start=time(9),
            window_end=time(17),
            timezone="Europe/Amsterdam",
            steps=[StepInput(subject="Hello", text="Hi")],
        ),
    )
    contact = contact_create(account=owner.account, email="carol@customer.example.com")
    enrollment_create(actor=owner, sequence=sequence, contact=contact)
    return sequence


@pytest.fixture
def world(admin, member, account):
    teammate = UserFactory(account=account, email="cy@acme.example.com", full_name="Cy Young")
    tokens = {
        role: Token.objects.get_or_create(user=user)[0].key
        for role, user in (("admin", admin), ("member", member))
    }
    world = World(account=account, tokens=tokens, teammate=teammate)
    world.ensure()
    return world


def _service_hosts(settings) -> set[str]:
    """The hosts of the database, cache and broker this run uses (none with SQLite)."""
    urls = [settings.CELERY_BROKER_URL, str(settings.CACHES["default"].get("LOCATION", ""))]
    hosts = {urlsplit(url).hostname for url in urls if "://" in url}
    hosts.add(settings.DATABASES["default"].get("HOST"))
    return {host for host in hosts if host}


@pytest.fixture(autouse=True)
def _in_process_and_offline(monkeypatch, settings):
    # The app runs in this thread, inside the test's transaction: Django's handler must not
    # close the connection after each request (its test client does the same).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)

    resolve = socket.getaddrinfo
    services = _service_hosts(settings)

    def no_dns(host, *args, **kwargs):
        if host in services:
            return resolve(host, *args, **kwargs)  # PostgreSQL and Redis (CI)
        raise socket.gaierror(socket.EAI_NONAME, "no name resolution in the fuzz run")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    # A fuzzed mail host naming a service's address is refused before any connect.
    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    settings.MAIL_CONNECT_TIMEOUT = 1
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Loaded when the module is collected: the schema needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())


def call(case, world: World, role: str) -> None:
    world.point_at_real_objects(case)
    case.call_and_validate(
        headers={"Authorization": f"Token {world.tokens[role]}"},
        checks=[not_a_server_error, error_has_the_api_shape],
    )


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_input_gives_an_admin_a_500_or_an_error_without_code_and_detail(case, world):
    call(case, world, "admin")


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_input_gives_a_member_a_500_or_an_error_without_code_and_detail(case, world):
    call(case, world, "member")
