"""Writes on conversations inboxes (R3, R5, R9)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Final

from django.db import IntegrityError, transaction

from accounts.models import Team, User
from accounts.services import account_lock
from audit.services import audit_record
from conversations.models import RoutingMode, RoutingRule
from core.errors import Invalid, TeamAddressInOtherInbox
from core.text import check_single_line
from inboxes import rules
from inboxes.models import Inbox, Mailbox
from inboxes.sync import schedule_sync


class _Unset(Enum):
    """The default of inbox_update's fields: not given, so left as they are."""

    TOKEN = 0


UNSET: Final = _Unset.TOKEN


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise Invalid("The inbox needs a name.", errors={"name": ["This field is required."]})
    if len(name) > 200:
        raise Invalid("The name is too long.", errors={"name": ["At most 200 characters."]})
    return check_single_line(name, field="name", label="inbox name")


def _check_reply_text(value: object, *, field: str, label: str, limit: int) -> str:
    """A from-name or signature, stripped; refused when too long rather than cut short."""
    text = str(value).strip()
    if len(text) > limit:
        raise Invalid(
            f"The {label} is too long: use at most {limit} characters.",
            errors={field: [f"At most {limit} characters."]},
        )
    return text


def _check_from_name(value: object) -> str:
    """The display name of the From header of every reply: one line (R9)."""
    text = _check_reply_text(value, field="from_name", label="from-name", limit=200)
    return check_single_line(text, field="from_name", label="from-name")


def inbox_create(*, actor: User, name: str, from_name: str = "", ip: str | None = None) -> Inbox:
    rules.check_admin(actor, "create an inbox")
    name = _check_name(name)
    from_name = _check_from_name(from_name)
    try:
        with transaction.atomic():
            account = account_lock(actor.account_id)
            # R5 under the account lock: two creates at the limit can't both pass.
            rules.check_inbox_create(account=account)
            inbox = Inbox.objects.create(account=account, name=name, from_name=from_name)
            audit_record(account=account, actor=actor, action="inbox.created", target=inbox, ip=ip)
    except IntegrityError as exc:
        raise Invalid(
            f"There is already an inbox called {name}.",
            errors={"name": ["An inbox with this name exists."]},
        ) from exc
    return inbox


def inbox_update(
    *,
    actor: User,
    inbox: Inbox,
    name: str | _Unset = UNSET,
    from_name: str | _Unset = UNSET,
    mailbox: Mailbox | None | _Unset = UNSET,
    signature: str | _Unset = UNSET,
    restricted: bool | _Unset = UNSET,
    reopen_on_auto_reply: bool | _Unset = UNSET,
    assign_on_reply: bool | _Unset = UNSET,
    teams: Iterable[Team] | _Unset = UNSET,
    ip: str | None = None,
) -> Inbox:
    """Rename, set the from-name (R9) and signature, connect or detach the team email
    (R3, R4), and choose who sees the inbox (everyone, or only chosen teams): an inbox
    only some teams see needs at least one of them."""
    rules.check_admin(actor, "change an inbox")
    if from_name is not UNSET:
        from_name = _check_from_name(from_name)
    if signature is not UNSET:
        signature = _check_reply_text(signature, field="signature", label="signature", limit=5000)
    changes: dict[str, object] = {}
    try:
        with transaction.atomic():
            account_lock(actor.account_id)
            inbox = Inbox.objects.select_related("mailbox").get(pk=inbox.pk)
            before = {
                "name": inbox.name,
                "from_name": inbox.from_name,
                "restricted": inbox.restricted,
                "reopen_on_auto_reply": inbox.reopen_on_auto_reply,
                "mailbox": inbox.mailbox.address if inbox.mailbox else None,
            }
            if name is not UNSET:
                inbox.name = _check_name(name)
                changes["name"] = inbox.name
            if from_name is not UNSET:
                inbox.from_name = from_name
                changes["from_name"] = inbox.from_name
            if signature is not UNSET:
                inbox.signature = signature
                changes["signature"] = "changed"
            if restricted is not UNSET:
                inbox.restricted = bool(restricted)
                changes["restricted"] = inbox.restricted
            if reopen_on_auto_reply is not UNSET:
                inbox.reopen_on_auto_reply = bool(reopen_on_auto_reply)
                changes["reopen_on_auto_reply"] = inbox.reopen_on_auto_reply
            if assign_on_reply is not UNSET:
                inbox.assign_on_reply = bool(assign_on_reply)
                changes["assign_on_reply"] = inbox.assign_on_reply
            chosen: list[Team] | None = None
            if teams is not UNSET:
                chosen = list(teams)
                if any(team.account_id != inbox.account_id for team in chosen):
                    raise Invalid("Unknown team.", errors={"teams": ["Unknown team."]})
            if restricted is not UNSET or chosen is not None:
                seen_by = chosen if chosen is not None else list(inbox.visible_to_teams.all())
                _check_visibility(restricted=inbox.restricted, teams=seen_by)
            if chosen is not None:
                inbox.visible_to_teams.set(chosen)
                changes["teams"] = sorted(team.name for team in chosen)
            if mailbox is not UNSET and mailbox != inbox.mailbox:
                if mailbox is not None:
                    rules.check_inbox_attach(inbox=inbox, mailbox=mailbox, viewer=actor)
                changes["mailbox"] = mailbox.address if mailbox is not None else None
                inbox.mailbox = mailbox
                if mailbox is not None:
                    schedule_sync(mailbox.pk)
            inbox.save()
            # Before -> after for the audit log, of the fields that hold a short value
            # and did change (the signature only says "changed").
            changed = {
                field: {"before": before[field], "after": changes[field]}
                for field in before
                if field in changes and before[field] != changes[field]
            }
            if changes:
                audit_record(
                    account=inbox.account,
                    actor=actor,
                    action="inbox.updated",
                    target=inbox,
                    ip=ip,
                    data={**changes, "changes": changed} if changed else changes,
                )
    except IntegrityError as exc:
        if "mailbox" in changes:
            raise TeamAddressInOtherInbox(
                f"{changes['mailbox']} was just connected to another inbox."
            ) from exc
        raise Invalid(
            "There is already an inbox with this name.",
            errors={"name": ["An inbox with this name exists."]},
        ) from exc
    return inbox


