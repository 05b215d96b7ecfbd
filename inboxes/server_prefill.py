"""Pre-filling the connect forms' server settings from the typed address.

Two ways in, one answer (``inboxes.autoconfig.server_settings_for``):
``server_settings`` is the JSON endpoint static/js/server_prefill.js calls when the
address field changes; without JavaScript the form's "Fill in server settings"
button posts the whole form back, and the page views call ``prefilled_form`` to
show it again, filled in, with everything else the user typed (passwords too:
they go back in the same response and are never stored).
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from inboxes.autoconfig import server_settings_for
from inboxes.provider_presets import address_domain

FILL_BUTTON = "fill_servers"  # the name of the no-JS submit button
SERVER_FIELDS = ("host", "port", "security", "username")


def wants_fill(request) -> bool:
    return FILL_BUTTON in request.POST


def prefill_note(address: str, found: dict) -> str:
    """One line under the address saying what was filled in, or what to do instead."""
    if found.get("found"):
        note = f"Filled in the server settings for {found['label']}. Check them, then enter "
        note += "your password."
        return f"{note} {found['note']}" if found.get("note") else note
    domain = address_domain(address)
    if not domain:
        return "Enter your whole email address first, such as you@example.com."
    return (
        f"No server settings are known for {domain}: enter them from your provider's help "
        "pages, or ask whoever runs your email."
    )


def prefilled_form(form_class: type[forms.Form], data) -> tuple[forms.Form, str]:
    """The form again as typed, with the servers for its address filled in, and the note.

    Unbound (``initial``), so no field shows a "required" error for what the user
    had not reached yet."""
    values: dict[str, object] = {
        name: data.get(name) for name in form_class.base_fields if name in data
    }
    if "acknowledge_team_visibility" in form_class.base_fields:
        values["acknowledge_team_visibility"] = bool(data.get("acknowledge_team_visibility"))
    address = (data.get("address") or "").strip()
    found: dict = server_settings_for(address) if address else {"found": False}
    if found.get("found"):
        for server in ("imap", "smtp"):
            for key in SERVER_FIELDS:
                values[f"{server}_{key}"] = found[server][key]
    return form_class(initial=values), prefill_note(address, found)


@login_required
@require_GET
def server_settings(request):
    """JSON for the connect forms' script: the servers for ``?address=``."""
    address = (request.GET.get("address") or "").strip()[:320]
    found = server_settings_for(address) if address else {"found": False}
    return JsonResponse({**found, "note": prefill_note(address, found)})
