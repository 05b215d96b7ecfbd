"""Writes on mailboxes: connect, update, test, disconnect, release, transfer.

Every path (web UI, API, commands, workers) calls these functions, which call
the rules in inboxes/rules.py. Network I/O (the connection test) never runs
inside a database transaction: the rules are checked once before it for a fast
answer and again after it, inside the transaction that writes, under the
account lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Account, User
from accounts.services import account_lock
from audit.services import audit_record, audit_refusals
from core.errors import (
    AddressInUse,
    ConnectionFailed,
    Invalid,
    NeedsReauth,
    PermissionDeniedError,
    TeamAddressInConversations,
)
from inboxes import events, holds, rules
from inboxes.addresses import canonical_address
from inboxes.connection_test import ConnectionTestResult, run_connection_test
from inboxes.credentials import encrypt_secrets, mailbox_secrets
from inboxes.history import DEFAULT_BACKFILL_DAYS, check_backfill_days
from inboxes.models import (
    AuthMethod,
    Inbox,
    Mailbox,
    MailboxKind,
    MailboxStatus,
    Provider,
    Security,
    SyncState,
)
from inboxes.outbox import outbox_resume
from inboxes.providers.base import ProviderError
from inboxes.providers.imap.auth import stored_token_source
from inboxes.providers.imap.connection import ServerSettings
from inboxes.push.renewal import push_channels_end
from inboxes.sync import schedule_sync
from inboxes.throttling import connection_test_allowed


@dataclass(frozen=True)
class ServerInput:
    """IMAP or SMTP settings as a user typed them (already type-checked)."""

    host: str
    port: int
    security: str
    username: str
    password: str

    def settings(self) -> ServerSettings:
        return ServerSettings(
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
            password=self.password,
        )


def _check_server_input(server: ServerInput, field: str) -> None:
    errors: dict[str, list[str]] = {}
    if not server.host.strip():
        errors["host"] = ["This field is required."]
    if not 1 <= server.port <= 65535:
        errors["port"] = ["Use a port between 1 and 65535."]
    if server.security not in Security.values:
        errors["security"] = [f"Use one of {', '.join(Security.values)}."]
    if not server.username:
        errors["username"] = ["This field is required."]
    if not server.password:
        errors["password"] = ["This field is required."]
    if errors:
        raise Invalid(f"The {field.upper()} settings are incomplete.", errors={field: errors})


# --- Connection test --------------------------------------------------------------


def connection_test_run(
    *,
    actor: User,
    account: Account,
    imap: ServerInput,
    smtp: ServerInput,
    address: str,
    ip: str | None,
    oauth_token: str | None = None,
) -> ConnectionTestResult:
    """Run the test; a failure is audited (a refused host is how SSRF probing looks)."""
    connection_test_allowed()  # the failed-test limiter, checked after every other rule
    result = run_connection_test(
        imap=imap.settings(), smtp=smtp.settings(), oauth_token=oauth_token
    )
    if not result.ok:
        failed = next(step for step in result.steps if not step.ok)
        audit_record(
            account=account,
            actor=actor,
            action="mailbox.connection_test_failed",
            target_repr=address,
            ip=ip,
            data={"step": failed.step, "server": failed.server, "detail": failed.detail},
        )
    return result


def raise_if_failed(result: ConnectionTestResult) -> None:
    if result.ok:
        return
    failed = next(step for step in result.steps if not step.ok)
    raise ConnectionFailed(
        f"The connection test failed at the {failed.step} step ({failed.server.upper()}): "
        f"{failed.detail}",
        step=failed.step,
        server=failed.server,
        steps=result.as_dict()["steps"],
    )


# --- Connect ----------------------------------------------------------------------------


def mailbox_check_availability(*, actor: User, address: str, kind: str) -> dict[str, Any]:
    """``POST /mailboxes/check/``: would this connect be allowed? No side effects."""
    if kind not in MailboxKind.values:
        raise Invalid("Unknown kind.", errors={"kind": ['Use "personal" or "team".']})
    canonical = canonical_address(address)
    try:
        rules.check_mailbox_connect(
            actor=actor,
            canonical=canonical,
            address=address,
            kind=kind,
            acknowledge_team_visibility=True,
        )
    except (AddressInUse, TeamAddressInConversations) as exc:
        return {"available": False, "conflict": exc.extra.get("conflict"), "detail": exc.detail}
    return {"available": True, "conflict": None, "detail": f"{address} can be connected."}


def mailbox_connect(
    *,
    actor: User,
    address: str,
    kind: str,
    provider: str = Provider.IMAP,
    imap: ServerInput | None = None,
    smtp: ServerInput | None = None,
    acknowledge_team_visibility: bool = False,
    inbox: Inbox | None = None,
    ip: str | None = None,
    backfill_days: int | None = DEFAULT_BACKFILL_DAYS,
) -> Mailbox:
    """Connect an IMAP/SMTP mailbox after testing it; R1-R4 and R8 apply.
    ``backfill_days``: how much history to import (inboxes/history.py)."""
    if kind not in MailboxKind.values:
        raise Invalid("Unknown kind.", errors={"kind": ['Use "personal" or "team".']})
    check_backfill_days(backfill_days)
    if provider != Provider.IMAP:
        raise Invalid(
            f"{Provider(provider).label} mailboxes connect through their sign-in flow "
            f"at /connect/{provider}/.",
            errors={"provider": ["Use the OAuth connect flow for this provider."]},
        )
    canonical = canonical_address(address)
    if imap is None or smtp is None:
        raise Invalid(
            "IMAP and SMTP settings are required.",
            errors={
                k: ["This field is required."]
                for k, v in (("imap", imap), ("smtp", smtp))
                if v is None
            },
        )
    if inbox is not None and kind != MailboxKind.TEAM:
        raise Invalid(
            "Only a team email can feed an inbox.", errors={"inbox": ["Only for team emails."]}
        )
    _check_server_input(imap, "imap")
    _check_server_input(smtp, "smtp")
    address = address.strip()

    return mailbox_create(
        actor=actor,
        address=address,
        canonical=canonical,
        kind=kind,
        provider=Provider.IMAP,
        inbox=inbox,
        acknowledge_team_visibility=acknowledge_team_visibility,
        ip=ip,
        backfill_days=backfill_days,
        fill=lambda mailbox: _apply_servers(mailbox, imap=imap, smtp=smtp),
        before_write=lambda: raise_if_failed(
            connection_test_run(
                actor=actor, account=actor.account, imap=imap, smtp=smtp, address=address, ip=ip
            )
        ),
    )


def mailbox_create(
    *,
    actor: User,
    address: str,
    canonical: str,
    kind: str,
    provider: str,
    inbox: Inbox | None,
    acknowledge_team_visibility: bool,
    ip: str | None,
    fill: Callable[[Mailbox], None],
    before_write: Callable[[], None] | None = None,
    backfill_days: int | None = DEFAULT_BACKFILL_DAYS,
) -> Mailbox:
    """The one write path of every new mailbox, whatever its provider.

    The rules run first for a quick answer, then ``before_write`` (slow work such
    as the connection test, outside any transaction), then again inside the
    transaction under the account lock; ``fill`` puts the servers and encrypted
    secrets on the row. A race the lock did not cover ends at the unique
    constraint and answers exactly as the friendly check would.
    """
    check_backfill_days(backfill_days)

    def check_rules() -> None:
        rules.check_mailbox_connect(
            actor=actor,
            canonical=canonical,
            address=address,
            kind=kind,
            acknowledge_team_visibility=acknowledge_team_visibility,
        )
        if inbox is not None:
            rules.check_inbox_has_room(inbox=inbox)

    with audit_refusals(actor=actor, action="mailbox.connect_refused", target_repr=address, ip=ip):
        check_rules()
        if before_write is not None:
            before_write()
        try:
            with transaction.atomic():
                account_lock(actor.account_id)
                check_rules()
                mailbox = Mailbox(
                    id=uuid.uuid4(),
                    account_id=actor.account_id,
                    address=address,
                    canonical_address=canonical,
                    kind=kind,
                    owner=actor if kind == MailboxKind.PERSONAL else None,
                    connected_by=actor,
                    provider=provider,
                    status=MailboxStatus.CONNECTED,
                    backfill_days=backfill_days,
                    team_visibility_acknowledged_at=timezone.now()
                    if kind == MailboxKind.TEAM
                    else None,
                )
                fill(mailbox)
                mailbox.save(force_insert=True)
                if inbox is not None:
                    inbox.mailbox = mailbox
                    inbox.save(update_fields=["mailbox", "updated_at"])
                schedule_sync(mailbox.pk)
                audit_record(
                    account=actor.account,
                    actor=actor,
                    action="mailbox.connected",
                    target=mailbox,
                    ip=ip,
                    data={
                        "kind": kind,
                        "provider": provider,
                        "inbox": inbox.name if inbox else None,
                        "backfill_days": backfill_days,
                    },
                )
        except IntegrityError:
            check_rules()
            raise AddressInUse(
                f"{address} was connected by someone else a moment ago.",
                conflict={"address": address, "held_as": kind},
            ) from None
    return mailbox


def _apply_servers(mailbox: Mailbox, *, imap: ServerInput, smtp: ServerInput) -> None:
    mailbox.imap_host, mailbox.imap_port = imap.host.strip(), imap.port
    mailbox.imap_security, mailbox.imap_username = imap.security, imap.username
    mailbox.smtp_host, mailbox.smtp_port = smtp.host.strip(), smtp.port
    mailbox.smtp_security, mailbox.smtp_username = smtp.security, smtp.username
    mailbox.secrets_ciphertext = encrypt_secrets(
        {"imap_password": imap.password, "smtp_password": smtp.password},
        account_id=mailbox.account_id,
        mailbox_id=mailbox.pk,
    )


def mailbox_server_inputs(mailbox: Mailbox) -> tuple[ServerInput, ServerInput]:
    secrets = mailbox_secrets(mailbox)
    return (
        ServerInput(
            mailbox.imap_host,
            mailbox.imap_port or 0,
            mailbox.imap_security,
            mailbox.imap_username,
            secrets.get("imap_password", ""),
        ),
        ServerInput(
            mailbox.smtp_host,
            mailbox.smtp_port or 0,
            mailbox.smtp_security,
            mailbox.smtp_username,
            secrets.get("smtp_password", ""),
        ),
    )


# --- Manage --------------------------------------------------------------------------------


def mailbox_update(
    *,
    actor: User,
    mailbox: Mailbox,
    imap: dict[str, Any] | None = None,
    smtp: dict[str, Any] | None = None,
    ip: str | None = None,
) -> Mailbox:
    """Change server settings or passwords; the new settings are tested first.

    Fields left out keep their stored value, so a user fixes a wrong password
    by sending only ``{"imap": {"password": ...}}``.
    """
    rules.check_may_manage(actor, mailbox, "change")
    if not mailbox.is_connected:
        raise Invalid("This mailbox is disconnected; connect it again instead.")
    if mailbox.provider != Provider.IMAP:
        raise Invalid(
            "Only IMAP mailboxes have server settings; reconnect through the sign-in flow."
        )
    current_imap, current_smtp = mailbox_server_inputs(mailbox)
    new_imap = ServerInput(**{**current_imap.__dict__, **(imap or {})})
    new_smtp = ServerInput(**{**current_smtp.__dict__, **(smtp or {})})
    _check_server_input(new_imap, "imap")
    _check_server_input(new_smtp, "smtp")
    raise_if_failed(
        connection_test_run(
            actor=actor,
            account=mailbox.account,
            imap=new_imap,
            smtp=new_smtp,
            address=mailbox.address,
            ip=ip,
        )
    )
    with transaction.atomic():
        _apply_servers(mailbox, imap=new_imap, smtp=new_smtp)
        changed = sorted(
            {f"imap.{k}" for k in (imap or {}) if k != "password"}
            | {f"smtp.{k}" for k in (smtp or {}) if k != "password"}
            | ({"password"} if "password" in (imap or {}) or "password" in (smtp or {}) else set())
        )
        if mailbox.status in (MailboxStatus.ERROR, MailboxStatus.NEEDS_REAUTH):
            mailbox.status = MailboxStatus.CONNECTED
        if mailbox.sync_state == SyncState.STOPPED:
            mailbox.sync_state = SyncState.PENDING  # the cause was fixed: sync again
        mailbox.last_error = ""
        mailbox.save()
        schedule_sync(mailbox.pk)
        outbox_resume(mailbox.pk)
        transaction.on_commit(lambda: events.report_mailbox_health(mailbox.pk))
        audit_record(
            account=mailbox.account,
            actor=actor,
            action="mailbox.updated",
            target=mailbox,
            ip=ip,
            data={"changed": changed},
        )
    return mailbox


def mailbox_test(*, actor: User, mailbox: Mailbox, ip: str | None = None) -> ConnectionTestResult:
    """Re-run the connection test and record the outcome on the mailbox's status."""
    if not (actor.is_admin or mailbox.owner_id == actor.pk):
        raise PermissionDeniedError("Only the owner or an admin can test this mailbox.")
    if not mailbox.is_connected:
        raise Invalid("This mailbox is disconnected.")
    if mailbox.provider != Provider.IMAP:
        raise Invalid("The connection test is for IMAP/SMTP mailboxes.")
    imap, smtp = mailbox_server_inputs(mailbox)
    oauth_token = None
    if mailbox.auth_method == AuthMethod.XOAUTH2:
        try:
            oauth_token = stored_token_source(mailbox)()
        except ProviderError as exc:
            if exc.reauth:
                raise NeedsReauth(str(exc)) from exc
            raise
    result = connection_test_run(
        oauth_token=oauth_token,
        actor=actor,
        account=mailbox.account,
        imap=imap,
        smtp=smtp,
        address=mailbox.address,
        ip=ip,
    )
    if result.ok:
        recovered = Mailbox.objects.filter(pk=mailbox.pk, status=MailboxStatus.ERROR).update(
            status=MailboxStatus.CONNECTED,
            last_error="",
            sync_state=SyncState.PENDING,
            updated_at=timezone.now(),
        )
        if recovered:
            schedule_sync(mailbox.pk)
            events.report_mailbox_health(mailbox.pk)
    else:
        failed = next(step for step in result.steps if not step.ok)
        Mailbox.objects.filter(pk=mailbox.pk).exclude(status=MailboxStatus.DISCONNECTED).update(
            status=MailboxStatus.ERROR,
            last_error=f"{failed.step}: {failed.detail}",
            updated_at=timezone.now(),
        )
        events.report_mailbox_health(mailbox.pk)
    mailbox.refresh_from_db()
    return result


