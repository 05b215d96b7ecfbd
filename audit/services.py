from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models import Model

from audit.models import AuditEvent
from core.errors import DomainError

if TYPE_CHECKING:
    from core.people import Member


def audit_record(
    *,
    account: Model,
    actor: Member | None,
    action: str,
    target: models.Model | None = None,
    target_repr: str = "",
    ip: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        # By id: audit sits below accounts and knows its models only as rows.
        account_id=account.pk,
        actor_id=actor.pk if actor is not None and actor.pk else None,
        actor_name=actor.display_name if actor is not None else "system",
        action=action,
        target_type=(target._meta.model_name or "") if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=target_repr or (str(target) if target is not None else ""),
        ip=ip,
        data=data or {},
    )


@contextmanager
def audit_refusals(
    *, actor: Member, action: str, target_repr: str, ip: str | None
) -> Iterator[None]:
    """Record a refused conflict or permission (409/403 domain errors), then re-raise.

    Use it outside the writing transaction so the line survives that rollback.
    """
    try:
        yield
    except DomainError as exc:
        if exc.status in (403, 409):
            audit_record(
                account=actor.account,
                actor=actor,
                action=action,
                target_repr=target_repr,
                ip=ip,
                data={"code": exc.code, "detail": exc.detail},
            )
        raise
