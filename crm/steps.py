"""Sending the steps that are due: each step of an enrolment exactly once.

A run takes the due enrolments (active, ``next_step_at`` <= now) in chunks. For one
enrolment, in one transaction (a savepoint inside the chunk's transaction):

1. move it on with a conditional UPDATE (state active and ``steps_sent`` as read):
   a pause, unenrolment or reply committed meanwhile, or another runner that got
   there first, leaves nothing to update and the step is not sent;
2. insert ``StepSend(enrollment, position)``: unique, so whatever the row locks
   (``select_for_update(skip_locked=True)`` on PostgreSQL, nothing on SQLite) and
   the UPDATE above let through, a second send of a step cannot commit;
3. queue the email (crm.sending.email_queue: the outbox sends it exactly once).

A worker killed mid-run rolls its chunk back: nothing of it was queued, and the next
run (beat, every minute) sends it. Beat running twice: the second runner skips the
rows the first holds (PostgreSQL) or loses on the constraint (SQLite).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from core.errors import DomainError
from crm.models import (
    Email,
    Enrollment,
    EnrollmentState,
    Sequence,
    SequenceStep,
    StepSend,
    StopReason,
    TimelineType,
)
from crm.sending import ContactDraft, email_queue, emails_queue_many
from crm.sequences import sequence_window
from crm.timeline import timeline_add, timeline_add_same
from crm.variables import ContactValues, render
from crm.windows import delay_then_window

# A sequence whose mailbox cannot send (disconnected): its due steps wait this long.
HOLD_WHEN_UNSENDABLE = timedelta(hours=1)

log = logging.getLogger(__name__)


@dataclass
class StepRun:
    held: int = 0
    sent: int = 0
    finished: int = 0
    bounced: int = 0
    skipped: int = 0


class _RunCache:
    """What many enrolments of a run share: loaded once per run, not per step."""

    def __init__(self) -> None:
        self.sequences: dict[UUID, Sequence] = {}
        self.steps: dict[UUID, list[SequenceStep]] = {}

    def attach_sequences(self, enrollments: list[Enrollment]) -> None:
        """Each enrolment's sequence (with its owner and mailbox), loaded once per run."""
        missing = {e.sequence_id for e in enrollments} - self.sequences.keys()
        if missing:
            for sequence in Sequence.objects.filter(pk__in=missing).select_related(
                "owner", "mailbox"
            ):
                self.sequences[sequence.pk] = sequence
        for enrollment in enrollments:
            enrollment.sequence = self.sequences[enrollment.sequence_id]

    def steps_of(self, sequence: Sequence) -> list[SequenceStep]:
        if sequence.pk not in self.steps:
            self.steps[sequence.pk] = list(sequence.steps.order_by("position"))
        return self.steps[sequence.pk]


def steps_send_due(*, now: datetime | None = None, chunk_size: int | None = None) -> StepRun:
    """Send every step due at ``now``; returns what happened."""
    chunk_size = chunk_size or settings.SEQUENCE_STEPS_CHUNK
    run = StepRun()
    cache = _RunCache()
    while True:
        moment = now or timezone.now()
        with transaction.atomic():
            due = _due_chunk(moment, chunk_size)
            cache.attach_sequences(due)
            _send_chunk(due, cache, run, moment)
        if len(due) < chunk_size:
            return run


def _due_chunk(now: datetime, chunk_size: int) -> list[Enrollment]:
    due = Enrollment.objects.filter(state=EnrollmentState.ACTIVE, next_step_at__lte=now).order_by(
        "next_step_at", "id"
    )
    if connection.features.has_select_for_update_skip_locked:
        # Lock only the enrolment rows (``of``): the joined contact rows are not ours.
        due = due.select_for_update(skip_locked=True, of=("self",))
    return list(due.select_related("contact")[:chunk_size])


