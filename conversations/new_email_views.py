"""New email, /inbox/new/: start a conversation from an inbox's team address.

A plain page with a form (works without JavaScript, stacks at phone width); the
service is conversations/outbound.py, which holds every rule the API holds too."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from accounts.auth import AuthenticatedHttpRequest
from conversations.forms import NewEmailForm, address_list
from conversations.outbound import conversation_start, startable_inboxes
from core.errors import DomainError, NotFoundError
from inboxes.models import Inbox


def _field_errors(form: NewEmailForm, exc: DomainError) -> None:
    """The service's errors on the fields they name, and its sentence above the form
    unless a field says it already."""
    if isinstance(exc, NotFoundError):
        form.add_error("inbox", "Pick one of the inboxes listed.")
    placed: set[str] = set()
    errors = exc.extra.get("errors") or {}
    for field, problems in errors.items():
        if field in form.fields and isinstance(problems, list):
            for problem in problems:
                form.add_error(field, problem)
                placed.add(problem)
    if exc.detail not in placed:
        form.add_error(None, exc.detail)


@login_required
def new_email(request: AuthenticatedHttpRequest) -> HttpResponse:
    inboxes = startable_inboxes(request.user)
    if request.method == "POST":
        form = NewEmailForm(request.POST)
        if form.is_valid():
            values = form.cleaned_data
            inbox = Inbox.objects.filter(
                account_id=request.user.account_id, pk=values["inbox"]
            ).first()
            try:
                conversation = conversation_start(
                    actor=request.user,
                    inbox=inbox,
                    to=address_list(values["to"]),
                    cc=address_list(values["cc"]),
                    subject=values["subject"],
                    text=values["text"],
                )
            except DomainError as exc:
                _field_errors(form, exc)
            else:
                messages.success(request, "Email queued: it is on its way.")
                # In the "Mine" list: the conversation is assigned to its sender.
                url = reverse("inbox-conversation", args=[conversation.pk])
                return redirect(f"{url}?view=mine")
    else:
        wanted = request.GET.get("inbox", "")
        chosen = next((i for i in inboxes if str(i.pk) == wanted), inboxes[0] if inboxes else None)
        initial: dict[str, Any] = {"inbox": chosen.pk} if chosen else {}
        if request.GET.get("to"):
            initial["to"] = request.GET["to"][:320]
        form = NewEmailForm(initial=initial)
    selected = str(form["inbox"].value() or "")
    context = {
        "section": "inbox",
        "form": form,
        "inboxes": [
            {
                "pk": str(inbox.pk),
                "label": f"{inbox.name} · {inbox.from_name or inbox.mailbox.address} "
                f"<{inbox.mailbox.address}>"
                if inbox.mailbox
                else inbox.name,
                "selected": str(inbox.pk) == selected,
            }
            for inbox in inboxes
        ],
    }
    return render(request, "inbox/new_email.html", context)
