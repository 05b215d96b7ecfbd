"""Destructive actions ask first: one pattern for every "Delete", "Disconnect", "Release".

A destructive button is a ``<form method="get" action="<the action's url>" data-confirm>``.
Without JavaScript it opens the confirmation page; with it, ``static/js/confirm.js``
fetches the same page's form (header ``X-Confirm-Dialog``) into a modal ``<dialog>``.
Either way the action runs only on a POST that carries ``confirm=yes`` (and, where
asked, the typed name): a view starts with

    asked = ask_first(request, Confirmation(...))
    if asked is not None:
        return asked

so a GET, or a POST without the confirmation (a plain form, a replayed request), only
ever shows the question again. The question says what will be lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers

CONFIRM_FIELD = "confirm"
TYPED_FIELD = "confirm_text"
DIALOG_HEADER = "X-Confirm-Dialog"


@dataclass(frozen=True)
class Confirmation:
    """The question before a destructive action.

    ``title``: "Delete inbox Support?"; ``lost``: what goes, in a sentence or two;
    ``button``: the action's label; ``cancel_url``: where Cancel leads without JS;
    ``type_to_confirm``: text that must be typed (an inbox's name), "" for none;
    ``carry``: request fields passed through to the POST (``next``, ``address``...).
    """

    title: str
    lost: str
    button: str
    cancel_url: str
    type_to_confirm: str = ""
    carry: tuple[str, ...] = ("next",)


def is_confirmed(request: HttpRequest, confirmation: Confirmation) -> bool:
    """A POST with the confirm field and, when asked, the name typed exactly
    (surrounding spaces aside)."""
    if request.method != "POST" or request.POST.get(CONFIRM_FIELD) != "yes":
        return False
    if confirmation.type_to_confirm:
        typed = request.POST.get(TYPED_FIELD, "").strip()
        return typed == confirmation.type_to_confirm.strip()
    return True


def ask_first(request: HttpRequest, confirmation: Confirmation) -> HttpResponse | None:
    """None when ``request`` confirmed the action; otherwise the question (the whole
    page, or only its form for the dialog), saying what was wrong with a typed name."""
    if is_confirmed(request, confirmation):
        return None
    source = request.POST if request.method == "POST" else request.GET
    error = ""
    status = 200
    if request.method == "POST" and source.get(CONFIRM_FIELD) == "yes":
        # Only a wrong or missing typed name gets here with the confirm field set.
        error = (
            f"Type {confirmation.type_to_confirm} exactly as shown to confirm. Nothing was deleted."
        )
        status = 400
    context = {
        "confirmation": confirmation,
        "action_url": request.path,
        "carried": [(name, source[name]) for name in confirmation.carry if source.get(name)],
        "confirm_error": error,
        "typed": source.get(TYPED_FIELD, ""),
    }
    if request.headers.get(DIALOG_HEADER):
        response = render(request, "partials/confirm.html", context, status=status)
    else:
        response = render(request, "confirm_page.html", context, status=status)
    patch_vary_headers(response, [DIALOG_HEADER])
    response["Cache-Control"] = "no-store"
    return response
