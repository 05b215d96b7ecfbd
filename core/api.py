"""What every API view shares: the error format, pagination, tenant scoping."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from rest_framework import exceptions, pagination, permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError

if TYPE_CHECKING:
    from rest_framework.generics import GenericAPIView

_DRF_CODES: list[tuple[type[Exception], str, int]] = [
    (exceptions.NotAuthenticated, "not_authenticated", 401),
    (exceptions.AuthenticationFailed, "not_authenticated", 401),
    (exceptions.PermissionDenied, "permission_denied", 403),
    (exceptions.NotFound, "not_found", 404),
    (exceptions.MethodNotAllowed, "method_not_allowed", 405),
    (exceptions.NotAcceptable, "not_acceptable", 406),
    (exceptions.UnsupportedMediaType, "unsupported_media_type", 415),
    (exceptions.Throttled, "rate_limited", 429),
    (exceptions.ParseError, "invalid", 400),
    (exceptions.ValidationError, "invalid", 400),
]


def _flatten(detail: Any) -> Any:
    """DRF ErrorDetail trees -> plain lists/dicts of strings."""
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error is ``{"code", "detail", ...}`` with a fitting status (DESIGN.md 4)."""
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code, status = next(
        ((code, status) for exc_type, code, status in _DRF_CODES if isinstance(exc, exc_type)),
        ("error", response.status_code),
    )
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        if not isinstance(errors, dict):
            errors = {"non_field_errors": errors}
        body = {"code": code, "detail": "Some fields are invalid.", "errors": errors}
    elif code == "not_found":
        body = {"code": code, "detail": "Not found."}
    else:
        body = {"code": code, "detail": str(getattr(exc, "detail", exc))}
    response.data = body
    response.status_code = status
    return response


class CursorPagination(pagination.CursorPagination):
    """``{results: [...], next: URL or null}``; cursors can't be guessed or skipped."""

    ordering: str | list[str] | tuple[str, ...] = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_paginated_response(self, data: list[Any]) -> Response:
        return Response(
            {"results": data, "next": self.get_next_link(), "previous": self.get_previous_link()}
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
            },
        }


class IsAccountAdmin(permissions.BasePermission):
    message = "Only an account admin can do this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_admin)


if TYPE_CHECKING:
    # What the mixin is mixed into: it reads the view's queryset and request.
    _ScopedViewBase = GenericAPIView[Any]
else:
    _ScopedViewBase = object


class AccountScopedMixin(_ScopedViewBase):
    """Tenant scoping, written once: every object comes from ``scoped_queryset``.

    Views implement ``scoped_queryset(user)`` (a selector call); ``get_queryset``
    is never overridden elsewhere, so another account's ids always answer 404.
    """

    def scoped_queryset(self, user: Any) -> QuerySet[Any]:  # pragma: no cover
        raise NotImplementedError  # every view defines it (core does not know the User model)

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):
            # Schema generation has no user; the class-level empty queryset names the model.
            return super().get_queryset()
        return self.scoped_queryset(self.request.user)


def client_ip(request: HttpRequest | Request) -> str | None:
    return request.META.get("REMOTE_ADDR")
