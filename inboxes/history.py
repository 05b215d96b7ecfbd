"""How much history a mailbox imports: chosen on connect, made larger later.

A mailbox's ``backfill_days`` is its import window: mail from the last that many
days (counted back from when it was chosen) is imported, ``0`` imports only mail
that arrives after the connect, ``None`` all of it. The same few choices are
offered everywhere (API, settings pages, the sign-in flows). History is filed
quietly: no routing, no notifications, no reopened conversations.

Importing older mail later (``mailbox_import_history``) only makes the window
larger: the next sync lists what lies before the folders' current window start
and imports what the sync ledger does not hold yet (inboxes/sync/history.py).
Nothing stored is imported twice, and a smaller window is refused (nothing is
ever deleted to shrink one).
"""

from __future__ import annotations

from django.db import transaction

from accounts.models import User
from audit.services import audit_record, audit_refusals
from core.errors import Invalid, PermissionDeniedError
from inboxes import rules
from inboxes.models import Mailbox
from inboxes.sync import schedule_sync

DEFAULT_BACKFILL_DAYS = 30
# The windows offered, in days (None: all mail).
BACKFILL_DAYS_CHOICES: tuple[int | None, ...] = (0, 30, 90, 365, None)
BACKFILL_LABELS = {
    0: "Only new mail",
    30: "The last 30 days",
    90: "The last 90 days",
    365: "The last year",
    None: "All mail",
}
# How the web forms spell "all" (a select has no null).
ALL = "all"


def backfill_choices(*, larger_than: int | None = -1) -> list[tuple[str, str]]:
    """The windows as (form value, label), only those larger than ``larger_than``
    (-1: all of them; None, "all mail", leaves none)."""
    return [
        (ALL if days is None else str(days), BACKFILL_LABELS[days])
        for days in BACKFILL_DAYS_CHOICES
        if window_larger(days, larger_than)
    ]


def backfill_select_context() -> dict[str, object]:
    """What the pages with a connect button need for their history select."""
    return {"backfill_options": backfill_choices(), "backfill_default": str(DEFAULT_BACKFILL_DAYS)}


def backfill_from_form(value: str | None, *, required: bool = False) -> int | None:
    """A form's (or a query string's) value as days (left out: the default window,
    unless ``required``); Invalid for anything not offered."""
    if value in (None, "") and not required:
        return DEFAULT_BACKFILL_DAYS
    if value == ALL:
        return None
    if value and value.isdigit() and int(value) in BACKFILL_DAYS_CHOICES:
        return int(value)
    raise Invalid(
        "Choose how much history to import.", errors={"backfill_days": [_offered_sentence()]}
    )


def _offered_sentence() -> str:
    return 'Use 0 (only new mail), 30, 90, 365 or null (all mail; "all" in forms).'


def check_backfill_days(backfill_days: int | None) -> None:
    if backfill_days not in BACKFILL_DAYS_CHOICES or isinstance(backfill_days, bool):
        raise Invalid(
            "Choose how much history to import.",
            errors={"backfill_days": [_offered_sentence()]},
        )


def window_larger(days: int | None, than: int | None) -> bool:
    """Is a window of ``days`` larger than one of ``than``? (None: all mail.)"""
    if than is None:
        return False
    return days is None or days > than


def window_label(days: int | None) -> str:
    return BACKFILL_LABELS.get(days, f"The last {days} days")


def may_import_history(actor: User, mailbox: Mailbox) -> bool:
    """Whether to offer "Import older mail" to ``actor`` (the service checks again)."""
    if not mailbox.is_connected or mailbox.backfill_days is None:
        return False
    try:
        rules.check_may_manage(actor, mailbox, "import older mail into")
    except PermissionDeniedError:
        return False
    return True


def mailbox_import_history(
    *, actor: User, mailbox: Mailbox, backfill_days: int | None, ip: str | None = None
) -> Mailbox:
    """Make the mailbox's import window larger and let the next sync bring in the rest.

    The owner of a personal email, an admin for a team email. The same window again
    changes nothing (a retried request is harmless); a smaller one is refused."""
    with audit_refusals(
        actor=actor, action="mailbox.import_history_refused", target_repr=mailbox.address, ip=ip
    ):
        rules.check_may_manage(actor, mailbox, "import older mail into")
    check_backfill_days(backfill_days)
    with transaction.atomic():
        current = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
        if not current.is_connected:
            raise Invalid("This mailbox is disconnected; connect it again instead.")
        previous = current.backfill_days
        if backfill_days == previous:
            return current
        if not window_larger(backfill_days, previous):
            raise Invalid(
                f"{current.address} already imports {window_label(previous).lower()}; "
                "older mail can be added, but a window is never made smaller "
                "(nothing stored is deleted).",
                errors={
                    "backfill_days": [
                        f"Choose a larger window than {window_label(previous).lower()}."
                    ]
                },
            )
        current.backfill_days = backfill_days
        current.save(update_fields=["backfill_days", "updated_at"])
        schedule_sync(current.pk)
        audit_record(
            account=current.account,
            actor=actor,
            action="mailbox.history_import",
            target=current,
            ip=ip,
            data={"from_days": previous, "to_days": backfill_days},
        )
    return current
