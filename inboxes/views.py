"""Settings > Email: a user's personal connections (and the sections other tools add)."""

from __future__ import annotations

from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core.api import client_ip
from core.errors import ConnectionFailed, DomainError, Invalid
from core.web import back_to, report
from inboxes import history, send_limits, server_prefill, services, sync
from inboxes.forms import AddressCheckForm, MailboxConnectForm
from inboxes.history import (
    backfill_choices,
    backfill_from_form,
    backfill_select_context,
    window_label,
)
from inboxes.models import Mailbox, MailboxKind, MailboxMessage
from inboxes.oauth_connect import allow_sign_in_forms, connect_options
from inboxes.outbox.limits import default_limits, limits_of, next_held
from inboxes.page_sections import email_page_sections
from inboxes.selectors import mailboxes_visible_to
from inboxes.sync.folders import ALL_MAIL_FROM
from inboxes.throttling import failed_connection_tests_limited


def _email_page(request, form=None, error=None, status=200, prefill_note=""):
    mailboxes = (
        mailboxes_visible_to(request.user)
        .filter(owner=request.user)
        .exclude(status="disconnected")
        .order_by("address")
    )
    page = render(
        request,
        "inboxes/settings_email.html",
        {
            "section": "email",
            "mailboxes": mailboxes,
            "form": form or MailboxConnectForm(),
            "error": error,
            "prefill_note": prefill_note,
            "sections": email_page_sections(request),
            "connect_options": connect_options(),
            **backfill_select_context(),
        },
        status=status,
    )
    return allow_sign_in_forms(page)


@login_required
def settings_email(request):
    if request.method != "POST":
        return _email_page(request)
    if server_prefill.wants_fill(request):
        filled, note = server_prefill.prefilled_form(MailboxConnectForm, request.POST)
        return _email_page(request, form=filled, prefill_note=note)
    form = MailboxConnectForm(request.POST)
    if not form.is_valid():
        return _email_page(request, form=form, status=400)
    imap, smtp = form.servers()
    try:
        with failed_connection_tests_limited(request):
            mailbox = services.mailbox_connect(
                actor=request.user,
                address=form.cleaned_data["address"],
                kind=MailboxKind.PERSONAL,
                imap=imap,
                smtp=smtp,
                ip=client_ip(request),
                backfill_days=form.cleaned_data["backfill_days"],
            )
    except DomainError as exc:
        return _email_page(request, form=form, error=exc, status=exc.status)
    messages.success(request, f"{mailbox.address} is connected.")
    return redirect("settings-email")


@login_required
@require_POST
def email_check(request):
    """htmx: is the typed address free? Shown as the user leaves the field."""
    form = AddressCheckForm(request.POST)
    if not form.is_valid():
        return render(request, "partials/availability.html", {})
    try:
        result = services.mailbox_check_availability(actor=request.user, **form.cleaned_data)
    except DomainError as exc:
        return render(request, "partials/availability.html", {"invalid": exc.detail})
    return render(request, "partials/availability.html", {"result": result})


@login_required
@require_POST
def email_test(request):
    """htmx: run the connection test on the form's settings without saving anything."""
    form = MailboxConnectForm(request.POST)
    if not form.is_valid():
        return render(request, "partials/connection_test.html", {"form_errors": form.errors})
    imap, smtp = form.servers()
    try:
        with failed_connection_tests_limited(request):
            result = services.connection_test_run(
                actor=request.user,
                account=request.user.account,
                imap=imap,
                smtp=smtp,
                address=form.cleaned_data["address"],
                ip=client_ip(request),
            )
            services.raise_if_failed(result)
    except ConnectionFailed:
        pass  # counted by the limiter; the steps below say what failed
    except DomainError as exc:
        return render(request, "partials/connection_test.html", {"error": exc.detail})
    return render(request, "partials/connection_test.html", {"result": result.as_dict()})


@login_required
@require_POST
def mailbox_test(request, pk):
    mailbox = get_object_or_404(mailboxes_visible_to(request.user), pk=pk)
    try:
        with failed_connection_tests_limited(request):
            result = services.mailbox_test(
                actor=request.user, mailbox=mailbox, ip=client_ip(request)
            )
            services.raise_if_failed(result)
        messages.success(request, f"{mailbox.address}: every step of the connection test passed.")
    except DomainError as exc:
        report(request, exc)
    return back_to(request, "settings-email")


@login_required
@require_POST
def mailbox_disconnect(request, pk):
    mailbox = get_object_or_404(mailboxes_visible_to(request.user), pk=pk)
    try:
        services.mailbox_disconnect(actor=request.user, mailbox=mailbox, ip=client_ip(request))
        messages.success(request, f"{mailbox.address} is disconnected. Its history is kept.")
    except DomainError as exc:
        report(request, exc)
    return back_to(request, "settings-email")


def _visible_mailbox(request, pk):
    return get_object_or_404(mailboxes_visible_to(request.user), pk=pk)


