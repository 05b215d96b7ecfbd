from typing import Any

from django import template

from audit.export import change_lines

register = template.Library()


@register.filter
def audit_changes(data: Any) -> list[str]:
    """The before -> after lines of an audit event's data."""
    return change_lines(data)
