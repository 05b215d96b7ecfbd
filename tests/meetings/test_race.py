"""Visitors racing for one time: the (owner, unit) unique constraint on booking claims
decides, not a check before the insert. On PostgreSQL with real threads, each on its
own connection; on every database, the constraint itself."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, connections, transaction

from meetings import bookings as bookings_module
from meetings.bookings import booking_create
from meetings.errors import SlotUnavailable
from meetings.models import Booking, BookingClaim
from tests.meetings.conftest import NOW, make_link

TEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="real concurrent transactions need PostgreSQL (SQLite serialises writers); "
    "the constraint itself is tested on every database below",
)


def attempt(link, start, n):
    return booking_create(
        link=link,
        start=start,
        duration=link.durations[0],
        name=f"Visitor {n}",
        email=f"visitor{n}@example.com",
        answers={},
        timezone="UTC",
        now=NOW,
    )


def test_the_claim_constraint_refuses_a_second_hold_on_one_unit(member):
    link = make_link(member, durations=[30])
    first = attempt(link, TEN, 1)
    other = Booking.objects.create(
        account=member.account,
        link=link,
        owner=member,
        start=TEN,
        end=TEN + timedelta(minutes=30),
        name="Eve",
        email="eve@example.com",
        uid="other@postkamer",
        token="t" * 40,
    )

    with pytest.raises(IntegrityError), transaction.atomic():
        BookingClaim.objects.create(booking=other, owner=member, unit=TEN + timedelta(minutes=10))

    assert BookingClaim.objects.filter(unit=TEN + timedelta(minutes=10)).get().booking == first


def test_the_constraint_decides_even_when_the_check_before_it_is_fooled(member, monkeypatch):
    # Both visitors passed the free-slot check (as two racing requests would).
    link = make_link(member, durations=[30], buffer_after=15)
    attempt(link, TEN, 1)
    monkeypatch.setattr(bookings_module, "_offered", lambda *args, **kwargs: True)

    with pytest.raises(SlotUnavailable) as error:
        attempt(link, TEN + timedelta(minutes=30), 2)  # inside the first one's buffer

    assert "a moment ago" in error.value.detail
    assert Booking.objects.count() == 1
    assert not Booking.objects.filter(email="visitor2@example.com").exists()


def _race(link, starts: list[datetime], workers: int = 25) -> tuple[int, int, list[BaseException]]:
    """Every attempt of ``starts`` from ``workers`` threads, each with its own database
    connection, all let go at once. (Not one thread per attempt: 100 connections is
    PostgreSQL's default max_connections, shared with the rest of the machine.)"""
    workers = min(workers, len(starts))
    barrier = threading.Barrier(workers)
    won, lost, errors = [], [], []
    lock = threading.Lock()

    def run(worker: int) -> None:
        try:
            barrier.wait(timeout=60)
            for n in range(worker, len(starts), workers):
                try:
                    attempt(link, starts[n], n)
                    with lock:
                        won.append(n)
                except SlotUnavailable:
                    with lock:
                        lost.append(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return len(won), len(lost), errors


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_two_visitors_racing_for_one_slot_exactly_one_wins(member):
    link = make_link(member, durations=[30])

    won, lost, errors = _race(link, [TEN] * 8)

    assert errors == []
    assert (won, lost) == (1, 7)
    assert Booking.objects.count() == 1
    assert BookingClaim.objects.count() == 6


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_hundred_attempts_on_ten_slots_give_ten_bookings(member):
    link = make_link(member, durations=[60])
    slots = [TEN + timedelta(hours=h) for h in range(-1, 7)] + [
        TEN + timedelta(days=1, hours=h) for h in range(2)
    ]
    assert len(slots) == 10

    won, lost, errors = _race(link, [slots[n % 10] for n in range(100)])

    assert errors == []
    assert (won, lost) == (10, 90)
    assert sorted(Booking.objects.values_list("start", flat=True)) == sorted(slots)
