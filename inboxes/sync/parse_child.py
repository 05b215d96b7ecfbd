"""The parse helper process's program (inboxes/sync/parse_helper.py starts it).

Reads batches of raw messages from stdin and writes each message's
``ParsedMessage``, pickled, to stdout, in order, until stdin ends. Imports only
what parsing needs (no Django, no threads): the helper's memory is the
interpreter, the parser and the batch at hand.
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import IO, BinaryIO

from core.memory import malloc_release, malloc_tune
from inboxes.mime import parse_message

_LENGTH = struct.Struct("!Q")


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame, or None at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return payload


def pack_batch(raws: Sequence[bytes]) -> bytes:
    lengths = struct.pack(f"!{len(raws)}Q", *(len(raw) for raw in raws))
    return b"".join([_LENGTH.pack(len(raws)), lengths, *raws])


def unpack_batch(payload: bytes) -> Iterator[bytes]:
    """The raw messages of a packed batch, one at a time (each a copy of its slice)."""
    (count,) = _LENGTH.unpack_from(payload)
    lengths = struct.unpack_from(f"!{count}Q", payload, _LENGTH.size)
    offset = _LENGTH.size * (1 + count)
    for length in lengths:
        yield payload[offset : offset + length]
        offset += length


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Parse each batch of raw messages read from ``requests``; answer in order."""
    while (frame := read_frame(requests)) is not None:
        # One answer per message, written as soon as it is parsed: the helper
        # never holds more than the batch's raw bytes and one parsed message.
        for raw in unpack_batch(frame):
            parsed = parse_message(raw)
            del raw
            write_frame(answers, pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL))
            del parsed
        del frame
        malloc_release()  # the batch's memory goes back to the system (core/memory.py)


def main() -> None:
    malloc_tune()  # the same heap thresholds as the worker (core/memory.py)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the parent went away
        serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
