"""A small TNEF (winmail.dat) writer for the tests, following MS-OXTNEF 2.1.3:
a signature, a legacy key, then attributes, each ``level (1 byte), id (4: the
attribute in the low word, its type in the high word), length (4), data,
checksum (2: the sum of the data's bytes mod 65536)``; message attributes first,
then each attachment's, starting with its attAttachRendData."""

from __future__ import annotations

import struct

TNEF_SIGNATURE = 0x223E9F78
LEVEL_MESSAGE = 0x01
LEVEL_ATTACHMENT = 0x02

# Attribute ids (MS-OXTNEF 2.1.3.2), type in the high word.
ATT_TNEF_VERSION = 0x00089006  # atpDword
ATT_OEM_CODEPAGE = 0x00069007  # atpByte
ATT_MESSAGE_CLASS = 0x00078008  # atpWord
ATT_SUBJECT = 0x00018004  # atpString
ATT_BODY = 0x0002800C  # atpText
ATT_ATTACH_REND_DATA = 0x00069002  # atpByte
ATT_ATTACH_TITLE = 0x00018010  # atpString
ATT_ATTACH_DATA = 0x0006800F  # atpByte

ATTACH_BY_VALUE = 0x0001


def attribute(level: int, attribute_id: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BII", level, attribute_id, len(data)) + data + struct.pack("<H", checksum)


def tnef_stream(
    *,
    body: str,
    attachments: list[tuple[str, bytes]],
    subject: str = "",
    codepage: int = 1252,
    key: int = 0x4242,
) -> bytes:
    """winmail.dat with a plain-text body (attBody) and ``attachments`` (filename, bytes)."""
    encoding = f"cp{codepage}"
    parts = [
        struct.pack("<IH", TNEF_SIGNATURE, key),
        attribute(LEVEL_MESSAGE, ATT_TNEF_VERSION, struct.pack("<I", 0x00010000)),
        attribute(LEVEL_MESSAGE, ATT_OEM_CODEPAGE, struct.pack("<II", codepage, 0)),
        attribute(LEVEL_MESSAGE, ATT_MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\x00"),
    ]
    if subject:
        parts.append(attribute(LEVEL_MESSAGE, ATT_SUBJECT, subject.encode(encoding) + b"\x00"))
    parts.append(attribute(LEVEL_MESSAGE, ATT_BODY, body.encode(encoding)))
    for filename, data in attachments:
        # AttachType, AttachPosition, RenderWidth, RenderHeight, DataFlags (2.1.3.3.7)
        rendering = struct.pack("<HIHHI", ATTACH_BY_VALUE, 0xFFFFFFFF, 32, 32, 0)
        parts += [
            attribute(LEVEL_ATTACHMENT, ATT_ATTACH_REND_DATA, rendering),
            attribute(LEVEL_ATTACHMENT, ATT_ATTACH_TITLE, filename.encode(encoding) + b"\x00"),
            attribute(LEVEL_ATTACHMENT, ATT_ATTACH_DATA, data),
        ]
    return b"".join(parts)
