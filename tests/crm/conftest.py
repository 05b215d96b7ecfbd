"""CRM fixtures: contacts, a personal mailbox row (no server behind it: the step run
only queues), and a sequence of two steps."""

from __future__ import annotations

from datetime import time

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


def two_steps(**overrides) -> SequenceInput:
    data = SequenceInput(
        name="Follow up",
        window_start=time(0, 0),
        window_end=time(23, 59),
        timezone="UTC",
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
