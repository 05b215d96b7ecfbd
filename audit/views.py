from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render

from accounts.auth import AuthenticatedHttpRequest
from audit.selectors import audit_events_for
from core.web import admin_required


@admin_required
def settings_audit(request: AuthenticatedHttpRequest) -> HttpResponse:
    page = Paginator(audit_events_for(request.user), 50).get_page(request.GET.get("page"))
    return render(request, "audit/settings_audit.html", {"section": "audit", "page": page})
