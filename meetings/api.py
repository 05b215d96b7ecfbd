"""The meetings tool's REST API (links, bookings, public slots and bookings).

The meetings connection's endpoint lives in meetings/connection_api.py.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone as django_timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from accounts.auth import api_user
from core.api import AccountScopedMixin, CursorPagination, client_ip
from core.errors import Invalid, NotFoundError
from meetings import bookings, links
from meetings.models import Booking, SchedulingLink
from meetings.serializers import (
    AlternativesError,
    BookingCancelInput,
    BookingOutput,
    LinkInput,
    LinkOutput,
    PublicBookingInput,
    PublicBookingOutput,
    SlotsOutput,
    SlotsQuery,
    in_zone,
)
from meetings.slots import free_slots, zone

# --- Scheduling links and bookings (the caller's own) ---------------------------------


class LinkCursor(CursorPagination):
    ordering = ("-created_at", "-id")


class LinkViewSet(
    AccountScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[SchedulingLink],
):
    """The caller's scheduling links; another user's link is 404."""

    queryset = SchedulingLink.objects.none()
    serializer_class = LinkOutput
    pagination_class = LinkCursor
    filter_backends: list[Any] = []
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped_queryset(self, user: Any) -> QuerySet[SchedulingLink]:
        return SchedulingLink.objects.filter(owner=user)

    @extend_schema(request=LinkInput, responses={201: LinkOutput})
    def create(self, request: Request) -> Response:
        data = LinkInput(data=request.data)
        data.is_valid(raise_exception=True)
        link = links.link_create(owner=api_user(request), data=data.service_data())
        return Response(LinkOutput(link).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=LinkInput, responses=LinkOutput)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        link = self.get_object()
        data = LinkInput(data=request.data)
        data.is_valid(raise_exception=True)
        link = links.link_update(link=link, data=data.service_data())
        return Response(LinkOutput(link).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        links.link_delete(link=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class BookingCursor(CursorPagination):
    ordering = ("-created_at", "-id")


class BookingViewSet(AccountScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet[Booking]):
    """The caller's bookings, newest first; the owner may cancel one."""

    queryset = Booking.objects.none()
    serializer_class = BookingOutput
    pagination_class = BookingCursor
    filterset_class = None
    filter_backends: list[Any] = []

    def scoped_queryset(self, user: Any) -> QuerySet[Booking]:
        return Booking.objects.filter(owner=user).select_related("link")

    @extend_schema(request=BookingCancelInput, responses=BookingOutput)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        booking = self.get_object()
        data = BookingCancelInput(data=request.data)
        data.is_valid(raise_exception=True)
        booking = bookings.booking_cancel(
            booking=booking, by_owner=True, reason=data.validated_data["reason"]
        )
        return Response(BookingOutput(booking).data)


# --- Public, no login: free slots and booking (throttled per IP) --------------------------


class _PerIpThrottle(SimpleRateThrottle):
    """Per client IP (REMOTE_ADDR, as the other limits: a forwarded-for header is
    the client's to forge), counted in the Django cache; the rate is read from
    settings on each request so an operator (or a test) can change it."""

    setting = ""

    def get_rate(self) -> str | None:
        return str(getattr(settings, self.setting))

    def allow_request(self, request: Any, view: Any) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request) or "-"}


class SlotsThrottle(_PerIpThrottle):
    scope = "meetings_slots"
    setting = "MEETINGS_SLOTS_RATE"


class BookingsThrottle(_PerIpThrottle):
    scope = "meetings_bookings"
    setting = "MEETINGS_BOOKINGS_RATE"


def _public_link(slug: str) -> SchedulingLink:
    link = (
        SchedulingLink.objects.select_related("owner", "account")
        .filter(slug=slug, is_active=True, owner__is_active=True)
        .first()
    )
    if link is None:
        raise NotFoundError("There is no booking page at this address.")
    return link


def _duration(link: SchedulingLink, asked: int | None) -> int:
    if asked is not None:
        return asked
    offered = [int(d) for d in link.durations or []]
    return offered[0] if offered else 30


class _PublicView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]


class PublicSlotsView(_PublicView):
    throttle_classes = [SlotsThrottle]

    @extend_schema(
        parameters=[SlotsQuery],
        responses={200: SlotsOutput},
        description="Free slots of a scheduling link, in the visitor's zone.",
    )
    def get(self, request: Request, slug: str) -> Response:
        query = SlotsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        values = query.validated_data
        link = _public_link(slug)
        tz = _zone_param(values["tz"])
        start: date = values.get("start") or django_timezone.now().astimezone(tz).date()
        found = free_slots(
            link,
            start=start,
            days=values["days"],
            tz=tz,
            duration=_duration(link, values.get("duration")),
        )
        return Response(
            {
                "timezone": tz.key,
                "slots": [
                    {"start": in_zone(s.start, tz), "end": in_zone(s.end, tz)} for s in found
                ],
            }
        )


def _zone_param(name: str) -> ZoneInfo:
    try:
        return zone(name)
    except Invalid as exc:  # it names ``timezone``; the query parameter is ``tz``
        raise serializers.ValidationError(
            {"tz": ["Not a known time zone, e.g. Europe/Amsterdam."]}
        ) from exc


class PublicBookingsView(_PublicView):
    throttle_classes = [BookingsThrottle]

    @extend_schema(
        request=PublicBookingInput,
        responses={
            201: PublicBookingOutput,
            409: OpenApiResponse(AlternativesError, description="slot_unavailable"),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        data = PublicBookingInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        link = _public_link(slug)
        start: datetime = values["start"]
        booking = bookings.booking_create(
            link=link,
            start=start,
            duration=_duration(link, values.get("duration")),
            name=values["name"],
            email=values["email"],
            answers=dict(values["answers"]),
            timezone=values["timezone"],
        )
        tz = zone(booking.timezone)
        cancel_url, reschedule_url = bookings.booking_urls(booking)
        return Response(
            {
                "id": str(booking.pk),
                "start": in_zone(booking.start, tz),
                "end": in_zone(booking.end, tz),
                "cancel_url": cancel_url,
                "reschedule_url": reschedule_url,
            },
            status=status.HTTP_201_CREATED,
        )
