"""CRM fixtures: contacts, a personal mailbox row (no server behind it: the step run
only queues), and a sequence of two steps."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from crm.contacts import contact_create
from crm.sequences import SequenceInput, StepInput, sequence_create
from inboxes.addresses import canonical_address
from inboxes.models import Mailbox, MailboxKind


def personal_mailbox(owner, address: str) -> Mailbox:
    return Mailbox.objects.create(
        account=owner.account,
        address=address,
        canonical_address=canonical_address(address),
        kind=MailboxKind.PERSONAL,
        owner=owner,
        connected_by=owner,
    )


def open_all_day_zone() -> str:
    """A time zone in which the window 00:00-23:59 stays open for the next 12 hours.

    A window cannot hold a whole day (it ends within the day), so a suite that ran
    at 23:59 UTC found the steps not yet due. The morning in UTC or, from noon UTC,
    in UTC-12 keeps "now" inside the window whatever the hour the suite runs.
    """
    return "UTC" if datetime.now(UTC).hour < 12 else "Etc/GMT+12"


def two_steps(**overrides) -> SequenceInput:
    data = SequenceInput(
        name="Follow up",
        window_start=time(0, 0),
        window_end=time(23, 59),
        timezone=open_all_day_zone(),
        business_days_only=False,
        steps=[
            StepInput(
                subject='Hello {{ contact.first_name | default: "there" }}',
                text="Hi {{ contact.first_name }}, how is {{ contact.company }}?",
                html="<p>Hi {{ contact.first_name }}</p>",
            ),
            StepInput(text="Just checking in.", delay_days=2),
        ],
    )
    for name, value in overrides.items():
        setattr(data, name, value)
    return data


@pytest.fixture
def member_mailbox(member):
    return personal_mailbox(member, "bo@acme.example.com")


@pytest.fixture
def sequence(member, member_mailbox):
    return sequence_create(owner=member, data=two_steps(mailbox=member_mailbox))


@pytest.fixture
def contacts(member):
    return [
        contact_create(
            account=member.account,
            owner=member,
            email=f"c{n}@customer.example.com",
            name=f"Carol{n} Jones",
            company="Co",
        )
        for n in range(3)
    ]