@login_required
def mailbox_detail(request, pk):
    """Status, progress, the sync ledger and the messages kept raw."""
    from inboxes.models import Message

    mailbox = _visible_mailbox(request, pk)
    unparsed: QuerySet[Message] | list[Message] = []
    if request.user.is_admin:
        unparsed = Message.objects.filter(
            account_id=mailbox.account_id,
            parse_error__gt="",
            pk__in=MailboxMessage.objects.filter(folder__mailbox=mailbox).values("message_id"),
        ).order_by("-created_at")[:100]
    try:
        inbox = mailbox.inbox
    except Mailbox.inbox.RelatedObjectDoesNotExist:
        inbox = None
    return render(
        request,
        "inboxes/mailbox_detail.html",
        {
            "section": "inboxes" if mailbox.kind == MailboxKind.TEAM else "email",
            "mailbox": mailbox,
            "inbox": inbox,
            "folders": mailbox.folders.all(),
            "unparsed": unparsed,
            "can_resync": request.user.is_admin,
            "window": window_label(mailbox.backfill_days),
            "window_from": _imported_since(mailbox),
            "can_import_history": history.may_import_history(request.user, mailbox),
            "history_options": backfill_choices(larger_than=mailbox.backfill_days),
            "send_limits": limits_of(mailbox),
            "default_limits": dict(
                zip(("per_day", "per_minute"), default_limits(mailbox.provider), strict=True)
            ),
            "can_set_send_limits": request.user.is_admin and mailbox.is_connected,
            "held_until": next_held(mailbox.pk) if mailbox.kind == MailboxKind.PERSONAL else None,
        },
    )


def _limit_from_form(value: str | None, label: str) -> int | None:
    """Empty: the provider's default."""
    value = (value or "").strip().replace(",", "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise Invalid(
            f"{label}: enter a whole number, or leave it empty for the default."
        ) from None


@login_required
@require_POST
def mailbox_send_limits(request, pk):
    """Admins: a personal email's send limits (empty: the provider's default)."""
    mailbox = _visible_mailbox(request, pk)
    try:
        mailbox = send_limits.mailbox_set_send_limits(
            actor=request.user,
            mailbox=mailbox,
            per_day=_limit_from_form(request.POST.get("per_day"), "Per day"),
            per_minute=_limit_from_form(request.POST.get("per_minute"), "Per minute"),
            ip=client_ip(request),
        )
        limits = limits_of(mailbox)
        if limits is not None:
            messages.success(
                request,
                f"{mailbox.address} now sends at most {limits.per_day:,} emails a day and "
                f"{limits.per_minute:,} a minute. Held emails go as soon as these allow.",
            )
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-mailbox", pk=mailbox.pk)


@login_required
@require_POST
def mailbox_import_history(request, pk):
    """Import older mail: a larger window, brought in quietly by the next sync."""
    mailbox = _visible_mailbox(request, pk)
    try:
        days = backfill_from_form(request.POST.get("backfill_days"), required=True)
        history.mailbox_import_history(
            actor=request.user, mailbox=mailbox, backfill_days=days, ip=client_ip(request)
        )
        messages.success(
            request,
            f"{mailbox.address}: importing {window_label(days).lower()}; "
            "mail already here is not imported again.",
        )
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-mailbox", pk=mailbox.pk)


def _imported_since(mailbox: Mailbox) -> datetime | None:
    """Where the mail imported so far starts (None: all of it, or nothing synced yet)."""
    start = min((f.backfill_from for f in mailbox.folders.all() if f.backfill_from), default=None)
    return None if start is None or start <= ALL_MAIL_FROM else start


@login_required
def mailbox_row(request, pk):
    """htmx: the mailbox's row again, polled every 2 s while it syncs."""
    return render(request, "partials/mailbox_row.html", {"mailbox": _visible_mailbox(request, pk)})


@login_required
@require_POST
def mailbox_resync(request, pk):
    mailbox = _visible_mailbox(request, pk)
    try:
        sync.mailbox_resync(actor=request.user, mailbox=mailbox)
        sync.schedule_sync(mailbox.pk)
        messages.success(request, f"{mailbox.address}: resync started.")
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-mailbox", pk=mailbox.pk)


@login_required
@require_POST
def mailbox_passwords(request, pk):
    """Fix a wrong or changed password: the new one is tested before it is saved."""
    mailbox = _visible_mailbox(request, pk)
    changes = {
        server: {"password": request.POST[f"{server}_password"]}
        for server in ("imap", "smtp")
        if request.POST.get(f"{server}_password")
    }
    if not changes:
        messages.error(request, "Enter the new IMAP or SMTP password.")
        return redirect("settings-mailbox", pk=mailbox.pk)
    try:
        with failed_connection_tests_limited(request):
            services.mailbox_update(
                actor=request.user, mailbox=mailbox, ip=client_ip(request), **changes
            )
        messages.success(request, f"{mailbox.address}: the new password works and is saved.")
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-mailbox", pk=mailbox.pk)
