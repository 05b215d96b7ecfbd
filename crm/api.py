"""The contacts API (DESIGN.md 4): thin views over crm.contacts, crm.imports and
crm.selectors."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, parsers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import User
from accounts.selectors import users_visible_to
from core.api import AccountScopedMixin, CursorPagination
from core.errors import Invalid
from crm import contacts, imports
from crm.models import Contact
from crm.selectors import contact_list, contact_notes, contact_timeline, contacts_search
from crm.serializers import (
    ContactInput,
    ContactNoteInput,
    ContactNoteOutput,
    ContactOutput,
    ContactPatchInput,
    ImportInput,
    ImportOutput,
    ImportQuery,
    TimelineEventOutput,
)


class ContactCursor(CursorPagination):
    ordering = ("-created_at", "-id")


class TimelineCursor(CursorPagination):
    ordering = ("-at", "-id")


class NoteCursor(CursorPagination):
    ordering = ("-created_at", "-id")


class ContactFilter(django_filters.FilterSet):
    search = django_filters.CharFilter(method="filter_search", max_length=200)

    class Meta:
        model = Contact
        fields = ["search"]

    def filter_search(
        self, queryset: QuerySet[Contact], name: str, value: str
    ) -> QuerySet[Contact]:
        return contacts_search(queryset, value)


def _user(request: Request) -> User:
    """The signed-in user (IsAuthenticated, the default permission, let no one else in)."""
    user = request.user
    assert isinstance(user, User)
    return user


def _owner(actor: User, owner_id: UUID | None) -> User | None:
    """The account's user with this id; another account's or an unknown id is invalid."""
    if owner_id is None:
        return None
    owner = users_visible_to(actor).filter(pk=owner_id).first()
    if owner is None:
        raise Invalid(
            "The owner is not a user of this account.", errors={"owner": ["Unknown user."]}
        )
    return owner


class ContactViewSet(
    AccountScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[Contact],
):
    """The account's contacts: every user of the account reads and changes them."""

    queryset = Contact.objects.none()
    serializer_class = ContactOutput
    filterset_class = ContactFilter
    pagination_class = ContactCursor
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped_queryset(self, user: Any) -> QuerySet[Contact]:
        return contact_list(user)

    @extend_schema(request=ContactInput, responses={201: ContactOutput})
    def create(self, request: Request) -> Response:
        data = ContactInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        contact = contacts.contact_create(
            account=_user(request).account,
            email=values["email"],
            name=values["name"],
            company=values["company"],
            owner=_owner(_user(request), values["owner"]),
        )
        return Response(ContactOutput(contact).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ContactPatchInput, responses=ContactOutput)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        contact = self.get_object()
        data = ContactPatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "owner" in changes:
            changes["owner"] = _owner(_user(request), changes["owner"])
        contact = contacts.contact_update(contact=contact, **changes)
        return Response(ContactOutput(contact).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        contacts.contact_delete(contact=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request={"multipart/form-data": ImportInput},
        parameters=[ImportQuery],
        responses=ImportOutput,
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="import",
        parser_classes=[parsers.MultiPartParser, parsers.FormParser],
        filterset_class=None,
        pagination_class=None,
    )
    def import_csv(self, request: Request) -> Response:
        """CSV with a header row: email, and optionally name, company, owner (a user's
        address). ``?dry_run=true`` reports what an import would do and changes nothing."""
        query = ImportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = ImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        dry_run = query.validated_data["dry_run"]
        report = imports.contacts_import_csv(
            _user(request).account,
            upload,
            dry_run=dry_run,
            actor=_user(request),
            filename=upload.name or "",
        )
        return Response({**report, "dry_run": dry_run})

    @extend_schema(responses=TimelineEventOutput(many=True), filters=False)
    @action(detail=True, methods=["get"], filterset_class=None, pagination_class=TimelineCursor)
    def timeline(self, request: Request, pk: str | None = None) -> Response:
        """Newest first: emails both ways, opens, clicks, sequence steps, meetings, notes."""
        contact = self.get_object()
        page = self.paginate_queryset(contact_timeline(contact))
        return self.get_paginated_response(TimelineEventOutput(page, many=True).data)

    @extend_schema(methods=["GET"], responses=ContactNoteOutput(many=True), filters=False)
    @extend_schema(methods=["POST"], request=ContactNoteInput, responses={201: ContactNoteOutput})
    @action(detail=True, methods=["get", "post"], filterset_class=None, pagination_class=NoteCursor)
    def notes(self, request: Request, pk: str | None = None) -> Response:
        contact = self.get_object()
        if request.method == "POST":
            data = ContactNoteInput(data=request.data)
            data.is_valid(raise_exception=True)
            note = contacts.note_add(
                contact=contact, author=_user(request), text=data.validated_data["text"]
            )
            return Response(ContactNoteOutput(note).data, status=status.HTTP_201_CREATED)
        page = self.paginate_queryset(contact_notes(contact))
        return self.get_paginated_response(ContactNoteOutput(page, many=True).data)
