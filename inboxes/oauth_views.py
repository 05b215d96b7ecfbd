"""Connect Gmail / Microsoft 365: the consent round trip.

``/connect/<provider>/`` starts it (kind, inbox, the history to import and the
R8 acknowledgement come from the settings pages), ``/connect/<provider>/callback/``
finishes it. The flow data (state, PKCE verifier, nonce, those choices) is kept in
the session under its state, so a forged, replayed or missing state answers 400,
never 500.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from core.api import client_ip
from core.errors import DomainError
from inboxes import rules
from inboxes.history import DEFAULT_BACKFILL_DAYS, backfill_from_form
from inboxes.models import MailboxKind, Provider
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.providers.base import ProviderError
from inboxes.providers.signin import oauth_client
from inboxes.selectors import inboxes_visible_to, mailboxes_visible_to

log = logging.getLogger(__name__)
SESSION_PREFIX = "oauth-flow:"
PROVIDERS = {"gmail": Provider.GMAIL, "microsoft": Provider.MICROSOFT}


def _result(request, *, title: str, error=None, detail: str = "", status: int = 400):
    return render(
        request,
        "inboxes/connect_result.html",
        {"title": title, "error": error, "detail": detail, "section": "email"},
        status=status,
    )


def _back(kind: str) -> str:
    return "settings-inboxes" if kind == MailboxKind.TEAM else "settings-email"


@login_required
def connect_start(request, provider: str):
    if provider not in PROVIDERS:
        return _result(
            request, title="Unknown provider", detail="There is no such sign-in.", status=404
        )
    client = oauth_client(PROVIDERS[provider])
    missing = client.missing_settings()
    if missing:
        return _result(
            request,
            title=f"{client.label} is not set up on this server",
            detail="An operator must register the application and set "
            + ", ".join(missing)
            + " (see the README, 'Gmail and Microsoft 365').",
            status=503,
        )
    kind = request.GET.get("kind", MailboxKind.PERSONAL)
    if kind not in MailboxKind.values:
        return _result(request, title="Cannot connect", detail="Unknown kind of email.")
    flow_data: dict = {"provider": provider, "kind": kind, "user": str(request.user.pk)}
    reconnect_id = request.GET.get("reconnect")
    login_hint = ""
    try:
        # The history to import, carried through the round trip (a reconnect keeps its own).
        flow_data["backfill_days"] = backfill_from_form(request.GET.get("backfill_days"))
        if reconnect_id:
            mailbox = get_object_or_404(mailboxes_visible_to(request.user), pk=reconnect_id)
            flow_data.update(reconnect=str(mailbox.pk), kind=mailbox.kind)
            login_hint = mailbox.address
        elif kind == MailboxKind.TEAM:
            acknowledged = request.GET.get("acknowledge_team_visibility") == "on"
            rules.check_team_connect(actor=request.user, acknowledge_team_visibility=acknowledged)
            flow_data["acknowledged"] = acknowledged
            if request.GET.get("inbox"):
                inbox = get_object_or_404(inboxes_visible_to(request.user), pk=request.GET["inbox"])
                rules.check_inbox_has_room(inbox=inbox)
                flow_data["inbox"] = str(inbox.pk)
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect(_back(kind))
    redirect_uri = request.build_absolute_uri(reverse("connect-callback", args=[provider]))
    try:
        url, flow = client.begin(redirect_uri=redirect_uri, login_hint=login_hint)
    except ProviderError as exc:
        log.warning("%s consent could not be started: %s", provider, exc)
        return _result(
            request, title=f"{client.label} cannot be reached", detail=str(exc), status=502
        )
    flow_data["flow"] = flow
    request.session[SESSION_PREFIX + flow["state"]] = flow_data
    return redirect(url)


@login_required
def connect_callback(request, provider: str):
    state = request.GET.get("state", "")
    flow_data = request.session.pop(SESSION_PREFIX + state, None) if state else None
    if (
        not flow_data
        or flow_data.get("provider") != provider
        or flow_data.get("user") != str(request.user.pk)
    ):
        return _result(
            request,
            title="This sign-in could not be checked",
            detail="The answer from the sign-in page does not match a connection you started "
            "here (it may have expired or been used already). Start again from Settings.",
        )
    kind = flow_data["kind"]
    if request.GET.get("error"):
        detail = request.GET.get("error_description") or request.GET["error"]
        return _result(request, title="The sign-in was cancelled or refused", detail=detail)
    client = oauth_client(PROVIDERS[provider])
    redirect_uri = request.build_absolute_uri(reverse("connect-callback", args=[provider]))
    try:
        grant = client.complete(
            flow=flow_data["flow"], params=request.GET.dict(), redirect_uri=redirect_uri
        )
    except ProviderError as exc:
        log.warning("%s consent could not be completed: %s", provider, exc)
        return _result(
            request, title=f"{client.label} did not let us in", detail=str(exc), status=502
        )
    inbox = None
    if flow_data.get("inbox"):
        inbox = inboxes_visible_to(request.user).filter(pk=flow_data["inbox"]).first()
    reconnect = None
    if flow_data.get("reconnect"):
        reconnect = mailboxes_visible_to(request.user).filter(pk=flow_data["reconnect"]).first()
    try:
        mailbox = oauth_mailbox_connect(
            actor=request.user,
            provider=PROVIDERS[provider],
            grant=grant,
            kind=kind,
            inbox=inbox,
            acknowledge_team_visibility=flow_data.get("acknowledged", False),
            reconnect=reconnect,
            backfill_days=flow_data.get("backfill_days", DEFAULT_BACKFILL_DAYS),
            ip=client_ip(request),
        )
    except DomainError as exc:
        return _result(
            request, title=f"{grant.address} was not connected", error=exc, status=exc.status
        )
    after = str(flow_data.get("next") or "")
    if after.startswith("/") and not after.startswith("//"):
        # A consent started elsewhere (the meetings tool's calendar) goes back there.
        messages.success(request, str(flow_data.get("done") or f"{mailbox.address} is updated."))
        return redirect(after)
    verb = "reconnected" if reconnect else "connected"
    messages.success(request, f"{mailbox.address} is {verb}; its mail is being synced.")
    return redirect(_back(kind))