def _disconnect(mailbox: Mailbox) -> None:
    """Frees the address and forgets the secrets; the row and its history stay."""
    Inbox.objects.filter(mailbox=mailbox).update(mailbox=None, updated_at=timezone.now())
    mailbox.status = MailboxStatus.DISCONNECTED
    mailbox.disconnected_at = timezone.now()
    mailbox.secrets_ciphertext = None
    mailbox.save()


def mailbox_disconnect(*, actor: User, mailbox: Mailbox, ip: str | None = None) -> Mailbox:
    rules.check_may_manage(actor, mailbox, "disconnect")
    if mailbox.is_connected:
        push_channels_end(mailbox)  # network, so before the transaction; best effort
        with transaction.atomic():
            _disconnect(mailbox)
            audit_record(
                account=mailbox.account,
                actor=actor,
                action="mailbox.disconnected",
                target=mailbox,
                ip=ip,
                data={"kind": mailbox.kind},
            )
    return mailbox


def mailbox_release(*, actor: User, mailbox: Mailbox, ip: str | None = None) -> Mailbox:
    """R7: an admin frees a deactivated user's address in one step."""
    with audit_refusals(
        actor=actor, action="mailbox.release_refused", target_repr=mailbox.address, ip=ip
    ):
        rules.check_release(actor=actor, mailbox=mailbox)
    owner = rules.personal_owner(mailbox)
    push_channels_end(mailbox)  # network, so before the transaction; best effort
    with transaction.atomic():
        _disconnect(mailbox)
        # Every other hold the owner has on the address goes in the same step (the
        # meetings tool's, say), each audited by its tool.
        tools = holds.release_tool_holds(
            user=owner, canonical=mailbox.canonical_address, actor=actor, ip=ip
        )
        audit_record(
            account=mailbox.account,
            actor=actor,
            action="mailbox.released",
            target=mailbox,
            ip=ip,
            data={"owner": owner.email, "tools": tools},
        )
    return mailbox


