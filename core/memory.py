"""A long-running worker's memory: the size of its current work, not of its history.

glibc's malloc gives a request of 128 KiB or more its own mapping, which goes back
to the system when freed. But each time such a block is freed, glibc raises that
threshold to the freed block's size (up to 32 MiB on 64-bit), so after the first
big message every later big buffer (a 2 MB message, the email parser's lists and
strings made from it) comes from the heap instead, where freeing leaves holes that
the process keeps. Over a 50,000-message sync the worker's RSS grew from 152 to
166 MiB that way although every batch was bounded; with the thresholds fixed it
stayed at 130-136 MiB (bench/sync.py).

``malloc_tune`` fixes both thresholds for the calling process; processes forked
from it (Celery's prefork children) inherit them. Equivalent to starting the
process with MALLOC_MMAP_THRESHOLD_=262144 MALLOC_TRIM_THRESHOLD_=1048576, but it
does not depend on how the worker is started.

Buffers under that threshold (most of a parsed message: its text, its HTML, the
parser's lines) still come from the heap, and the trim threshold only gives back
free memory at the heap's top. ``malloc_release`` (glibc's malloc_trim) gives back
the free pages anywhere in the heap; the sync calls it after each batch (a few
microseconds): 5 MiB less at the peak of a 10,000-message sync.

Both are no-ops on other C libraries.
"""

from __future__ import annotations

import ctypes
import os

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Blocks at least this big get a mapping of their own, always.
MMAP_THRESHOLD = 256 * 1024
# Free memory at the top of the heap beyond this goes back to the system.
TRIM_THRESHOLD = 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError):  # not glibc (musl, macOS, Windows)
        return None
    try:
        return ctypes.CDLL(None)  # the C library the process already uses
    except OSError:
        return None


_libc: ctypes.CDLL | None = None
_looked_up = False


def _glibc_cached() -> ctypes.CDLL | None:
    global _libc, _looked_up
    if not _looked_up:
        _libc, _looked_up = _glibc(), True
    return _libc


def malloc_release() -> None:
    """Give the free pages of the heap back to the system."""
    libc = _glibc_cached()
    if libc is not None:
        libc.malloc_trim(0)


def malloc_tune() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; True when set."""
    libc = _glibc_cached()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success (ctypes types its result Any: bool() states it).
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