def _send_chunk(due: list[Enrollment], cache: _RunCache, run: StepRun, now: datetime) -> None:
    """The chunk's steps in bulk, a few statements per sequence. The rows are ours
    until the chunk commits (locked FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE
    transaction holds the write lock), so what was read is what holds; should a
    StepSend still conflict, that sequence's part goes again one enrolment at a time
    (``_send_one``, with its conditional claim)."""
    groups: dict[UUID, list[Enrollment]] = {}
    for enrollment in due:
        if enrollment.contact.bounced_at is not None:
            _stop_bounced(enrollment, run, now)
        elif enrollment.steps_sent >= len(cache.steps_of(enrollment.sequence)):
            _finish(enrollment, run, now)  # the steps were shortened since
        else:
            groups.setdefault(enrollment.sequence_id, []).append(enrollment)
    for group in groups.values():
        try:
            try:
                with transaction.atomic():
                    _send_group(group, cache, run, now)
            except IntegrityError:
                for enrollment in group:
                    _send_one(enrollment, cache, run, now)
        except DomainError as exc:
            _hold(group, run, now, exc)


def _hold(group: list[Enrollment], run: StepRun, now: datetime, exc: DomainError) -> None:
    """The sequence cannot send now (its mailbox was disconnected, or is no longer
    its owner's): try again later rather than fail every run on it, or loop on a
    chunk that never empties."""
    log.warning(
        "sequence %s cannot send (%s): %d step(s) retried in %s",
        group[0].sequence_id,
        exc.detail,
        len(group),
        HOLD_WHEN_UNSENDABLE,
    )
    Enrollment.objects.filter(pk__in=[e.pk for e in group]).update(
        next_step_at=now + HOLD_WHEN_UNSENDABLE, updated_at=now
    )
    run.held += len(group)


def _send_group(group: list[Enrollment], cache: _RunCache, run: StepRun, now: datetime) -> None:
    """Due enrolments of one sequence: their next step each, in bulk (in the group's
    savepoint: a StepSend conflict undoes its emails too)."""
    sequence = group[0].sequence
    steps = cache.steps_of(sequence)
    emails = emails_queue_many(
        sender=sequence.owner,
        mailbox=sequence.mailbox,
        drafts=[_draft(e, steps) for e in group],
    )
    StepSend.objects.bulk_create(
        StepSend(enrollment=e, position=e.steps_sent + 1, email=email)
        for e, email in zip(group, emails, strict=True)
    )
    by_position: dict[int, list[Enrollment]] = {}
    for enrollment in group:
        by_position.setdefault(enrollment.steps_sent + 1, []).append(enrollment)
    finished: list[Enrollment] = []
    for position, enrollments in by_position.items():
        _advance(sequence, steps, position, enrollments, now)
        if position == len(steps):
            finished.extend(enrollments)
    timeline_add_same(
        [e.contact for e in group],
        TimelineType.SEQUENCE,
        at=now,
        details=[_detail(e, "step_sent", step=e.steps_sent + 1) for e in group],
    )
    timeline_add_same(
        [e.contact for e in finished],
        TimelineType.SEQUENCE,
        at=now,
        details=[_detail(e, "finished") for e in finished],
    )
    run.sent += len(group)
    run.finished += len(finished)


def _advance(
    sequence: Sequence,
    steps: list[SequenceStep],
    position: int,
    enrollments: list[Enrollment],
    now: datetime,
) -> None:
    """One UPDATE for the enrolments that just sent step ``position``: their next
    step is due at the same moment (its delay from now, moved into the window)."""
    changes: dict[str, object] = {"steps_sent": position, "updated_at": now}
    if position < len(steps):
        following = steps[position]
        changes["next_step_at"] = delay_then_window(
            sequence_window(sequence), after=now, days=following.delay_days
        )
    else:
        changes.update(state=EnrollmentState.FINISHED, next_step_at=None, ended_at=now)
    if position == 1:
        # Step 1's Message-ID, for the later steps' In-Reply-To and References.
        changes["thread_message_id"] = Subquery(
            StepSend.objects.filter(enrollment=OuterRef("pk"), position=1).values(
                "email__message__message_id"
            )[:1]
        )
    Enrollment.objects.filter(pk__in=[e.pk for e in enrollments]).update(**changes)


