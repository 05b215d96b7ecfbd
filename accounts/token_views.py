"""Settings > API tokens: every user makes, names and revokes their own tokens."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from accounts import tokens
from accounts.auth import AuthenticatedHttpRequest
from accounts.forms import ApiTokenForm
from core.api import client_ip
from core.errors import DomainError


def _page(
    request: AuthenticatedHttpRequest,
    *,
    form: ApiTokenForm | None = None,
    new_key: str = "",
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "accounts/tokens.html",
        {
            "section": "tokens",
            "tokens": tokens.api_tokens_of(request.user),
            "login_token": tokens.login_token_of(request.user),
            "form": form or ApiTokenForm(),
            "new_key": new_key,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def settings_tokens(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request)
    form = ApiTokenForm(request.POST)
    if form.is_valid():
        try:
            token, key = tokens.api_token_create(
                user=request.user, name=form.cleaned_data["name"], ip=client_ip(request)
            )
        except DomainError as exc:
            form.add_error("name", exc.detail)
        else:
            # Rendered, not redirected: the key is shown this once and stored nowhere.
            messages.success(request, f"Token {token.name} is made. Copy it now.")
            response = _page(request, new_key=key, status=201)
            response["Cache-Control"] = "no-store"
            return response
    return _page(request, form=form, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    token = get_object_or_404(tokens.api_tokens_of(request.user), pk=pk, revoked_at__isnull=True)
    if request.method == "POST":
        tokens.api_token_revoke(user=request.user, token=token, ip=client_ip(request))
        messages.success(request, f"Token {token.name} is revoked: the API refuses it now.")
        return redirect("settings-tokens")
    return render(
        request,
        "accounts/confirm.html",
        {
            "section": "tokens",
            "title": f"Revoke token {token.name}?",
            "body": "Anything that uses this token loses access to the API at once. "
            "This cannot be undone: you can make a new token instead.",
            "button": "Revoke token",
            "cancel": "settings-tokens",
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def login_token_revoke(request: AuthenticatedHttpRequest) -> HttpResponse:
    if tokens.login_token_of(request.user) is None:
        return redirect("settings-tokens")
    if request.method == "POST":
        tokens.login_token_revoke(user=request.user, ip=client_ip(request))
        messages.success(request, "Your login token is revoked: the API refuses it now.")
        return redirect("settings-tokens")
    return render(
        request,
        "accounts/confirm.html",
        {
            "section": "tokens",
            "title": "Revoke your login token?",
            "body": "Scripts that signed in with POST /api/v1/auth/token/ lose access "
            "until they sign in again.",
            "button": "Revoke token",
            "cancel": "settings-tokens",
        },
    )
