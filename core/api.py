"""What every API view shares: the error format, pagination, tenant scoping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldDoesNotExist, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Field, Model, QuerySet
from django.http import Http404, HttpRequest
from rest_framework import exceptions, pagination, permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError, Invalid, TooLarge

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
    """Every error is ``{"code", "detail", ...}`` with a fitting status (DESIGN.md 4).

    What this leaves unhandled (None) is a bug: Django's handler500 answers it, in the
    same shape under /api/ (core/error_pages.py).
    """
    if isinstance(exc, RequestDataTooBig):
        exc = TooLarge()
    elif isinstance(exc, SuspiciousOperation):
        # Too many fields and the like: what Django itself answers with a bare 400.
        exc = Invalid("The request could not be read.")
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
    elif code == "invalid":
        # A body that is not JSON at all: nothing to pin on a field.
        body = {"code": code, "detail": str(getattr(exc, "detail", exc)), "errors": {}}
    else:
        body = {"code": code, "detail": str(getattr(exc, "detail", exc))}
    response.data = body
    response.status_code = status
    return response


_BAD_CURSOR = "This cursor is not one of ours: follow the next link of a previous page."


class CursorPagination(pagination.CursorPagination):
    """``{results: [...], next: URL or null}``; cursors can't be guessed or skipped.

    A cursor that is not one this API made is 400 ``invalid`` (DRF's own answer is a
    404 for an unreadable one, and a 500 for a readable one whose position is not a
    value of the ordering field).
    """

    ordering: str | list[str] | tuple[str, ...] = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    _model: type[Model] | None = None

    def paginate_queryset(
        self,
        queryset: QuerySet[Any, Any] | Sequence[Any],
        request: Request,
        view: APIView | None = None,
    ) -> list[Any] | None:
        self._model = queryset.model if isinstance(queryset, QuerySet) else None
        try:
            return super().paginate_queryset(queryset, request, view)
        except DjangoValidationError as exc:
            # A position the field reads but the database lookup refuses.
            raise self._bad_cursor() from exc

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise self._bad_cursor() from exc
        if cursor is not None and cursor.position is not None:
            self._check_position(str(cursor.position))
        return cursor

    def _check_position(self, position: str) -> None:
        """The position must be a value of the first ordering field, as encode_cursor wrote it."""
        name = str(self.ordering[0]).lstrip("-")
        if self._model is None or "__" in name:
            return
        try:
            field = self._model._meta.get_field(name)
        except FieldDoesNotExist:
            return
        if not isinstance(field, Field):
            return  # a reverse relation: nothing to read the position with
        try:
            value = field.to_python(position)
        except (DjangoValidationError, ValueError, TypeError, OverflowError) as exc:
            raise self._bad_cursor() from exc
        if value is None:
            raise self._bad_cursor()

    @staticmethod
    def _bad_cursor() -> Invalid:
        return Invalid(_BAD_CURSOR, errors={"cursor": ["Not a valid cursor."]})

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
