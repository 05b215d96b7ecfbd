"""The CRM's pages: writing an email to a contact, and Settings > Email preferences (R10)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from accounts.auth import AuthenticatedHttpRequest
from core.errors import DomainError, Invalid
from crm.compose import SAFE_FONTS, font_stack
from crm.email_forms import ComposeForm, PreferencesForm
from crm.email_selectors import contacts_of_account, send_mailboxes_of
from crm.models import Preferences
from crm.preferences import preferences_for, preferences_update
from crm.sending import email_queue


def contact_page_url(contact_id: UUID) -> str:
    # The contact page is the contacts screen's (its own URL name lands with it).
    return f"/contacts/{contact_id}/"


def _form_errors_from(form: Any, exc: DomainError, fields: dict[str, str]) -> None:
    """Put a service's field errors on the form's fields (``fields`` maps the service's
    names to the form's); the rest on the form as a whole."""
    errors = exc.extra.get("errors") or {}
    placed = False
    for name, problems in errors.items():
        if isinstance(problems, dict):
            for sub, sub_problems in problems.items():
                target = fields.get(f"{name}.{sub}")
                if target:
                    for problem in sub_problems:
                        form.add_error(target, problem)
                        placed = True
            continue
        target = fields.get(name)
        if target:
            for problem in problems:
                form.add_error(target, problem)
                placed = True
    if not placed:
        form.add_error(None, exc.detail)


@login_required
def email_compose(request: AuthenticatedHttpRequest, contact_id: UUID) -> HttpResponse:
    contact = get_object_or_404(contacts_of_account(request.user), pk=contact_id)
    mailboxes = list(send_mailboxes_of(request.user))
    preferences = preferences_for(request.user)
    status = 200
    if request.method == "POST" and mailboxes:
        form = ComposeForm(request.POST, mailboxes=mailboxes)
        if form.is_valid():
            values = form.cleaned_data
            try:
                email_queue(
                    sender=request.user,
                    contact=contact,
                    mailbox=form.chosen_mailbox(),
                    subject=values["subject"],
                    text=values["body"],
                    log=values["log"],
                    track_opens=values["track_opens"],
                    track_clicks=values["track_clicks"],
                )
            except DomainError as exc:
                _form_errors_from(form, exc, {"mailbox": "mailbox", "subject": "subject"})
                status = exc.status
            else:
                messages.success(request, f"Your email to {contact.email} is on its way.")
                return redirect(contact_page_url(contact.pk))
        else:
            status = 400
    else:
        preselected = next(
            (str(m.pk) for m in mailboxes if m.pk == preferences.last_mailbox_id),
            str(mailboxes[0].pk) if mailboxes else "",
        )
        form = ComposeForm(
            mailboxes=mailboxes,
            initial={
                "mailbox": preselected,
                "log": preferences.log_sent_email,
                "track_opens": preferences.track_opens,
                "track_clicks": preferences.track_clicks,
            },
        )
    return render(
        request,
        "crm/compose.html",
        {
            "section": "contacts",
            "contact": contact,
            "contact_url": contact_page_url(contact.pk),
            "form": form,
            "mailboxes": mailboxes,
            "preferences": preferences,
        },
        status=status,
    )


def font_class(family: str) -> str:
    """The preview's class for a family the page offers (crm.css), or ""."""
    return "font-" + family.lower().replace(" ", "-") if family in SAFE_FONTS else ""


def _preferences_page(
    request: AuthenticatedHttpRequest, form: PreferencesForm, preferences: Preferences, status: int
) -> HttpResponse:
    return render(
        request,
        "crm/preferences.html",
        {
            "section": "preferences",
            "form": form,
            "preferences": preferences,
            "font_class": font_class(preferences.font_family),
            "font_stacks": [(family, font_stack(family)) for family in form.families()],
        },
        status=status,
    )


@login_required
def settings_preferences(request: AuthenticatedHttpRequest) -> HttpResponse:
    preferences = preferences_for(request.user)
    if request.method != "POST":
        form = PreferencesForm(
            current_family=preferences.font_family,
            initial={
                "log_sent_email": preferences.log_sent_email,
                "track_opens": preferences.track_opens,
                "track_clicks": preferences.track_clicks,
                "never_log": "\n".join(preferences.never_log),
                "font_family": preferences.font_family,
                "font_size": preferences.font_size,
            },
        )
        return _preferences_page(request, form, preferences, 200)
    form = PreferencesForm(request.POST, current_family=preferences.font_family)
    if not form.is_valid():
        return _preferences_page(request, form, preferences, 400)
    values = form.cleaned_data
    try:
        preferences_update(
            user=request.user,
            log_sent_email=values["log_sent_email"],
            track_opens=values["track_opens"],
            track_clicks=values["track_clicks"],
            never_log=form.never_log_entries(),
            font_family=values["font_family"],
            font_size=values["font_size"],
        )
    except Invalid as exc:
        _form_errors_from(
            form,
            exc,
            {"never_log": "never_log", "font.family": "font_family", "font.size": "font_size"},
        )
        return _preferences_page(request, form, preferences, 400)
    messages.success(request, "Your email preferences are saved.")
    return redirect("settings-preferences")
