"""Files of the inbox screen: attachments (always as downloads) and the stylesheet
of an email's frame.

Requests from the sandboxed (opaque-origin) email frame carry no session cookie,
so the stylesheet and ``cid:`` images are fetched with a short-lived signed token
bound to the viewer (conversations/email_frame.py), whose visibility is checked
again on every request. Routed from conversations/inbox_views.py.
"""

from __future__ import annotations

from urllib.parse import urlencode
from uuid import UUID

from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_GET

from conversations.email_frame import FRAME_CSS, frame_viewer, rewrite_email
from conversations.selectors import attachments_visible_to, messages_visible_to

# Raster images a browser shows; everything else (SVG included) downloads as bytes.
SAFE_IMAGE_TYPES = {
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/avif",
}


@require_GET
def attachment_download(request: HttpRequest, pk: UUID) -> HttpResponseBase:
    """An attachment, always as a download; images keep their type (so an inline
    ``cid:`` image shows in the email frame), anything else is plain bytes."""
    user = frame_viewer(request, "attachment", pk)
    if user is None:
        if request.GET.get("t"):
            raise Http404("Unknown attachment.")
        return redirect(f"{reverse('login')}?{urlencode({'next': request.get_full_path()})}")
    attachment = get_object_or_404(attachments_visible_to(user), pk=pk)
    content_type = attachment.content_type.lower().split(";")[0].strip()
    if content_type not in SAFE_IMAGE_TYPES:
        content_type = "application/octet-stream"
    try:
        data = attachment.file.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404("The file of this attachment is gone.") from None
    response = FileResponse(
        data,
        as_attachment=True,
        filename=attachment.filename or "attachment",
        content_type=content_type,
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
def frame_css(request: HttpRequest, pk: UUID) -> HttpResponse:
    """The stylesheet of one email's frame: the base look and the email's own
    inline styles, which the page's CSP would refuse as attributes."""
    user = frame_viewer(request, "css", pk)
    if user is None:
        raise Http404("Unknown message.")
    message = get_object_or_404(messages_visible_to(user).only("pk", "html"), pk=pk)
    rewriter = rewrite_email(message, images={}, remote=False)
    response = HttpResponse(FRAME_CSS + rewriter.css(), content_type="text/css; charset=utf-8")
    response["Cache-Control"] = "private, max-age=3600"
    return response
