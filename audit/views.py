from typing import cast

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode

from audit.export import audit_csv_rows
from audit.models import AuditEvent
from audit.selectors import audit_events_filtered, audit_filter_choices
from core.people import Member
from core.web import admin_required

PAGE_SIZE = 50


def _filters(request: HttpRequest) -> dict[str, str]:
    return {
        "action": request.GET.get("action", "").strip()[:60],
        "actor": request.GET.get("actor", "").strip()[:64],
    }


def _events(admin: Member, filters: dict[str, str]) -> QuerySet[AuditEvent]:
    try:
        return audit_events_filtered(admin, **filters)
    except ValueError:  # an actor that is no person's id: nobody acted under it
        return AuditEvent.objects.none()


@admin_required
def settings_audit(request: HttpRequest) -> HttpResponse:
    admin = cast(Member, request.user)  # admin_required let only a signed-in admin through
    filters = _filters(request)
    page = Paginator(_events(admin, filters), PAGE_SIZE).get_page(request.GET.get("page"))
    query = urlencode({key: value for key, value in filters.items() if value})
    return render(
        request,
        "audit/settings_audit.html",
        {
            "section": "audit",
            "page": page,
            "filters": filters,
            "choices": audit_filter_choices(admin),
            "filter_query": query,
            "time_zone": timezone.get_current_timezone_name(),
        },
    )


@admin_required
def settings_audit_export(request: HttpRequest) -> StreamingHttpResponse:
    admin = cast(Member, request.user)
    events = _events(admin, _filters(request)).iterator(chunk_size=500)
    response = StreamingHttpResponse(audit_csv_rows(events), content_type="text/csv")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="audit-log-{stamp}.csv"'
    return response
