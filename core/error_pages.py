"""Django's own error answers (handler400/403/404/500 in config/urls.py).

Under /api/ they are JSON in the API's error shape, ``{"code", "detail"}`` (DESIGN.md
4): a URL that matches no route, a body Django refuses before DRF sees it, a bug. The
pages keep Django's HTML answers.
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from core.errors import TooLarge


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _json(code: str, detail: str, status: int) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        too_large = TooLarge()
        return JsonResponse(too_large.as_dict(), status=too_large.status)
    return JsonResponse(
        {"code": "invalid", "detail": "The request could not be read.", "errors": {}}, status=400
    )


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _is_api(request):
        return defaults.permission_denied(request, exception)
    return _json("permission_denied", "You do not have permission to do this.", 403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    return _json("not_found", "Not found.", 404)


def server_error(request: HttpRequest) -> HttpResponse:
    if not _is_api(request):
        return defaults.server_error(request)
    return _json("server_error", "Something went wrong on our side; it has been logged.", 500)