def _draft(enrollment: Enrollment, steps: list[SequenceStep]) -> ContactDraft:
    """The enrolment's next step, rendered for its contact; later steps in step 1's thread."""
    contact = enrollment.contact
    step = steps[enrollment.steps_sent]
    values = ContactValues.of(name=contact.name, email=contact.email, company=contact.company)
    subject = render(step.subject, values).strip() if step.subject.strip() else ""
    if step.position > 1 and not subject:
        subject = "Re: " + render(steps[0].subject, values)
    return ContactDraft(
        contact=contact,
        subject=subject,
        text=render(step.text, values),
        html=render(step.html, values, escape_html=True),
        in_reply_to=enrollment.thread_message_id if step.position > 1 else "",
    )


def _detail(enrollment: Enrollment, event: str, **extra: object) -> dict[str, object]:
    return {
        "sequence": str(enrollment.sequence_id),
        "name": enrollment.sequence.name,
        "enrollment": str(enrollment.pk),
        "event": event,
        **extra,
    }


@contextmanager
def _savepoint() -> Iterator[None]:
    with transaction.atomic():
        yield


def _send_one(enrollment: Enrollment, cache: _RunCache, run: StepRun, now: datetime) -> None:
    sequence = enrollment.sequence
    contact = enrollment.contact
    if contact.bounced_at is not None:
        _stop_bounced(enrollment, run, now)
        return
    steps = cache.steps_of(sequence)
    position = enrollment.steps_sent + 1
    if position > len(steps):
        _finish(enrollment, run, now)  # the steps were shortened since
        return
    step = steps[position - 1]
    following = steps[position] if position < len(steps) else None
    next_at = (
        delay_then_window(sequence_window(sequence), after=now, days=following.delay_days)
        if following
        else None
    )
    try:
        with _savepoint():
            moved = Enrollment.objects.filter(
                pk=enrollment.pk, state=EnrollmentState.ACTIVE, steps_sent=enrollment.steps_sent
            ).update(
                steps_sent=position,
                next_step_at=next_at,
                updated_at=now,
                **({} if following else {"state": EnrollmentState.FINISHED, "ended_at": now}),
            )
            if not moved:
                run.skipped += 1
                return
            send = StepSend.objects.create(enrollment=enrollment, position=position)
            email = _queue(enrollment, steps, step, cache)
            StepSend.objects.filter(pk=send.pk).update(email=email)
            if position == 1:
                Enrollment.objects.filter(pk=enrollment.pk).update(
                    thread_message_id=email.message.message_id
                )
            _event(enrollment, "step_sent", now, step=position)
            if not following:
                _event(enrollment, "finished", now)
                run.finished += 1
    except IntegrityError:
        # Another runner sent this step and committed first.
        run.skipped += 1
        return
    run.sent += 1


def _queue(
    enrollment: Enrollment, steps: list[SequenceStep], step: SequenceStep, cache: _RunCache
) -> Email:
    sequence = enrollment.sequence
    draft = _draft(enrollment, steps)
    return email_queue(
        sender=sequence.owner,
        contact=enrollment.contact,
        mailbox=sequence.mailbox,
        subject=draft.subject,
        text=draft.text,
        html=draft.html,
        in_reply_to=draft.in_reply_to,
        references=[draft.in_reply_to] if draft.in_reply_to else [],
    )


def _event(enrollment: Enrollment, event: str, now: datetime, **extra: object) -> None:
    timeline_add(
        enrollment.contact,
        TimelineType.SEQUENCE,
        at=now,
        detail=_detail(enrollment, event, **extra),
    )


def _finish(enrollment: Enrollment, run: StepRun, now: datetime) -> None:
    if Enrollment.objects.filter(pk=enrollment.pk, state=EnrollmentState.ACTIVE).update(
        state=EnrollmentState.FINISHED, next_step_at=None, ended_at=now, updated_at=now
    ):
        _event(enrollment, "finished", now)
        run.finished += 1


def _stop_bounced(enrollment: Enrollment, run: StepRun, now: datetime) -> None:
    if Enrollment.objects.filter(pk=enrollment.pk, state=EnrollmentState.ACTIVE).update(
        state=EnrollmentState.STOPPED,
        stop_reason=StopReason.BOUNCED,
        next_step_at=None,
        ended_at=now,
        updated_at=now,
    ):
        _event(enrollment, "stopped", now, reason=StopReason.BOUNCED)
        run.bounced += 1
