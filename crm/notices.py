"""Who sent a CRM email whose send failed (notifications/sends.py): its sender, or for
a sequence's step the sequence's owner."""

from __future__ import annotations

from crm.models import Email
from inboxes.models import OutboxItem
from notifications.models import SubjectType
from notifications.sends import Sender


def crm_email_sender(item: OutboxItem) -> Sender | None:
    email = (
        Email.objects.select_related("sent_by", "step_send__enrollment__sequence__owner")
        .filter(message_id=item.message_id, sent_by__isnull=False)
        .first()
    )
    if email is None or email.sent_by is None:
        return None
    step = getattr(email, "step_send", None)
    if step is not None:
        enrollment = step.enrollment
        return Sender(
            user=enrollment.sequence.owner,
            subject_type=SubjectType.ENROLLMENT,
            subject_id=enrollment.pk,
            url=f"/sequences/{enrollment.sequence_id}/",
        )
    return Sender(
        user=email.sent_by,
        subject_type=SubjectType.EMAIL,
        subject_id=email.pk,
        url=f"/contacts/{email.contact_id}/",
    )
