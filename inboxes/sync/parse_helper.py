"""Parsing on the second core: a helper process that runs ``parse_message``.

A sync spends about half its CPU in ``parse_message`` (bench/sync.py --profile), and one
Python process uses one core. So each process that syncs (a Celery worker child,
the IDLE watcher) starts one helper with ``subprocess`` (Celery's prefork children
are daemonic and may not use ``multiprocessing``), hands it each fetched batch and
stores the batch before while the helper parses the next one.

The helper (``inboxes/sync/parse_child.py``) imports only ``inboxes.mime`` (the
standard library and nh3, no Django), reads its work from stdin and answers on stdout, in frames of an 8-byte
length and a payload: going in, the raw messages of a batch, each with its length;
coming out, each message's ``ParsedMessage`` as a pickle, which is read back by an
unpickler that builds nothing but those and their parts (both ends are this
program, but the answer is built from mail). It exits when its stdin closes, so it
never outlives the process that started it, a worker killed with SIGKILL included.

Nothing depends on the helper: when it cannot start, dies or answers garbage,
the batch is parsed in the calling process (``parse_message`` gives the same
result in both) and the next batch tries a new helper.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from inboxes.mime import ParsedMessage, parse_message
from inboxes.sync.parse_child import pack_batch, read_frame, write_frame

log = logging.getLogger(__name__)
T = TypeVar("T")

# Where ``inboxes`` lives, for the helper's import path.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
# How long to wait for an answer before the batch is parsed here instead: far more
# than any batch takes (a 1.5 MiB batch parses in well under a second).
ANSWER_TIMEOUT = 120.0


class HelperFailed(Exception):
    """The helper did not answer; the caller parses the batch itself."""


# What an answer may contain: the parse result's own classes and what they hold.
_ANSWER_CLASSES = {
    ("inboxes.mime.message", "ParsedMessage"),
    ("inboxes.mime.addresses", "Address"),
    ("inboxes.mime.parts", "ParsedAttachment"),
    ("datetime", "datetime"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
}


class _AnswerUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ANSWER_CLASSES:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a parse result")
        return super().find_class(module, name)


def _load_answer(frame: bytes) -> ParsedMessage:
    parsed = _AnswerUnpickler(io.BytesIO(frame)).load()
    if not isinstance(parsed, ParsedMessage):
        raise pickle.UnpicklingError(f"a {type(parsed).__name__}, not a parse result")
    return parsed


# --- The calling side ------------------------------------------------------------------------


class ParseHelper:
    """One helper process. ``submit`` a batch, later take its ``result``, in order.

    Two threads move the bytes, so neither side ever waits on a full pipe: one
    writes the submitted batches (``submit`` returns at once, while the helper is
    still busy with the batch before), one reads the answers as they come."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": _PROJECT_ROOT}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "inboxes.sync.parse_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=_PROJECT_ROOT,
            env=env,
        )
        # Both pipes were asked for above, so neither is None.
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin: IO[bytes] = self._process.stdin
        self._stdout: IO[bytes] = self._process.stdout
        self._answers: queue.Queue[bytes | None] = queue.Queue()
        self._requests: queue.Queue[bytes | None] = queue.Queue()
        self._pending = 0
        self._reader = threading.Thread(target=self._read, name="parse-helper-reader", daemon=True)
        self._writer = threading.Thread(target=self._write, name="parse-helper-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    def _write(self) -> None:
        stream = self._stdin
        while (payload := self._requests.get()) is not None:
            try:
                write_frame(stream, payload)
            except (OSError, ValueError):  # it died: the reader sees the end
                break
            del payload
        with contextlib.suppress(OSError, ValueError):
            stream.close()  # the helper exits when its input ends

    def _read(self) -> None:
        stream = self._stdout
        try:
            while (frame := read_frame(stream)) is not None:
                self._answers.put(frame)
        except (OSError, ValueError):
            pass
        self._answers.put(None)  # the end: every later result() fails

    @property
    def ready(self) -> bool:
        """Running, and owing no answers."""
        return self._pending == 0 and self._process.poll() is None

    @property
    def pid(self) -> int:
        return self._process.pid

    def submit(self, raws: Sequence[bytes]) -> None:
        if not self._writer.is_alive():
            raise HelperFailed(f"the helper exited (code {self._process.poll()})")
        self._requests.put(pack_batch(raws))
        self._pending += 1

    def result(self, expected: int) -> list[ParsedMessage]:
        """The answers to the oldest submitted batch, of ``expected`` messages."""
        if self._pending <= 0:
            raise HelperFailed("no batch was submitted")
        self._pending -= 1
        parsed = []
        for _ in range(expected):
            try:
                frame = self._answers.get(timeout=ANSWER_TIMEOUT)
            except queue.Empty as exc:
                raise HelperFailed("no answer in time") from exc
            if frame is None:
                self._answers.put(None)
                raise HelperFailed(f"the helper exited (code {self._process.poll()})")
            try:
                parsed.append(_load_answer(frame))
            except Exception as exc:
                raise HelperFailed(f"unreadable answer ({type(exc).__name__}: {exc})") from exc
        return parsed

    def close(self) -> None:
        """Stop the helper (it exits when its input closes) and wait for it; one
        that still owes answers is killed (it holds nothing worth waiting for)."""
        if self._pending:
            with contextlib.suppress(OSError):
                self._process.kill()
        self._requests.put(None)
        self._writer.join(timeout=5)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            self._stdout.close()


# --- One helper per process, and the pipeline ------------------------------------------------

_helper: tuple[int, ParseHelper] | None = None
# One pipeline at a time talks to the helper: its answers come in the order of the
# batches it was given, so two syncs running in threads of one process (the IDLE
# watcher with --sync-here) must not share it. The one that finds it taken parses
# in its own thread. One lock per process (a forked child gets a fresh one).
_lease: tuple[int, threading.Lock] = (os.getpid(), threading.Lock())


def _helper_lease() -> threading.Lock:
    global _lease
    if _lease[0] != os.getpid():
        _lease = (os.getpid(), threading.Lock())
    return _lease[1]


def process_helper() -> ParseHelper | None:
    """This process's helper, started on first use (and again after it died, or in
    a forked child, which must not share its parent's); None if it cannot start."""
    global _helper
    if _helper is not None and _helper[0] == os.getpid() and _helper[1].ready:
        return _helper[1]
    if _helper is not None and _helper[0] == os.getpid():
        _helper[1].close()
    try:
        _helper = (os.getpid(), ParseHelper())
    except OSError as exc:
        log.warning("parse helper did not start (%s); parsing in this process", exc)
        _helper = None
        return None
    return _helper[1]


def process_helper_stop() -> None:
    global _helper
    if _helper is not None and _helper[0] == os.getpid():
        _helper[1].close()
    _helper = None


def parsed_ahead(
    batches: Iterable[Sequence[T]], raw_of: Callable[[T], bytes], *, use_helper: bool = True
) -> Iterator[tuple[Sequence[T], list[ParsedMessage]]]:
    """Each batch with its items' ``ParsedMessage``, in order: while the caller stores
    one batch, the helper parses the next one; of the first batch, the helper parses
    the first half and this process the second. When ``batches`` fails, the batches
    it gave before are still handed out, then its error is raised.

    After a helper failure the rest of these batches are parsed here; the next
    call tries a new helper. While another thread's pipeline has the helper, these
    batches are parsed here too."""
    lease = _helper_lease()
    leased = use_helper and lease.acquire(blocking=False)
    helper = process_helper() if leased else None
    # (batch, how many of its first items the helper has, the rest parsed here)
    waiting: deque[tuple[Sequence[T], int, list[ParsedMessage]]] = deque()

    def give_up(exc: HelperFailed) -> None:
        nonlocal helper
        log.warning("parse helper failed (%s); parsing in this process", exc)
        helper = None
        process_helper_stop()

    def finish() -> tuple[Sequence[T], list[ParsedMessage]]:
        batch, handed, tail = waiting.popleft()
        if handed and helper is not None:
            try:
                return batch, helper.result(handed) + tail
            except HelperFailed as exc:
                give_up(exc)
        head = batch[: len(batch) - len(tail)]
        return batch, [parse_message(raw_of(item)) for item in head] + tail

    source = iter(batches)
    failure: Exception | None = None
    first = True
    try:
        while True:
            try:
                batch = next(source)
            except StopIteration:
                break
            except Exception as exc:  # e.g. the connection dropped mid-fetch:
                failure = exc  # the batches already fetched are still stored first
                break
            handed, tail = 0, []
            if helper is not None:
                # Nothing is stored before the first batch is parsed, and this process
                # would only wait for it: it parses the second half itself meanwhile.
                kept_here = len(batch) // 2 if first else 0
                head = batch[: len(batch) - kept_here]
                try:
                    helper.submit([raw_of(item) for item in head])
                    handed = len(head)
                except HelperFailed as exc:
                    give_up(exc)
                del head
                if handed and kept_here:
                    tail = [parse_message(raw_of(item)) for item in batch[handed:]]
            first = False
            waiting.append((batch, handed, tail))
            del batch, tail
            if len(waiting) > 1:  # the helper parses the next batch meanwhile
                yield finish()
        while waiting:
            yield finish()
        if failure is not None:
            raise failure
    finally:
        if helper is not None and any(handed for _, handed, _ in waiting):
            # Left early (the caller failed or stopped): the helper still owes
            # answers, which must not be taken for the next call's.
            process_helper_stop()
        if leased:
            lease.release()
