"""The meetings tool's card on Settings > Email: connect, change or remove its address."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts.auth import AuthenticatedHttpRequest
from core.api import client_ip
from core.errors import DomainError
from core.web import report
from meetings import services
from meetings.forms import MeetingsForm


@login_required
@require_POST
def meetings_connect(request: AuthenticatedHttpRequest) -> HttpResponseRedirect:
    form = MeetingsForm(request.POST)
    if form.is_valid():
        try:
            services.meetings_connect(
                user=request.user, address=form.cleaned_data["address"], ip=client_ip(request)
            )
            messages.success(request, "Your meetings address is saved.")
        except DomainError as exc:
            report(request, exc)
    return redirect("settings-email")


@login_required
@require_POST
def meetings_disconnect(request: AuthenticatedHttpRequest) -> HttpResponseRedirect:
    services.meetings_disconnect(user=request.user, ip=client_ip(request))
    messages.success(request, "Your meetings connection is removed.")
    return redirect("settings-email")
