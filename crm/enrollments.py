"""Enrolments: ending on their own (a reply from the contact, a hard bounce), and by
hand (enrol, pause, resume, unenrol). Sending the steps is crm/steps.py."""

from __future__ import annotations

from collections.abc import Sequence as Sequence_
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from core.errors import Invalid, NotFoundError, PermissionDeniedError
from crm.errors import ContactInSequence
from crm.models import (
    LIVE_ENROLLMENT_STATES,
    Contact,
    Enrollment,
    EnrollmentState,
    Sequence,
    StepSend,
    StopReason,
    TimelineType,
)
from crm.sequences import may_change, sequence_window
from crm.timeline import timeline_add
from crm.windows import delay_then_window, next_send_moment


def enrollments_stop(contact: Contact, reason: StopReason, *, auto_reply: bool = False) -> int:
    """Stop the contact's live enrolments with ``reason``. An auto-reply (RFC 3834)
    stops only the sequences that ask for it (``stop_on_auto_reply``). Returns how
    many stopped."""
    live = Enrollment.objects.filter(contact=contact, state__in=LIVE_ENROLLMENT_STATES)
    if auto_reply:
        live = live.filter(sequence__stop_on_auto_reply=True)
    now = timezone.now()
    stopped = 0
    for enrollment in live.select_related("sequence"):
        changed = Enrollment.objects.filter(
            pk=enrollment.pk, state__in=LIVE_ENROLLMENT_STATES
        ).update(
            state=EnrollmentState.STOPPED,
            stop_reason=reason,
            next_step_at=None,
            ended_at=now,
            updated_at=now,
        )
        if changed:
            stopped += 1
            timeline_add(
                contact,
                TimelineType.SEQUENCE,
                at=now,
                detail={
                    "sequence": str(enrollment.sequence_id),
                    "name": enrollment.sequence.name,
                    "enrollment": str(enrollment.pk),
                    "event": "stopped",
                    "reason": reason,
                },
            )
    return stopped


# --- By hand: enrol, pause, resume, unenrol ------------------------------------------------------


@dataclass(frozen=True)
class EnrolResult:
    contact: Contact
    enrollment: Enrollment | None
    # None when enrolled; otherwise the API's error code (``contact_in_sequence``).
    refused: str | None = None


def _event(enrollment: Enrollment, sequence: Sequence, event: str, **extra: Any) -> None:
    timeline_add(
        enrollment.contact,
        TimelineType.SEQUENCE,
        at=timezone.now(),
        detail={
            "sequence": str(sequence.pk),
            "name": sequence.name,
            "enrollment": str(enrollment.pk),
            "event": event,
            **extra,
        },
    )


def _first_due(sequence: Sequence, after: datetime) -> datetime | None:
    first = sequence.steps.order_by("position").first()
    if first is None:
        return None
    return delay_then_window(sequence_window(sequence), after=after, days=first.delay_days)


def enrollments_create(
    *, actor: User, sequence: Sequence, contacts: Sequence_[Contact]
) -> list[EnrolResult]:
    """Enrol each contact (of the actor's account, loaded by the caller). A contact
    with a live enrolment anywhere is refused (``contact_in_sequence``); the partial
    unique constraint settles two enrolments at once."""
    now = timezone.now()
    first_due = _first_due(sequence, now)
    live = set(
        Enrollment.objects.filter(
            contact__in=[contact.pk for contact in contacts], state__in=LIVE_ENROLLMENT_STATES
        ).values_list("contact_id", flat=True)
    )
    results: list[EnrolResult] = []
    for contact in contacts:
        if contact.account_id != sequence.account_id:
            raise NotFoundError("No such contact.")
        if contact.pk in live:
            results.append(EnrolResult(contact, None, ContactInSequence.code))
            continue
        try:
            with transaction.atomic():
                enrollment = Enrollment.objects.create(
                    account_id=sequence.account_id,
                    sequence=sequence,
                    contact=contact,
                    next_step_at=first_due,
                    enrolled_by=actor,
                )
                _event(enrollment, sequence, "enrolled")
        except IntegrityError:
            results.append(EnrolResult(contact, None, ContactInSequence.code))
            continue
        results.append(EnrolResult(contact, enrollment))
    return results


def enrollment_create(*, actor: User, sequence: Sequence, contact: Contact) -> Enrollment:
    (result,) = enrollments_create(actor=actor, sequence=sequence, contacts=[contact])
    if result.enrollment is None:
        raise ContactInSequence(f"{contact} is already in a sequence: unenrol them there first.")
    return result.enrollment


