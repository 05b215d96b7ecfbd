"""Settings > Users, the admin's tools on one person: invite by email, rename, change
the role, send a password reset or the invitation again. And the pages the mailed
links open: accept an invitation, reset a forgotten password."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import SetPasswordForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods, require_POST

from accounts import invites, services
from accounts.auth import AuthenticatedHttpRequest
from accounts.forms import ProductPasswordResetForm, UserEditForm, UserInviteForm
from accounts.selectors import users_visible_to
from core.api import client_ip
from core.errors import DomainError
from core.web import admin_required, report


def _form_errors(form, exc: DomainError) -> None:  # type: ignore[no-untyped-def]
    errors = exc.extra.get("errors", {})
    for field, items in errors.items():
        for error in items:
            form.add_error(field if field in form.fields else None, error)
    if not errors:
        form.add_error(None, exc.detail)


@admin_required
@require_POST
def user_invite(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = UserInviteForm(request.POST)
    if form.is_valid():
        try:
            user = invites.user_invite(
                actor=request.user,
                account=request.user.account,
                ip=client_ip(request),
                **form.cleaned_data,
            )
        except invites.MailNotSent as exc:
            # The user is added; the invitation can be sent again from their page.
            messages.error(request, f"{exc.detail} The user is added.")
            return redirect("settings-users")
        except DomainError as exc:
            _form_errors(form, exc)
        else:
            messages.success(
                request,
                f"{user.email} is invited: they get an email with a link to choose their password.",
            )
            return redirect("settings-users")
    return render(
        request,
        "accounts/user_invite.html",
        {"section": "users", "form": form},
        status=400,
    )


@admin_required
@require_http_methods(["GET", "POST"])
def user_edit(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    person = get_object_or_404(users_visible_to(request.user), pk=pk)
    status = 200
    if request.method == "POST":
        form = UserEditForm(request.POST)
        if form.is_valid():
            try:
                services.user_update(
                    actor=request.user,
                    user=person,
                    full_name=form.cleaned_data["full_name"],
                    role=form.cleaned_data["role"],
                    ip=client_ip(request),
                )
            except DomainError as exc:
                _form_errors(form, exc)
            else:
                messages.success(request, f"{person.display_name} is saved.")
                return redirect("settings-users")
        status = 400
        person.refresh_from_db()
    else:
        form = UserEditForm(initial={"full_name": person.full_name, "role": person.role})
    return render(
        request,
        "accounts/user_edit.html",
        {"section": "users", "form": form, "person": person},
        status=status,
    )


@admin_required
@require_POST
def user_password_reset(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    person = get_object_or_404(users_visible_to(request.user), pk=pk)
    try:
        invites.password_reset_send(actor=request.user, user=person, ip=client_ip(request))
        messages.success(request, f"{person.email} gets an email with a link to a new password.")
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-user-edit", pk=person.pk)


@admin_required
@require_POST
def user_invite_resend(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    person = get_object_or_404(users_visible_to(request.user), pk=pk)
    try:
        invites.invite_send(user=person, inviter=request.user)
        messages.success(request, f"The invitation is sent to {person.email} again.")
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-user-edit", pk=person.pk)


@require_http_methods(["GET", "POST"])
def invite_accept(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """The link of an invitation: choose a password, and you are logged in."""
    person = invites.invite_user_for(uidb64, token)
    if person is None:
        return render(request, "accounts/invite_invalid.html", status=400)
    form = SetPasswordForm(person, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            person = invites.invite_accept(
                user=person, token=token, password=form.cleaned_data["new_password1"]
            )
        except DomainError as exc:
            _form_errors(form, exc)
        else:
            login(request, person, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome to Postkamer, {person.display_name}.")
            return redirect("settings-email")
    return render(
        request,
        "accounts/invite_accept.html",
        {"form": form, "person": person},
        status=400 if request.method == "POST" else 200,
    )


class PasswordResetView(auth_views.PasswordResetView):
    """Forgot password? The same answer whether or not the address has a login."""

    form_class = ProductPasswordResetForm
    template_name = "accounts/password_reset.html"
    success_url = reverse_lazy("password-reset-sent")


class PasswordResetSentView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_sent.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("password-reset-complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"
