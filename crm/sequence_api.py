"""The sequences API (DESIGN.md section 4): sequences, their enrolments, and managing
an enrolment. Thin: validate, call crm/sequences.py or crm/enrollments.py, present."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.auth import api_user
from accounts.models import User
from core.api import AccountScopedMixin, CursorPagination
from core.errors import NotFoundError
from crm.enrollments import (
    enrollment_create,
    enrollment_pause,
    enrollment_resume,
    enrollment_unenroll,
    enrollments_create,
    enrollments_visible_to,
)
from crm.errors import ContactInSequence
from crm.models import Contact, Enrollment, Sequence, SequenceStep
from crm.sequences import (
    MAX_DELAY_DAYS,
    MAX_STEPS,
    STAT_NAMES,
    SequenceInput,
    StepInput,
    sequence_create,
    sequence_update,
    sequences_stats,
    sequences_visible_to,
)
from inboxes.models import Mailbox

MAX_BULK_CONTACTS = 500


# --- Shapes --------------------------------------------------------------------------------------


class WindowSerializer(serializers.Serializer):
    start = serializers.TimeField(format="%H:%M", input_formats=["%H:%M", "%H:%M:%S"])
    end = serializers.TimeField(format="%H:%M", input_formats=["%H:%M", "%H:%M:%S"])
    timezone = serializers.CharField(max_length=64)
    business_days_only = serializers.BooleanField(default=True)


class StepSerializer(serializers.Serializer):
    subject = serializers.CharField(max_length=998, allow_blank=True, default="")
    text = serializers.CharField(max_length=100_000, allow_blank=True, default="")
    html = serializers.CharField(max_length=200_000, allow_blank=True, default="")
    delay_days = serializers.IntegerField(min_value=0, max_value=MAX_DELAY_DAYS, default=0)


StatsOutput = inline_serializer(
    "SequenceStats", {name: serializers.IntegerField() for name in STAT_NAMES}
)


class SequenceOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    owner = serializers.UUIDField()
    mailbox = serializers.UUIDField()
    window = WindowSerializer()
    steps = StepSerializer(many=True)
    stop_on_auto_reply = serializers.BooleanField()
    stats = StatsOutput
    created_at = serializers.DateTimeField()


class SequenceCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    mailbox = serializers.UUIDField()
    window = WindowSerializer()
    steps = serializers.ListField(child=StepSerializer(), max_length=MAX_STEPS)
    stop_on_auto_reply = serializers.BooleanField(default=False)


class SequencePatchInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    mailbox = serializers.UUIDField(required=False)
    window = WindowSerializer(required=False)
    steps = serializers.ListField(child=StepSerializer(), required=False, max_length=MAX_STEPS)
    stop_on_auto_reply = serializers.BooleanField(required=False)


class EnrollmentOutput(serializers.Serializer):
    id = serializers.UUIDField()
    sequence = serializers.UUIDField()
    contact = serializers.UUIDField()
    state = serializers.CharField()
    stop_reason = serializers.CharField(allow_null=True)
    steps_sent = serializers.IntegerField()
    next_step_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class EnrollInput(serializers.Serializer):
    """``{contact}`` for one; ``{contacts: [ids]}`` for many, answered per contact."""

    contact = serializers.UUIDField(required=False)
    contacts = serializers.ListField(
        child=serializers.UUIDField(), required=False, max_length=MAX_BULK_CONTACTS
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("contact" in attrs) == ("contacts" in attrs):
            raise serializers.ValidationError("Give either contact or contacts.")
        if "contacts" in attrs and not attrs["contacts"]:
            raise serializers.ValidationError({"contacts": ["Give at least one contact."]})
        return attrs


BulkEnrollOutput = inline_serializer(
    "BulkEnrollOutput",
    {
        "enrolled": serializers.IntegerField(),
        "refused": serializers.IntegerField(),
        "results": inline_serializer(
            "BulkEnrollResult",
            {
                "contact": serializers.UUIDField(),
                "enrollment": EnrollmentOutput(allow_null=True),
                "error": inline_serializer(
                    "BulkEnrollError",
                    {"code": serializers.CharField(), "detail": serializers.CharField()},
                    allow_null=True,
                ),
            },
            many=True,
        ),
    },
)


def sequence_data(
    sequence: Sequence, steps: list[SequenceStep], stats: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": str(sequence.pk),
        "name": sequence.name,
        "owner": str(sequence.owner_id),
        "mailbox": str(sequence.mailbox_id),
        "window": {
            "start": sequence.window_start.strftime("%H:%M"),
            "end": sequence.window_end.strftime("%H:%M"),
            "timezone": sequence.timezone,
            "business_days_only": sequence.business_days_only,
        },
        "steps": [
            {
                "subject": step.subject,
                "text": step.text,
                "html": step.html,
                "delay_days": step.delay_days,
            }
            for step in steps
        ],
        "stop_on_auto_reply": sequence.stop_on_auto_reply,
        "stats": stats,
        "created_at": sequence.created_at,
    }


def sequences_data(sequences: list[Sequence]) -> list[dict[str, Any]]:
    """Sequences with their steps prefetched (``with_steps``): stats in two queries."""
    stats = sequences_stats(sequence.pk for sequence in sequences)
    return [
        sequence_data(sequence, list(sequence.steps.all()), stats[sequence.pk])
        for sequence in sequences
    ]


def with_steps(queryset: QuerySet[Sequence]) -> QuerySet[Sequence]:
    return queryset.prefetch_related(
        Prefetch("steps", queryset=SequenceStep.objects.order_by("position"))
    )


def enrollment_data(enrollment: Enrollment) -> dict[str, Any]:
    return {
        "id": str(enrollment.pk),
        "sequence": str(enrollment.sequence_id),
        "contact": str(enrollment.contact_id),
        "state": enrollment.state,
        "stop_reason": enrollment.stop_reason or None,
        "steps_sent": enrollment.steps_sent,
        "next_step_at": enrollment.next_step_at,
        "created_at": enrollment.created_at,
    }


def _input_of(values: dict[str, Any], user: User) -> SequenceInput:
    data = SequenceInput()
    if "name" in values:
        data.name = values["name"]
    if "mailbox" in values:
        found = Mailbox.objects.filter(account_id=user.account_id, pk=values["mailbox"]).first()
        if found is None:
            data.errors["mailbox"] = ["Pick one of the owner's connected personal mailboxes."]
        data.mailbox = found
    if "window" in values:
        window = values["window"]
        data.window_start = window["start"]
        data.window_end = window["end"]
        data.timezone = window["timezone"]
        data.business_days_only = window["business_days_only"]
    if "steps" in values:
        data.steps = [StepInput(**step) for step in values["steps"]]
    if "stop_on_auto_reply" in values:
        data.stop_on_auto_reply = values["stop_on_auto_reply"]
    return data


# --- Views ---------------------------------------------------------------------------------------


class SequencePagination(CursorPagination):
    ordering = ("-created_at", "-id")


class SequenceViewSet(AccountScopedMixin, viewsets.GenericViewSet):
    """Sequences: the whole account sees them; the owner or an admin changes one."""

    queryset = Sequence.objects.none()
    serializer_class = SequenceOutput
    pagination_class = SequencePagination
    http_method_names = ["get", "post", "patch", "head", "options"]

    def scoped_queryset(self, user: Any) -> QuerySet[Sequence]:
        return sequences_visible_to(user)

    @extend_schema(responses=SequenceOutput(many=True))
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(with_steps(self.get_queryset()))
        return self.get_paginated_response(sequences_data(list(page or [])))

    @extend_schema(responses=SequenceOutput)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        sequence = get_object_or_404(with_steps(self.get_queryset()), pk=pk)
        return Response(sequences_data([sequence])[0])

    @extend_schema(request=SequenceCreateInput, responses={201: SequenceOutput})
    def create(self, request: Request) -> Response:
        values = SequenceCreateInput(data=request.data)
        values.is_valid(raise_exception=True)
        sequence = sequence_create(
            owner=api_user(request), data=_input_of(dict(values.validated_data), api_user(request))
        )
        fresh = with_steps(self.get_queryset()).get(pk=sequence.pk)
        return Response(sequences_data([fresh])[0], status=status.HTTP_201_CREATED)

    @extend_schema(request=SequencePatchInput, responses=SequenceOutput)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        sequence = self.get_object()
        values = SequencePatchInput(data=request.data)
        values.is_valid(raise_exception=True)
        sequence_update(
            actor=api_user(request),
            sequence=sequence,
            data=_input_of(dict(values.validated_data), api_user(request)),
        )
        fresh = with_steps(self.get_queryset()).get(pk=sequence.pk)
        return Response(sequences_data([fresh])[0])

    @extend_schema(methods=["GET"], responses=EnrollmentOutput(many=True))
    @extend_schema(
        methods=["POST"],
        request=EnrollInput,
        responses={201: EnrollmentOutput, 200: BulkEnrollOutput},
    )
    @action(detail=True, methods=["get", "post"], pagination_class=CursorPagination)
    def enrollments(self, request: Request, pk: str | None = None) -> Response:
        sequence = self.get_object()
        if request.method == "GET":
            enrolments = Enrollment.objects.filter(sequence=sequence).order_by("-created_at")
            page = self.paginate_queryset(enrolments)
            return self.get_paginated_response([enrollment_data(e) for e in page or []])
        values = EnrollInput(data=request.data)
        values.is_valid(raise_exception=True)
        if "contact" in values.validated_data:
            contact = _contacts_of(api_user(request), [values.validated_data["contact"]]).get(
                values.validated_data["contact"]
            )
            if contact is None:
                raise NotFoundError("No such contact.")
            enrollment = enrollment_create(
                actor=api_user(request), sequence=sequence, contact=contact
            )
            return Response(enrollment_data(enrollment), status=status.HTTP_201_CREATED)
        return Response(_enrol_many(api_user(request), sequence, values.validated_data["contacts"]))


def _contacts_of(user: User, ids: list[UUID]) -> dict[UUID, Contact]:
    return {c.pk: c for c in Contact.objects.filter(account_id=user.account_id, pk__in=ids)}


def _enrol_many(user: User, sequence: Sequence, ids: list[UUID]) -> dict[str, Any]:
    ids = list(dict.fromkeys(ids))
    found = _contacts_of(user, ids)
    outcome = {
        r.contact.pk: r
        for r in enrollments_create(
            actor=user, sequence=sequence, contacts=[found[pk] for pk in ids if pk in found]
        )
    }
    results: list[dict[str, Any]] = []
    for pk in ids:
        result = outcome.get(pk)
        if result is None:
            error = {"code": "not_found", "detail": "No such contact."}
            results.append({"contact": str(pk), "enrollment": None, "error": error})
        elif result.enrollment is None:
            error = {
                "code": ContactInSequence.code,
                "detail": "Already in a sequence: unenrol them there first.",
            }
            results.append({"contact": str(pk), "enrollment": None, "error": error})
        else:
            results.append(
                {
                    "contact": str(pk),
                    "enrollment": enrollment_data(result.enrollment),
                    "error": None,
                }
            )
    enrolled = sum(1 for r in results if r["enrollment"] is not None)
    return {"enrolled": enrolled, "refused": len(results) - enrolled, "results": results}


class EnrollmentViewSet(AccountScopedMixin, viewsets.GenericViewSet):
    """One enrolment: read it (the account), pause, resume or unenrol it (the
    sequence's owner, an admin, or whoever enrolled the contact)."""

    queryset = Enrollment.objects.none()
    serializer_class = EnrollmentOutput
    http_method_names = ["get", "post", "head", "options"]

    def scoped_queryset(self, user: Any) -> QuerySet[Enrollment]:
        return enrollments_visible_to(user)

    @extend_schema(responses=EnrollmentOutput)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(enrollment_data(self.get_object()))

    @extend_schema(request=None, responses=EnrollmentOutput)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        enrollment = enrollment_pause(actor=api_user(request), enrollment=self.get_object())
        return Response(enrollment_data(enrollment))

    @extend_schema(request=None, responses=EnrollmentOutput)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        enrollment = enrollment_resume(actor=api_user(request), enrollment=self.get_object())
        return Response(enrollment_data(enrollment))

    @extend_schema(request=None, responses=EnrollmentOutput)
    @action(detail=True, methods=["post"])
    def unenroll(self, request: Request, pk: str | None = None) -> Response:
        enrollment = enrollment_unenroll(actor=api_user(request), enrollment=self.get_object())
        return Response(enrollment_data(enrollment))
