"""Domain errors: raised by services, mapped to the API's error format in core/api.py.

Each carries the stable ``code`` of DESIGN.md section 4, its HTTP status and any
extra fields the contract names (``conflict``, ``limit``, ``step``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings


class DomainError(Exception):
    code = "invalid"
    status = 400

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, **self.extra}


class Invalid(DomainError):
    """Bad input. ``errors`` maps field names to lists of messages, or the name of a
    nested form (``imap``, ``smtp``) to its own such map."""

    code = "invalid"
    status = 400

    def __init__(
        self,
        detail: str,
        errors: Mapping[str, list[str] | Mapping[str, list[str]]] | None = None,
        **extra: Any,
    ):
        super().__init__(detail, errors=errors or {}, **extra)


class PermissionDeniedError(DomainError):
    code = "permission_denied"
    status = 403


class NotFoundError(DomainError):
    code = "not_found"
    status = 404


class AddressInUse(DomainError):
    code = "address_in_use"
    status = 409


class TeamAddressInOtherInbox(DomainError):
    code = "team_address_in_other_inbox"
    status = 409


class TeamAddressInConversations(DomainError):
    code = "team_address_in_conversations"
    status = 409


class PlanLimitReached(DomainError):
    code = "plan_limit_reached"
    status = 409


class ConnectionFailed(DomainError):
    code = "connection_failed"
    status = 422


class NeedsReauth(DomainError):
    code = "needs_reauth"
    status = 409


class RateLimited(DomainError):
    code = "rate_limited"
    status = 429


class TooLarge(DomainError):
    code = "too_large"
    status = 413

    def __init__(self, detail: str = "", **extra: Any) -> None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        super().__init__(
            detail
            or (
                f"The request body is too large: at most {limit} bytes."
                if limit is not None
                else "The request body is too large."
            ),
            **extra,
        )
