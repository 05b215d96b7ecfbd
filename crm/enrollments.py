"""Enrolments ending on their own: a reply from the contact, a hard bounce.

(Enrolling, pausing, resuming and unenrolling by hand, and sending the steps, are
the sequences' service modules.)"""

from __future__ import annotations

from django.utils import timezone

from crm.models import (
    LIVE_ENROLLMENT_STATES,
    Contact,
    Enrollment,
    EnrollmentState,
    StopReason,
    TimelineType,
)
from crm.timeline import timeline_add


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
