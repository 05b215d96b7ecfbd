from typing import cast

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.selectors import audit_events_for
from core.people import Member
from core.web import admin_required


@admin_required
def settings_audit(request: HttpRequest) -> HttpResponse:
    admin = cast(Member, request.user)  # admin_required let only a signed-in admin through
    page = Paginator(audit_events_for(admin), 50).get_page(request.GET.get("page"))
    return render(request, "audit/settings_audit.html", {"section": "audit", "page": page})
