"""Outlook's winmail.dat (``application/ms-tnef``, MS-OXTNEF): unpacked into its files
and its body with tnefparse. The original part stays an attachment as well, so
whatever is not unpacked (an RTF-only body, an embedded message) can still be
downloaded and opened in Outlook.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from typing import Any

from inboxes.mime.charsets import decode_bytes

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
MAX_TNEF_FILES = 500
# MAPI property ids (MS-OXPROPS): PidTagAttachLongFilename, PidTagAttachMimeTag.
MAPI_ATTACH_LONG_FILENAME = 0x3707
MAPI_ATTACH_MIME_TAG = 0x370E


def is_tnef(content_type: str, filename: str) -> bool:
    return content_type in TNEF_TYPES or filename.strip().lower() == "winmail.dat"


@dataclass
class Unpacked:
    """What a winmail.dat holds: (filename, content type, bytes) and its bodies."""

    files: list[tuple[str, str, bytes]] = field(default_factory=list)
    text: str = ""
    html: str = ""


def _text(value: Any, charset: str | None) -> str:
    if isinstance(value, bytes):
        return decode_bytes(value.rstrip(b"\x00"), charset)
    return str(value or "").rstrip("\x00")


def _mapi(attachment: Any, name: int) -> list[Any]:
    return [a.data for a in attachment.mapi_attrs if a.name == name]


def unpack_tnef(data: bytes) -> Unpacked:
    """Raises ValueError (or whatever tnefparse raises) for data that is no TNEF."""
    # Imported when first needed: few messages carry a winmail.dat.
    from tnefparse.tnef import TNEF

    tnef = TNEF(data, do_checksum=False)
    charset = tnef.codepage if isinstance(tnef.codepage, str) else None
    unpacked = Unpacked(text=_text(tnef.body, charset), html=_text(tnef.htmlbody, charset))
    for attachment in tnef.attachments[:MAX_TNEF_FILES]:
        payload = attachment.data if isinstance(attachment.data, bytes) else b""
        long_names = _mapi(attachment, MAPI_ATTACH_LONG_FILENAME)
        name = _text(long_names[0] if long_names else attachment._name, charset)
        mime_tags = _mapi(attachment, MAPI_ATTACH_MIME_TAG)
        content_type = _text(mime_tags[0], charset).strip().lower() if mime_tags else ""
        if "/" not in content_type:
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        unpacked.files.append((name, content_type, payload))
    return unpacked