def may_manage(user: User, enrollment: Enrollment) -> bool:
    return may_change(user, enrollment.sequence) or enrollment.enrolled_by_id == user.pk


def _check_may_manage(user: User, enrollment: Enrollment) -> None:
    if enrollment.account_id != user.account_id:
        raise NotFoundError("No such enrolment.")
    if not may_manage(user, enrollment):
        raise PermissionDeniedError(
            "Only the sequence's owner, an admin or whoever enrolled the contact can do this."
        )


def _transition(enrollment: Enrollment, *, from_states: tuple[str, ...], **changes: Any) -> bool:
    """A conditional update: the state the caller saw must still hold (a step run or
    a reply may have moved it meanwhile)."""
    now = timezone.now()
    changed = Enrollment.objects.filter(pk=enrollment.pk, state__in=from_states).update(
        updated_at=now, **changes
    )
    enrollment.refresh_from_db()
    return bool(changed)


def enrollment_pause(*, actor: User, enrollment: Enrollment) -> Enrollment:
    _check_may_manage(actor, enrollment)
    if _transition(
        enrollment,
        from_states=(EnrollmentState.ACTIVE,),
        state=EnrollmentState.PAUSED,
        next_step_at=None,
    ):
        _event(enrollment, enrollment.sequence, "paused")
    elif enrollment.state != EnrollmentState.PAUSED:
        raise Invalid(f"This enrolment is {enrollment.state}: only an active one can be paused.")
    return enrollment


def next_step_due(enrollment: Enrollment, *, now: datetime) -> datetime | None:
    """When the enrolment's next step is due: its delay counted from the previous
    step (or the enrolment), not before ``now``, moved into the window. None when
    every step was sent."""
    sequence = enrollment.sequence
    step = sequence.steps.filter(position=enrollment.steps_sent + 1).first()
    if step is None:
        return None
    previous = (
        StepSend.objects.filter(enrollment=enrollment, position=enrollment.steps_sent)
        .values_list("created_at", flat=True)
        .first()
    )
    window = sequence_window(sequence)
    due = delay_then_window(window, after=previous or enrollment.created_at, days=step.delay_days)
    return max(due, next_send_moment(window, now))


def enrollment_resume(*, actor: User, enrollment: Enrollment) -> Enrollment:
    _check_may_manage(actor, enrollment)
    if enrollment.state != EnrollmentState.PAUSED:
        raise Invalid(f"This enrolment is {enrollment.state}: only a paused one can be resumed.")
    due = next_step_due(enrollment, now=timezone.now())
    if due is None:
        if _transition(
            enrollment,
            from_states=(EnrollmentState.PAUSED,),
            state=EnrollmentState.FINISHED,
            ended_at=timezone.now(),
        ):
            _event(enrollment, enrollment.sequence, "finished")
    elif _transition(
        enrollment,
        from_states=(EnrollmentState.PAUSED,),
        state=EnrollmentState.ACTIVE,
        next_step_at=due,
    ):
        _event(enrollment, enrollment.sequence, "resumed")
    return enrollment


def enrollment_unenroll(*, actor: User, enrollment: Enrollment) -> Enrollment:
    _check_may_manage(actor, enrollment)
    if _transition(
        enrollment,
        from_states=LIVE_ENROLLMENT_STATES,
        state=EnrollmentState.STOPPED,
        stop_reason=StopReason.UNENROLLED,
        next_step_at=None,
        ended_at=timezone.now(),
    ):
        _event(enrollment, enrollment.sequence, "stopped", reason=StopReason.UNENROLLED)
    elif enrollment.state not in (EnrollmentState.STOPPED, EnrollmentState.FINISHED):
        raise Invalid("This enrolment cannot be unenrolled.")  # pragma: no cover
    return enrollment


def enrollments_visible_to(user: User) -> QuerySet[Enrollment]:
    return Enrollment.objects.filter(account_id=user.account_id).select_related(
        "sequence", "contact"
    )


def enrollment_for(user: User, enrollment_id: UUID | str) -> Enrollment:
    try:
        return enrollments_visible_to(user).get(pk=enrollment_id)
    except (Enrollment.DoesNotExist, ValueError) as exc:
        raise NotFoundError("No such enrolment.") from exc
