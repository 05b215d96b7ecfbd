"""The meetings connection: just enough for R4 (and R7) until the meetings tool arrives."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from accounts.models import User
from accounts.services import account_lock
from audit.services import audit_record, audit_refusals
from core.errors import AddressInUse
from inboxes import rules
from inboxes.addresses import canonical_address
from meetings.models import MeetingsConnection


def meetings_connect(*, user: User, address: str, ip: str | None = None) -> MeetingsConnection:
    """Connect (or change) the user's meetings address; R1 and R4 apply."""
    address = (address or "").strip()
    canonical = canonical_address(address)
    with audit_refusals(actor=user, action="meetings.connect_refused", target_repr=address, ip=ip):
        try:
            with transaction.atomic():
                account_lock(user.account_id)
                rules.check_meetings_connect(user=user, canonical=canonical, address=address)
                connection, _ = MeetingsConnection.objects.update_or_create(
                    user=user,
                    defaults={
                        "account_id": user.account_id,
                        "address": address,
                        "canonical_address": canonical,
                    },
                )
                audit_record(
                    account=user.account,
                    actor=user,
                    action="meetings.connected",
                    target=connection,
                    ip=ip,
                )
        except IntegrityError:
            rules.check_meetings_connect(user=user, canonical=canonical, address=address)
            raise AddressInUse(
                f"{address} was connected by someone else a moment ago.",
                conflict={"address": address, "held_as": "meetings"},
            ) from None
    return connection


def meetings_disconnect(*, user: User, ip: str | None = None) -> None:
    deleted, _ = MeetingsConnection.objects.filter(user=user).delete()
    if deleted:
        audit_record(
            account=user.account,
            actor=user,
            action="meetings.disconnected",
            target_repr=user.email,
            ip=ip,
        )


def meetings_release(*, user: User, canonical: str, actor: User, ip: str | None = None) -> bool:
    """R7: free the address a deactivated user's meetings tool books from.

    Called by the engine (through ``inboxes.holds``) when an admin releases or transfers
    that user's address, inside the same transaction; the engine has checked that the
    actor is an admin and ``user`` is deactivated.
    """
    connection = MeetingsConnection.objects.filter(user=user, canonical_address=canonical).first()
    if connection is None:
        return False
    connection.delete()
    audit_record(
        account=user.account,
        actor=actor,
        action="meetings.released",
        target_repr=connection.address,
        ip=ip,
        data={"address": connection.address, "user": user.email},
    )
    return True
