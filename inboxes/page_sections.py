"""Sections that tools above the engine add to Settings > Email.

The page lists a user's own connections; a tool that books from one of them (the
meetings tool) shows its own card there. It registers a section here in its
``AppConfig.ready()``: a function of the request returning the context of its card,
with the template to render under ``"template"``, or None to show nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

EmailPageSection = Callable[[HttpRequest], dict[str, Any] | None]

email_page_section_builders: list[EmailPageSection] = []


def register_email_page_section(builder: EmailPageSection) -> None:
    if builder not in email_page_section_builders:
        email_page_section_builders.append(builder)


def email_page_sections(request: HttpRequest) -> list[dict[str, Any]]:
    sections = (builder(request) for builder in email_page_section_builders)
    return [section for section in sections if section is not None]
