"""The sequence form of the pages, read from a POST without Django forms: a variable
number of steps, added and removed by submit buttons (no JavaScript needed).

Fields: ``name``, ``mailbox``, ``window_start``, ``window_end`` ("09:00"),
``timezone``, ``business_days_only``, ``stop_on_auto_reply``, ``step_count`` and per
step ``step-<n>-subject``, ``-text``, ``-html``, ``-delay_days``. The button pressed
is ``action``: ``save``, ``add_step`` or ``remove_step_<n>``."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, time

from django.http import QueryDict

from accounts.models import User
from crm.models import Sequence
from crm.sequences import MAX_STEPS, SequenceInput, StepInput
from inboxes.models import Mailbox


@dataclass
class StepRow:
    subject: str = ""
    text: str = ""
    html: str = ""
    delay_days: str = "0"


@dataclass
class SequenceForm:
    owner_account_id: uuid.UUID | None = None
    name: str = ""
    mailbox: str = ""
    window_start: str = "09:00"
    window_end: str = "17:00"
    timezone: str = "UTC"
    business_days_only: bool = True
    stop_on_auto_reply: bool = False
    steps: list[StepRow] = field(default_factory=lambda: [StepRow()])

    def as_input(self) -> SequenceInput:
        data = SequenceInput(
            name=self.name,
            timezone=self.timezone,
            business_days_only=self.business_days_only,
            stop_on_auto_reply=self.stop_on_auto_reply,
        )
        mailbox_id = _uuid_or_none(self.mailbox)
        data.mailbox = (
            Mailbox.objects.filter(account_id=self.owner_account_id, pk=mailbox_id).first()
            if mailbox_id and self.owner_account_id
            else None
        )
        if data.mailbox is None:
            data.errors["mailbox"] = ["Pick one of the owner's connected personal mailboxes."]
        data.window_start = _time_or_none(self.window_start)
        data.window_end = _time_or_none(self.window_end)
        if data.window_start is None or data.window_end is None:
            data.errors["window"] = ["Write the window's times as HH:MM, e.g. 09:00 and 17:00."]
        steps: list[StepInput] = []
        for position, row in enumerate(self.steps, start=1):
            try:
                delay = int(row.delay_days or "0")
            except ValueError:
                data.errors.setdefault("steps", []).append(
                    f"Step {position}: the delay is a whole number of days."
                )
                delay = 0
            steps.append(StepInput(row.subject, row.text, row.html, delay))
        data.steps = steps
        return data


def _uuid_or_none(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _time_or_none(value: str) -> time | None:
    try:
        return datetime.strptime(value.strip(), "%H:%M").time()
    except ValueError:
        return None


def blank_form(mailboxes: list[Mailbox]) -> SequenceForm:
    return SequenceForm(mailbox=str(mailboxes[0].pk) if mailboxes else "")


def form_of_sequence(sequence: Sequence) -> SequenceForm:
    return SequenceForm(
        owner_account_id=sequence.account_id,
        name=sequence.name,
        mailbox=str(sequence.mailbox_id),
        window_start=sequence.window_start.strftime("%H:%M"),
        window_end=sequence.window_end.strftime("%H:%M"),
        timezone=sequence.timezone,
        business_days_only=sequence.business_days_only,
        stop_on_auto_reply=sequence.stop_on_auto_reply,
        steps=[
            StepRow(step.subject, step.text, step.html, str(step.delay_days))
            for step in sequence.steps.order_by("position")
        ],
    )


def read_form(post: QueryDict, owner: User) -> tuple[SequenceForm, str]:
    """The form as posted, with a step added or removed when that button was pressed;
    and the action (``save`` or what was done)."""
    try:
        count = min(int(post.get("step_count", "1")), MAX_STEPS)
    except ValueError:
        count = 1
    steps = [
        StepRow(
            subject=post.get(f"step-{n}-subject", ""),
            text=post.get(f"step-{n}-text", ""),
            html=post.get(f"step-{n}-html", ""),
            delay_days=post.get(f"step-{n}-delay_days", "0"),
        )
        for n in range(max(count, 0))
    ]
    action = post.get("action", "save")
    if action == "add_step" and len(steps) < MAX_STEPS:
        steps.append(StepRow(delay_days="3" if steps else "0"))
    elif action.startswith("remove_step_"):
        with contextlib.suppress(ValueError, IndexError):
            del steps[int(action.removeprefix("remove_step_"))]
    elif action != "save":
        action = "save"
    form = SequenceForm(
        owner_account_id=owner.account_id,
        name=post.get("name", ""),
        mailbox=post.get("mailbox", ""),
        window_start=post.get("window_start", ""),
        window_end=post.get("window_end", ""),
        timezone=post.get("timezone", ""),
        business_days_only=post.get("business_days_only") == "on",
        stop_on_auto_reply=post.get("stop_on_auto_reply") == "on",
        steps=steps,
    )
    return form, action
