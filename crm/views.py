"""The contact pages: the list with search, a contact with its timeline and notes, new,
edit and delete. Thin: forms check the input, crm/contacts.py does the work."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.models import User
from core.confirm import Confirmation, ask_first
from core.errors import DomainError
from crm import contacts
from crm.errors import ContactExists
from crm.forms import ContactForm, NoteForm
from crm.models import Contact, TimelineEvent
from crm.presenters import email_data
from crm.selectors import (
    contact_list,
    contact_timeline,
    contacts_visible_to,
    keyset_page,
    sequences_of_account,
)

PAGE_SIZE = 50


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # login_required let only a signed-in user through
    return user


def _contact(request: HttpRequest, pk: Any) -> Contact:
    """The account's contact, else 404 (another account's too)."""
    return get_object_or_404(contacts_visible_to(_user(request)).select_related("owner"), pk=pk)


@login_required
def contact_list_page(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    search = request.GET.get("q", "").strip()[:200]
    page = keyset_page(
        contact_list(user, search=search),
        field="created_at",
        after=request.GET.get("after", ""),
        size=PAGE_SIZE,
    )
    return render(
        request,
        "crm/contacts.html",
        {
            "section": "contacts",
            "page": page,
            "search": search,
            "first_page": not request.GET.get("after"),
            "sequences": list(sequences_of_account(user)),
        },
    )


def _form_errors(form: ContactForm, exc: DomainError) -> None:
    """A service's refusal shown beside the field it concerns."""
    fields = getattr(exc, "extra", {}).get("errors") or {}
    for name in fields:
        if name in form.fields:
            form.add_error(name, exc.detail)
            return
    form.add_error(None, exc.detail)


def _existing_link(exc: DomainError) -> str | None:
    if isinstance(exc, ContactExists):
        found = exc.extra.get("contact", {}).get("id")
        return f"/contacts/{found}/" if found else None
    return None


@login_required
def contact_create_page(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    form = ContactForm(request.POST or None, user=user)
    existing = None
    if request.method == "POST" and form.is_valid():
        try:
            contact = contacts.contact_create(
                account=user.account,
                email=form.cleaned_data["email"],
                name=form.cleaned_data["name"],
                company=form.cleaned_data["company"],
                owner=form.cleaned_data["owner"],
            )
        except DomainError as exc:
            _form_errors(form, exc)
            existing = _existing_link(exc)
        else:
            messages.success(request, f"{contact} is now a contact.")
            return redirect("contact", pk=contact.pk)
    return render(
        request,
        "crm/contact_form.html",
        {"section": "contacts", "form": form, "contact": None, "existing": existing},
        status=400 if form.errors else 200,
    )


@login_required
def contact_edit_page(request: HttpRequest, pk: Any) -> HttpResponse:
    user = _user(request)
    contact = _contact(request, pk)
    initial = {
        "email": contact.email,
        "name": contact.name,
        "company": contact.company,
        "owner": contact.owner,
    }
    form = ContactForm(request.POST or None, user=user, initial=initial)
    existing = None
    if request.method == "POST" and form.is_valid():
        try:
            contacts.contact_update(contact=contact, **form.cleaned_data)
        except DomainError as exc:
            _form_errors(form, exc)
            existing = _existing_link(exc)
        else:
            messages.success(request, f"{contact} is saved.")
            return redirect("contact", pk=contact.pk)
    return render(
        request,
        "crm/contact_form.html",
        {"section": "contacts", "form": form, "contact": contact, "existing": existing},
        status=400 if form.errors else 200,
    )


@login_required
def contact_delete_page(request: HttpRequest, pk: Any) -> HttpResponse:
    """Asks first (core/confirm.py); only a confirmed POST deletes."""
    contact = _contact(request, pk)
    emails, notes = contact.emails.count(), contact.notes.count()
    asked = ask_first(
        request,
        Confirmation(
            title=f"Delete {contact}?",
            lost=(
                f"This deletes the contact {contact.email} with its timeline: {emails} logged "
                f"email{'' if emails == 1 else 's'} and {notes} note{'' if notes == 1 else 's'}."
                " It can't be undone. The emails stay in the mailboxes they were sent from."
            ),
            button=f"Delete {contact}",
            cancel_url=reverse("contact", args=[contact.pk]),
        ),
    )
    if asked is not None:
        return asked
    name = str(contact)
    contacts.contact_delete(contact=contact)
    messages.success(request, f"{name} is deleted, with its timeline and notes.")
    return redirect("contacts")


def timeline_entries(events: list[TimelineEvent]) -> list[dict[str, Any]]:
    """Each event with its email as the API shows it (subject, delivery, tracking)."""
    return [
        {"event": event, "email": email_data(event.email) if event.email else None}
        for event in events
    ]


def _contact_page(
    request: HttpRequest, contact: Contact, *, note_form: NoteForm | None = None, status: int = 200
) -> HttpResponse:
    page = keyset_page(
        contact_timeline(contact), field="at", after=request.GET.get("after", ""), size=PAGE_SIZE
    )
    return render(
        request,
        "crm/contact.html",
        {
            "section": "contacts",
            "contact": contact,
            "entries": timeline_entries(page.rows),
            "page": page,
            "first_page": not request.GET.get("after"),
            "note_form": note_form or NoteForm(),
        },
        status=status,
    )


@login_required
def contact_page(request: HttpRequest, pk: Any) -> HttpResponse:
    return _contact_page(request, _contact(request, pk))


@login_required
@require_POST
def contact_note_add(request: HttpRequest, pk: Any) -> HttpResponse:
    contact = _contact(request, pk)
    form = NoteForm(request.POST)
    if form.is_valid():
        try:
            contacts.note_add(
                contact=contact, author=_user(request), text=form.cleaned_data["text"]
            )
        except DomainError as exc:
            form.add_error("text", exc.detail)
        else:
            messages.success(request, "The note is added.")
            return redirect("contact", pk=contact.pk)
    return _contact_page(request, contact, note_form=form, status=400)
