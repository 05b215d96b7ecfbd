"""Sequences: creating and changing one with its steps, who may, and their stats.

A sequence sends from one of its owner's connected personal mailboxes
(``check_send_mailbox``, the one-to-one email's rule); its steps' subjects and bodies
may use the contact variables of crm/variables.py, checked here on every save.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Count, Q, QuerySet

from accounts.models import User
from core.errors import Invalid, NotFoundError, PermissionDeniedError
from crm.models import Enrollment, EnrollmentState, Sequence, SequenceStep, StepSend, StopReason
from crm.rules import check_send_mailbox
from crm.variables import variables_check
from crm.windows import Window, valid_timezone
from inboxes.models import Mailbox

MAX_STEPS = 20
MAX_DELAY_DAYS = 365


@dataclass(frozen=True)
class StepInput:
    subject: str = ""
    text: str = ""
    html: str = ""
    delay_days: int = 0


@dataclass
class SequenceInput:
    """What a form or the API gives; ``None`` leaves a field as it is (on update)."""

    name: str | None = None
    mailbox: Mailbox | None = None
    window_start: time | None = None
    window_end: time | None = None
    timezone: str | None = None
    business_days_only: bool | None = None
    stop_on_auto_reply: bool | None = None
    steps: list[StepInput] | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)


def sequence_window(sequence: Sequence) -> Window:
    return Window(
        start=sequence.window_start,
        end=sequence.window_end,
        timezone=sequence.timezone,
        business_days_only=sequence.business_days_only,
    )


def sequences_visible_to(user: User) -> QuerySet[Sequence]:
    """Every sequence of the user's account (sequences are the account's to see)."""
    return Sequence.objects.filter(account_id=user.account_id).select_related("owner", "mailbox")


def sequence_for(user: User, sequence_id: UUID | str) -> Sequence:
    try:
        return sequences_visible_to(user).get(pk=sequence_id)
    except (Sequence.DoesNotExist, ValueError) as exc:
        raise NotFoundError("No such sequence.") from exc


def may_change(user: User, sequence: Sequence) -> bool:
    return sequence.account_id == user.account_id and (
        sequence.owner_id == user.pk or user.is_admin
    )


def check_may_change(user: User, sequence: Sequence) -> None:
    if not may_change(user, sequence):
        raise PermissionDeniedError("Only the sequence's owner or an admin can change it.")


def _step_problems(steps: list[StepInput]) -> list[str]:
    problems: list[str] = []
    if not steps:
        return ["Add at least one step."]
    if len(steps) > MAX_STEPS:
        problems.append(f"A sequence has at most {MAX_STEPS} steps.")
    for position, step in enumerate(steps, start=1):
        label = f"Step {position}"
        # Later steps reply in step 1's thread: their subject defaults to "Re: ...".
        if position == 1 and not step.subject.strip():
            problems.append(f"{label}: write a subject.")
        if not step.text.strip() and not step.html.strip():
            problems.append(f"{label}: write a body (text or HTML).")
        if not 0 <= step.delay_days <= MAX_DELAY_DAYS:
            problems.append(f"{label}: the delay is 0 to {MAX_DELAY_DAYS} days.")
        for part in (step.subject, step.text, step.html):
            problems.extend(f"{label}: {problem}" for problem in variables_check(part))
    return problems


def _validate(owner: User, data: SequenceInput, current: Sequence | None) -> None:
    errors: dict[str, list[str]] = {key: list(value) for key, value in data.errors.items()}
    name = data.name if data.name is not None else (current.name if current else "")
    if not name.strip():
        errors.setdefault("name", []).append("Give the sequence a name.")
    zone = data.timezone if data.timezone is not None else (current.timezone if current else "")
    if not valid_timezone(zone):
        errors.setdefault("timezone", []).append(
            "Pick a time zone from the list (an IANA name such as Europe/Amsterdam)."
        )
    start = data.window_start or (current.window_start if current else None)
    end = data.window_end or (current.window_end if current else None)
    if start is None or end is None or start >= end:
        errors.setdefault("window", []).append(
            "The send window starts before it ends, within one day (e.g. 09:00 to 17:00)."
        )
    if data.steps is not None or current is None:
        problems = _step_problems(data.steps or [])
        if problems:
            errors["steps"] = problems
    if data.mailbox is not None or current is None:
        try:
            check_send_mailbox(owner, data.mailbox)
        except (Invalid, NotFoundError):
            errors.setdefault("mailbox", []).append(
                "Pick one of the owner's connected personal mailboxes."
            )
    if errors:
        raise Invalid("Some fields are invalid.", errors=errors)


def _steps_write(sequence: Sequence, steps: list[StepInput]) -> None:
    SequenceStep.objects.filter(sequence=sequence).delete()
    SequenceStep.objects.bulk_create(
        SequenceStep(
            sequence=sequence,
            position=position,
            subject=step.subject.strip(),
            text=step.text,
            html=step.html,
            delay_days=step.delay_days,
        )
        for position, step in enumerate(steps, start=1)
    )


def sequence_create(*, owner: User, data: SequenceInput) -> Sequence:
    _validate(owner, data, None)
    # _validate refused the input unless these are set.
    assert data.mailbox is not None and data.steps is not None
    assert data.window_start is not None and data.window_end is not None
    assert data.timezone is not None
    with transaction.atomic():
        sequence = Sequence.objects.create(
            account_id=owner.account_id,
            owner=owner,
            name=(data.name or "").strip(),
            mailbox=data.mailbox,
            window_start=data.window_start,
            window_end=data.window_end,
            timezone=data.timezone,
            business_days_only=(
                True if data.business_days_only is None else data.business_days_only
            ),
            stop_on_auto_reply=bool(data.stop_on_auto_reply),
        )
        _steps_write(sequence, data.steps)
    return sequence


def sequence_update(*, actor: User, sequence: Sequence, data: SequenceInput) -> Sequence:
    """Change what ``data`` holds. Steps are replaced as a whole; enrolments keep
    their place (``steps_sent``), so a step already sent is not sent again."""
    check_may_change(actor, sequence)
    owner = sequence.owner
    _validate(owner, data, sequence)
    with transaction.atomic():
        for name in (
            "mailbox",
            "window_start",
            "window_end",
            "timezone",
            "business_days_only",
            "stop_on_auto_reply",
        ):
            value = getattr(data, name)
            if value is not None:
                setattr(sequence, name, value)
        if data.name is not None:
            sequence.name = data.name.strip()
        sequence.save()
        if data.steps is not None:
            _steps_write(sequence, data.steps)
    return sequence


# --- Stats --------------------------------------------------------------------------------------

STAT_NAMES = ("enrolled", "active", "sent", "opened", "clicked", "replied", "bounced")


def sequences_stats(sequence_ids: Iterable[UUID]) -> dict[UUID, dict[str, int]]:
    """The stats of each sequence, in two queries whatever their number."""
    ids = list(sequence_ids)
    stats: dict[UUID, dict[str, int]] = {pk: dict.fromkeys(STAT_NAMES, 0) for pk in ids}
    if not ids:
        return stats
    enrolments = (
        Enrollment.objects.filter(sequence_id__in=ids)
        .values("sequence_id")
        .annotate(
            enrolled=Count("id"),
            active=Count("id", filter=Q(state=EnrollmentState.ACTIVE)),
            replied=Count("id", filter=Q(stop_reason=StopReason.REPLIED)),
            bounced=Count("id", filter=Q(stop_reason=StopReason.BOUNCED)),
        )
        .order_by()
    )
    for row in enrolments:
        _merge(stats[row["sequence_id"]], row, ("enrolled", "active", "replied", "bounced"))
    sends = (
        StepSend.objects.filter(enrollment__sequence_id__in=ids)
        .values("enrollment__sequence_id")
        .annotate(
            sent=Count("id"),
            opened=Count("id", filter=Q(email__opens__gt=0)),
            clicked=Count("id", filter=Q(email__clicks__gt=0)),
        )
        .order_by()
    )
    for sent in sends:
        _merge(stats[sent["enrollment__sequence_id"]], sent, ("sent", "opened", "clicked"))
    return stats


def _merge(into: dict[str, int], row: Mapping[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        into[name] = int(row[name])