def mailbox_transfer(
    *,
    actor: User,
    mailbox: Mailbox,
    to_user: User | None = None,
    inbox: Inbox | None = None,
    acknowledge_team_visibility: bool = False,
    ip: str | None = None,
) -> Mailbox:
    """R7: move a deactivated user's mailbox, with its history, to another user
    or into a conversations inbox as a team email (R1-R4 and R8 still apply)."""
    if (to_user is None) == (inbox is None):
        raise Invalid(
            "Name either a user or an inbox to transfer to.",
            errors={"user": ["Give a user or an inbox."]},
        )
    with (
        audit_refusals(
            actor=actor, action="mailbox.transfer_refused", target_repr=mailbox.address, ip=ip
        ),
        transaction.atomic(),
    ):
        account_lock(actor.account_id)
        mailbox = Mailbox.objects.select_related("owner").get(pk=mailbox.pk)
        previous_owner = mailbox.owner
        if to_user is not None:
            rules.check_transfer_to_user(actor=actor, mailbox=mailbox, to_user=to_user)
            mailbox.owner = to_user
            mailbox.save(update_fields=["owner", "updated_at"])
            moved_to = {"to_user": to_user.email}
        elif inbox is not None:  # the one other case: either a user or an inbox is named
            inbox = Inbox.objects.get(pk=inbox.pk)
            rules.check_convert_to_team(
                actor=actor,
                mailbox=mailbox,
                inbox=inbox,
                acknowledge_team_visibility=acknowledge_team_visibility,
            )
            mailbox.kind = MailboxKind.TEAM
            mailbox.owner = None
            mailbox.team_visibility_acknowledged_at = timezone.now()
            mailbox.save(
                update_fields=["kind", "owner", "team_visibility_acknowledged_at", "updated_at"]
            )
            inbox.mailbox = mailbox
            inbox.save(update_fields=["mailbox", "updated_at"])
            moved_to = {"to_inbox": inbox.name}
        if previous_owner is None:  # the rules let only a personal mailbox, with its owner, move
            raise ValueError(f"Mailbox {mailbox.pk} had no owner.")
        # The previous owner's tool holds on the address (the rules let them pass) go too.
        tools = holds.release_tool_holds(
            user=previous_owner, canonical=mailbox.canonical_address, actor=actor, ip=ip
        )
        audit_record(
            account=mailbox.account,
            actor=actor,
            action="mailbox.transferred",
            target=mailbox,
            ip=ip,
            data={"from": previous_owner.email, **moved_to, "tools": tools},
        )
    return mailbox


def mailbox_record_error(*, mailbox_id: Any, status: str, error: str) -> None:
    """Workers record why a mailbox stopped working, for the people who can fix it."""
    if status not in (MailboxStatus.ERROR, MailboxStatus.NEEDS_REAUTH):
        raise ValueError(status)
    Mailbox.objects.filter(pk=mailbox_id).exclude(status=MailboxStatus.DISCONNECTED).update(
        status=status, last_error=error[:2000], updated_at=timezone.now()
    )
    events.report_mailbox_health(mailbox_id)