def _check_visibility(*, restricted: bool, teams: list[Team]) -> None:
    if restricted and not teams:
        raise Invalid(
            "Choose at least one team that may see this inbox, or let everyone in the "
            "account see it.",
            errors={"teams": ["Choose at least one team, or let everyone see the inbox."]},
        )


def inbox_delete(*, actor: User, inbox: Inbox, ip: str | None = None) -> None:
    rules.check_admin(actor, "delete an inbox")
    with transaction.atomic():
        audit_record(
            account=inbox.account,
            actor=actor,
            action="inbox.deleted",
            target=inbox,
            ip=ip,
            data={"mailbox": inbox.mailbox.address if inbox.mailbox else None},
        )
        inbox.delete()


def routing_rule_set(
    *,
    actor: User,
    inbox: Inbox,
    mode: str,
    users: Iterable[User] = (),
    team: Team | None = None,
) -> RoutingRule:
    """Set an inbox's routing (R9): no automatic assignment, or round-robin among
    chosen users or the members of a team (a team without members is refused)."""
    rules.check_admin(actor, "change routing")
    if mode not in RoutingMode.values:
        raise Invalid(
            "Unknown routing mode.", errors={"mode": [f"Use one of {RoutingMode.values}."]}
        )
    users = list(users)
    if any(u.account_id != actor.account_id for u in users) or (
        team is not None and team.account_id != actor.account_id
    ):
        raise Invalid("Unknown user or team.")
    if mode == RoutingMode.ROUND_ROBIN and not users and team is None:
        raise Invalid(
            "Round-robin needs people: choose users or a team.",
            errors={"users": ["Choose users or a team."]},
        )
    if mode == RoutingMode.ROUND_ROBIN and team is not None and not team.members.exists():
        raise Invalid(
            f"Team {team.name} has no members yet, so nobody would get a conversation. "
            "Add people to it on the Teams page, or choose people instead.",
            errors={"team": ["This team has no members."]},
        )
    with transaction.atomic():
        rule, _ = RoutingRule.objects.get_or_create(inbox=inbox)
        rule.mode = mode
        rule.team = team
        rule.save()
        rule.users.set(users)
        audit_record(
            account=inbox.account,
            actor=actor,
            action="inbox.routing_changed",
            target=inbox,
            data={
                "mode": mode,
                "users": [u.email for u in users],
                "team": team.name if team else None,
            },
        )
    return rule
