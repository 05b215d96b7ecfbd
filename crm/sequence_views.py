"""The Sequences pages: the list with stats, create/edit, a sequence with its
enrolments, and the enrol endpoint the Contacts list posts its selection to.

Thin: the form is read here (crm/sequence_forms.py), every rule is in
crm/sequences.py and crm/enrollments.py. Everything works without JavaScript: steps
are added and removed with submit buttons, unenrolling asks first in a
``<details>``."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from accounts.models import User
from core.errors import DomainError, Invalid
from core.web import back_to, posted_ids, report
from crm.enrollments import (
    enrollment_for,
    enrollment_pause,
    enrollment_resume,
    enrollment_unenroll,
    enrollments_create,
    may_manage,
)
from crm.models import Contact, Enrollment, Sequence, SequenceStep
from crm.sequence_forms import SequenceForm, blank_form, form_of_sequence, read_form
from crm.sequences import (
    may_change,
    sequence_create,
    sequence_update,
    sequences_stats,
    sequences_visible_to,
)
from crm.variables import VARIABLE_NAMES
from crm.windows import timezone_choices
from inboxes.models import Mailbox
from inboxes.selectors import own_connected_mailboxes


def _user(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # login_required let only a signed-in user through
        raise PermissionDenied
    return user


def _sequence_of(user: User, pk: str) -> Sequence:
    return get_object_or_404(sequences_visible_to(user), pk=pk)


@login_required
def sequence_list(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    sequences = list(
        sequences_visible_to(user).prefetch_related("steps").order_by("-created_at")[:500]
    )
    stats = sequences_stats(s.pk for s in sequences)
    rows = [{"sequence": s, "stats": stats[s.pk], "steps": len(s.steps.all())} for s in sequences]
    return render(request, "crm/sequences.html", {"section": "sequences", "rows": rows})


def _own_mailboxes(user: User) -> list[Mailbox]:
    return list(own_connected_mailboxes(user))


def _form_page(
    request: HttpRequest,
    form: SequenceForm,
    *,
    sequence: Sequence | None,
    owner: User,
    errors: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "crm/sequence_form.html",
        {
            "section": "sequences",
            "sequence": sequence,
            "form": form,
            "errors": errors or {},
            "mailboxes": _own_mailboxes(owner),
            "timezones": timezone_choices(),
            "variable_names": VARIABLE_NAMES,
        },
        status=status,
    )


def _save_or_redisplay(
    request: HttpRequest, *, sequence: Sequence | None, owner: User
) -> HttpResponseBase:
    """Add/remove a step (and show the form again), or save."""
    form, action = read_form(request.POST, owner)
    if action != "save":
        return _form_page(request, form, sequence=sequence, owner=owner)
    user = _user(request)
    try:
        if sequence is None:
            sequence = sequence_create(owner=user, data=form.as_input())
            messages.success(request, f"Sequence {sequence.name} is created. Enrol contacts next.")
        else:
            sequence_update(actor=user, sequence=sequence, data=form.as_input())
            messages.success(request, f"Sequence {sequence.name} is saved.")
    except Invalid as exc:
        return _form_page(
            request,
            form,
            sequence=sequence,
            owner=owner,
            errors=exc.extra.get("errors", {}),
            status=400,
        )
    except DomainError as exc:
        report(request, exc)
        return _form_page(request, form, sequence=sequence, owner=owner, status=400)
    return redirect("sequence-detail", pk=sequence.pk)


@login_required
def sequence_new(request: HttpRequest) -> HttpResponseBase:
    user = _user(request)
    if request.method == "POST":
        return _save_or_redisplay(request, sequence=None, owner=user)
    return _form_page(request, blank_form(_own_mailboxes(user)), sequence=None, owner=user)


@login_required
def sequence_edit(request: HttpRequest, pk: str) -> HttpResponseBase:
    user = _user(request)
    sequence = _sequence_of(user, pk)
    if not may_change(user, sequence):
        messages.error(request, "Only the sequence's owner or an admin can change it.")
        return redirect("sequence-detail", pk=sequence.pk)
    if request.method == "POST":
        return _save_or_redisplay(request, sequence=sequence, owner=sequence.owner)
    return _form_page(request, form_of_sequence(sequence), sequence=sequence, owner=sequence.owner)


ENROLMENTS_SHOWN = 200


@login_required
def sequence_detail(request: HttpRequest, pk: str) -> HttpResponse:
    user = _user(request)
    sequence = get_object_or_404(
        sequences_visible_to(user).prefetch_related(
            Prefetch("steps", queryset=SequenceStep.objects.order_by("position"))
        ),
        pk=pk,
    )
    enrolments = list(
        Enrollment.objects.filter(sequence=sequence)
        .select_related("contact", "sequence")
        .order_by("-created_at")[:ENROLMENTS_SHOWN]
    )
    rows = [{"enrollment": e, "may_manage": may_manage(user, e)} for e in enrolments]
    return render(
        request,
        "crm/sequence_detail.html",
        {
            "section": "sequences",
            "sequence": sequence,
            "steps": list(sequence.steps.all()),
            "stats": sequences_stats([sequence.pk])[sequence.pk],
            "rows": rows,
            "may_change": may_change(user, sequence),
            "shown": ENROLMENTS_SHOWN,
        },
    )


@login_required
@require_POST
def enrollment_action(request: HttpRequest, pk: str, action: str) -> HttpResponseBase:
    user = _user(request)
    try:
        enrollment = enrollment_for(user, pk)
    except DomainError as exc:
        report(request, exc)
        return redirect("sequences")
    done = {
        "pause": (enrollment_pause, "paused"),
        "resume": (enrollment_resume, "resumed"),
        "unenroll": (enrollment_unenroll, "unenrolled"),
    }
    service, word = done[action]
    try:
        service(actor=user, enrollment=enrollment)
        messages.success(request, f"{enrollment.contact} is {word}.")
    except DomainError as exc:
        report(request, exc)
    return back_to(request, reverse("sequence-detail", args=[enrollment.sequence_id]))


@login_required
@require_POST
def sequence_enroll(request: HttpRequest) -> HttpResponseBase:
    """``contacts`` (ids) into ``sequence`` (an id); back to where the form was, with
    how many were enrolled and who was already in a sequence."""
    user = _user(request)
    fallback = reverse("sequences")
    sequence_ids, junk = posted_ids(request.POST.getlist("sequence"))
    sequence = (
        sequences_visible_to(user).filter(pk=next(iter(sequence_ids))).first()
        if len(sequence_ids) == 1 and not junk
        else None
    )
    if sequence is None:
        messages.error(request, "Pick a sequence to enrol the contacts in.")
        return back_to(request, fallback)
    contact_ids, _ = posted_ids(request.POST.getlist("contacts"))
    contacts = list(
        Contact.objects.filter(account_id=user.account_id, pk__in=contact_ids).order_by("email")
    )
    if not contacts:
        messages.error(request, "Select the contacts to enrol first.")
        return back_to(request, fallback)
    results = enrollments_create(actor=user, sequence=sequence, contacts=contacts)
    enrolled = sum(1 for r in results if r.enrollment is not None)
    refused = [str(r.contact) for r in results if r.enrollment is None]
    text = f"{enrolled} contact{'s' if enrolled != 1 else ''} enrolled in {sequence.name}."
    if refused:
        shown = ", ".join(refused[:10]) + (
            f" and {len(refused) - 10} more" if len(refused) > 10 else ""
        )
        text += f" Already in a sequence (unenrol them there first): {shown}."
        messages.warning(request, text)
    else:
        messages.success(request, text)
    return back_to(request, reverse("sequence-detail", args=[sequence.pk]))


urlpatterns = [
    path("", sequence_list, name="sequences"),
    path("new/", sequence_new, name="sequence-new"),
    path("enroll/", sequence_enroll, name="sequence-enroll"),
    path("<uuid:pk>/", sequence_detail, name="sequence-detail"),
    path("<uuid:pk>/edit/", sequence_edit, name="sequence-edit"),
    path(
        "enrollments/<uuid:pk>/pause/",
        enrollment_action,
        {"action": "pause"},
        name="enrollment-pause",
    ),
    path(
        "enrollments/<uuid:pk>/resume/",
        enrollment_action,
        {"action": "resume"},
        name="enrollment-resume",
    ),
    path(
        "enrollments/<uuid:pk>/unenroll/",
        enrollment_action,
        {"action": "unenroll"},
        name="enrollment-unenroll",
    ),
]
