"""The API's JSON parser (DEFAULT_PARSER_CLASSES).

Its own module: DRF reads the setting while ``rest_framework.views`` is imported,
which core/api.py itself imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, which also refuses a document nested too deeply to read.

    ``json`` raises RecursionError (not a ValueError, which DRF catches) for a
    body like ``[[[[...]]]]`` a thousand levels deep: 2 KB that was a 500.
    """

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError(
                "JSON parse error - the document is nested too deeply."
            ) from exc
