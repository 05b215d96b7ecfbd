"""Meetings fixtures: Bo's scheduling link (weekdays 09:00-17:00 in Amsterdam, no
notice, 30 or 60 minutes) and a fixed moment before the weeks the tests book in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meetings.links import link_create
from meetings.models import MeetingsConnection

# Monday 23 February 2026, 06:00 UTC: before every slot the tests ask for.
NOW = datetime(2026, 2, 23, 6, 0, tzinfo=UTC)


def make_link(owner, **data):
    values = {
        "name": "Intro call",
        "durations": [30, 60],
        "timezone": "Europe/Amsterdam",
        "min_notice_minutes": 0,
        "days_ahead": 365,
    }
    values.update(data)
    return link_create(owner=owner, data=values)


@pytest.fixture
def link(member):
    return make_link(member, slug="bo-intro")


@pytest.fixture
def connection(member):
    return MeetingsConnection.objects.create(
        account=member.account,
        user=member,
        address="bo@acme.example.com",
        canonical_address="bo@acme.example.com",
    )
