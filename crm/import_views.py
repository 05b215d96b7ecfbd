"""Import contacts from CSV on a page: upload, a preview (the dry run, with each row's
error), then confirm. The uploaded file waits for the confirmation in the file storage
(as raw mail does), under a random name tied to the account, so any web process can
finish the import; the confirmation runs the same import without ``dry_run``."""

from __future__ import annotations

import io
import uuid
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.models import User
from core.errors import Invalid
from crm.forms import ImportForm
from crm.imports import MAX_IMPORT_BYTES, contacts_import_csv


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # login_required let only a signed-in user through
    return user


def _waiting_path(user: User, token: str) -> str | None:
    try:
        name = uuid.UUID(token)
    except ValueError:
        return None
    return f"crm-imports/{user.account_id}/{name}.csv"


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def _summary(report: dict[str, Any], *, done: bool) -> str:
    """'2 new contacts will be added, 1 contact will be updated; 1 row with errors ...'"""
    will = ("was", "were") if done else ("will be", "will be")

    def verb(number: int) -> str:
        return will[0] if number == 1 else will[1]

    created, updated, skipped = report["created"], report["updated"], len(report["errors"])
    text = (
        f"{_count(created, 'new contact')} {verb(created)} added, "
        f"{_count(updated, 'contact')} {verb(updated)} updated"
    )
    if skipped:
        text += f"; {_count(skipped, 'row')} with errors {verb(skipped)} skipped"
    return text + "."


@login_required
def contacts_import_page(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    form = ImportForm(request.POST or None, request.FILES or None)
    context: dict[str, object] = {
        "section": "contacts",
        "form": form,
        "limit_mb": MAX_IMPORT_BYTES // (1024 * 1024),
    }
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            report = contacts_import_csv(
                user.account, upload, dry_run=True, actor=user, filename=upload.name or ""
            )
        except Invalid as exc:
            form.add_error("file", exc.detail)
        else:
            token = str(uuid.uuid4())
            upload.seek(0)
            path = _waiting_path(user, token)
            assert path is not None
            default_storage.save(path, ContentFile(upload.read(MAX_IMPORT_BYTES + 1)))
            context.update(
                {
                    "report": report,
                    "token": token,
                    "filename": upload.name,
                    "summary": _summary(report, done=False),
                }
            )
            return render(request, "crm/import.html", context)
    return render(request, "crm/import.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def contacts_import_confirm(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    path = _waiting_path(user, request.POST.get("token", ""))
    if path is None or not default_storage.exists(path):
        messages.error(request, "This preview is no longer available: upload the file again.")
        return redirect("contacts-import")
    if request.POST.get("cancel"):
        default_storage.delete(path)
        messages.success(request, "Nothing was imported.")
        return redirect("contacts")
    with default_storage.open(path, "rb") as waiting:
        data = waiting.read()
    try:
        report = contacts_import_csv(
            user.account, io.BytesIO(data), dry_run=False, actor=user, filename="upload.csv"
        )
    except Invalid as exc:
        messages.error(request, exc.detail)
        return redirect("contacts-import")
    default_storage.delete(path)
    messages.success(request, "Import done: " + _summary(report, done=True))
    return redirect("contacts")
