"""The full sync of the sync benchmark: ``mailbox_sync`` of the team mailbox in a
process of its own (``bench/sync.py --child sync``), with phase timers, cProfile and
``--patch`` files, and the parent's side of it: the process started and its progress
and memory sampled.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench import harness

SCRIPT = Path(__file__).resolve().with_name("sync.py")
# How often the sync's progress and memory are sampled.
SAMPLE_SECONDS = 0.2


def wrap_generator(timer: harness.PhaseTimer, owner, name: str, label: str) -> None:
    """Time a generator method as it is iterated, item by item, in step with its
    consumer. (``PhaseTimer.wrap(consume=True)`` makes a list of it: the whole
    chunk of up to LEDGER_CHUNK messages in memory at once, fetched before any is
    stored, which is neither the product's memory nor its overlap.)"""
    original = getattr(owner, name, None)
    if original is None:
        return
    seconds, calls = timer.seconds, timer.calls
    seconds.setdefault(label, 0.0)
    calls.setdefault(label, 0)
    timer.originals.setdefault((owner, name), original)

    def timed(*a, **kw):
        calls[label] += 1
        iterator = original(*a, **kw)
        try:
            while True:
                began = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    seconds[label] += time.perf_counter() - began
                yield item
                del item
        finally:
            iterator.close()

    setattr(owner, name, timed)


def install_phase_timers(provider: str = "imap") -> harness.PhaseTimer:
    from conversations import threading as conversation_threading
    from inboxes import consumers
    from inboxes.sync import folders, ingest

    timer = harness.PhaseTimer()
    if provider == "gmail":
        from inboxes.providers.gmail.session import GmailSession

        timer.wrap(GmailSession, "__enter__", "gmail client (token, discovery build)")
        # The time inside the generator only: the waits for Google's answers and their
        # splitting, not the storing between two messages.
        wrap_generator(timer, GmailSession, "fetch", "gmail fetch (waits + split, overlaps)")
        timer.wrap(GmailSession, "changes", "gmail profile + list/history + label")
    elif provider == "microsoft":
        from inboxes.providers.graph.session import GraphSession

        timer.wrap(GraphSession, "__enter__", "graph session (token)")
        wrap_generator(timer, GraphSession, "fetch", "graph fetch ($value, 4 at a time)")
        timer.wrap(GraphSession, "changes", "graph delta round")
    else:
        from inboxes.providers.imap.session import ImapSession

        timer.wrap(ImapSession, "__enter__", "imap connect + TLS + login")
        # Runs in the prefetch thread, overlapping ingest: not part of the wall-clock sum.
        timer.wrap(ImapSession, "_fetch_batch", "imap fetch (prefetched, overlaps ingest)")
        timer.wrap(ImapSession, "changes", "imap select + search")
    timer.wrap(folders, "ingest_batch", "ingest_batch (total)")  # where the folder sync looks it up
    timer.wrap(ingest, "parse_message", "  parse_message")
    timer.wrap(ingest, "_store_files", "  raw MIME + attachment files (thread pool)")
    timer.wrap(consumers, "deliver", "  threading into conversations")
    timer.wrap(conversation_threading, "conversations_route", "    routing of new conversations")
    return timer


def _counts(mailbox_id) -> dict:
    import hashlib

    from conversations.models import Conversation, ConversationMessage
    from inboxes.models import Attachment, Mailbox, MailboxMessage, Message

    mailbox = Mailbox.objects.get(pk=mailbox_id)
    groups: dict = {}
    for conversation_id, message_id in ConversationMessage.objects.filter(
        conversation__account_id=mailbox.account_id
    ).values_list("conversation_id", "message__dedupe_key"):
        groups.setdefault(conversation_id, []).append(message_id)
    signature = hashlib.sha256(
        repr(sorted(tuple(sorted(g)) for g in groups.values())).encode()
    ).hexdigest()[:16]
    return {
        "threading_signature": signature,
        "messages": Message.objects.filter(account_id=mailbox.account_id).count(),
        "parse_errors": Message.objects.filter(account_id=mailbox.account_id)
        .exclude(parse_error="")
        .count(),
        "attachments": Attachment.objects.filter(message__account_id=mailbox.account_id).count(),
        "conversations": Conversation.objects.filter(account_id=mailbox.account_id).count(),
        "conversation_messages": ConversationMessage.objects.filter(
            conversation__account_id=mailbox.account_id
        ).count(),
        "ledger_keys": MailboxMessage.objects.filter(folder__mailbox=mailbox).count(),
        "status": mailbox.status,
        "sync_state": mailbox.sync_state,
    }


def child_sync(args) -> dict:
    harness.django_setup()
    from django.db import connection

    from inboxes.sync import mailbox_sync

    connection.ensure_connection()
    backend = harness.backend_pid()
    apply_patch(args.patch)
    timer = install_phase_timers(args.provider) if args.phases else None
    rss_start = harness.proc_status_kib("VmRSS")
    cpu_start = time.process_time()
    pg_cpu_start = harness.cpu_seconds(backend)
    profiler = profiler_start(args.profile_file)
    started = time.perf_counter()
    result = mailbox_sync(args.mailbox)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_start
    pg_cpu = harness.cpu_seconds(backend) - pg_cpu_start
    if profiler is not None:
        profiler.disable()
    peak = harness.proc_status_kib("VmHWM")
    helper = parse_helper_figures()
    profiler_report(profiler, args.profile_file)
    return {
        **helper,
        "imported": result.imported,
        "ran": result.ran,
        "reason": result.reason,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "postgres_cpu_seconds": pg_cpu,
        "rss_start_kib": rss_start,
        "peak_kib": peak,
        "phases": timer.seconds if timer else {},
        "counts": _counts(args.mailbox),
    }


def parse_helper_figures() -> dict:
    """CPU and peak memory of this process's parse helper (inboxes/sync/parse_helper.py),
    which the sync started: part of what the sync costs."""
    from inboxes.sync import parse_helper

    entry = parse_helper._helper
    if entry is None:
        return {"helper_cpu_seconds": 0.0, "helper_peak_kib": 0}
    pid = entry[1].pid
    return {
        "helper_cpu_seconds": harness.cpu_seconds(pid),
        "helper_peak_kib": harness.proc_status_kib("VmHWM", str(pid)),
    }


def apply_patch(paths: list[str] | None) -> None:
    """Run Python files in this child before the sync: a way to try a proposed
    change (e.g. a monkeypatch of a product function) without editing the tree."""
    for path in paths or []:
        code = compile(Path(path).read_text(), path, "exec")
        exec(code, {"__name__": "bench_patch", "__file__": path})


def profiler_start(path: str | None):
    """A running cProfile if ``path`` is given (its stats are to go there), else None."""
    if not path:
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def profiler_report(profiler, path: str, limit: int = 30) -> None:
    """Stop ``profiler`` (if there is one), keep its stats in ``path``, print them."""
    if profiler is None:
        return
    profiler.disable()
    profiler.dump_stats(path)
    print_profile(path, limit)


def print_profile(path: str, limit: int = 30, what: str = "mailbox_sync") -> None:
    import pstats

    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        print(f"\n--- cProfile of {what}: top {limit} by {title} ---")
        stats = pstats.Stats(path)
        stats.strip_dirs().sort_stats(key).print_stats(limit)


def run_sync_child(
    work, setup, profile: str | None, phases: bool, patch: list | None, provider: str = "imap"
) -> dict:
    """The sync in its own process, with its progress sampled from here."""
    from inboxes.models import Mailbox

    result_file = work.root / "sync.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "--child",
        "sync",
        "--mailbox",
        setup.mailbox_id,
        "--result-file",
        str(result_file),
    ]
    if profile:
        command += ["--profile-file", profile]
    if not phases:
        command += ["--no-phases"]
    for path in patch or []:
        command += ["--patch", path]
    command += ["--provider", provider]
    process = subprocess.Popen(command, cwd=harness.ROOT)
    samples = []
    started = time.perf_counter()
    while process.poll() is None:
        done = Mailbox.objects.filter(pk=setup.mailbox_id).values_list("sync_done", flat=True)[0]
        try:
            rss = harness.proc_status_kib("VmRSS", str(process.pid))
            # the sync and its parse helper together
            tree = harness.tree_memory_kib(process.pid)
        except OSError:
            rss, tree = 0, (0, 0, 0, 0)
        samples.append((time.perf_counter() - started, done or 0, rss, *tree))
        time.sleep(SAMPLE_SECONDS)
    if process.returncode != 0:
        raise RuntimeError(f"sync child failed ({process.returncode})")
    data = json.loads(result_file.read_text())
    data["samples"] = samples
    return data
