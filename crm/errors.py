"""The CRM's domain errors (DESIGN.md section 4): mapped to the API by core/api.py."""

from __future__ import annotations

from core.errors import DomainError


class ContactExists(DomainError):
    code = "contact_exists"
    status = 409


class ContactInSequence(DomainError):
    code = "contact_in_sequence"
    status = 409
