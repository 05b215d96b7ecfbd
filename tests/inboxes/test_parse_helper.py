"""The parse helper process (inboxes/sync/parse_helper.py, inboxes/sync/parse_child.py): it
gives exactly what parsing in the process gives, runs in a process of its own,
and nothing is lost or taken twice when it dies, is left owing answers, or its
parent is killed."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inboxes.mime import parse_message
from inboxes.sync import parse_helper
from inboxes.sync.parse_child import pack_batch, unpack_batch
from tests.support.mail import make_email

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = sorted((ROOT / "tests" / "fixtures" / "mime").glob("*.eml"))


@pytest.fixture(autouse=True)
def fresh_helper():
    """Each test starts without a helper and leaves none behind."""
    parse_helper.process_helper_stop()
    yield
    parse_helper.process_helper_stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batches_of(raws: list[bytes], size: int) -> list[list[bytes]]:
    return [raws[i : i + size] for i in range(0, len(raws), size)]


def test_batches_pack_and_unpack_to_the_same_bytes():
    raws = [b"", b"x", b"\r\n.\r\n", os.urandom(100_000), b"Subject: a\r\n\r\nb"]
    assert list(unpack_batch(pack_batch(raws))) == raws
    assert list(unpack_batch(pack_batch([]))) == []


def test_the_helper_parses_the_whole_mime_corpus_as_this_process_does(caplog):
    """The unusual and malformed messages of the bad-input corpus included: the
    same ParsedMessage, field for field (bodies, attachments, errors, keys)."""
    raws = [path.read_bytes() for path in CORPUS]
    assert len(raws) >= 30

    with caplog.at_level(logging.WARNING, logger="inboxes.sync.parse_helper"):
        results = list(parse_helper.parsed_ahead(batches_of(raws, 7), lambda raw: raw))

    assert [batch for batch, _ in results] == batches_of(raws, 7)
    got = [p for _, parsed in results for p in parsed]
    assert got == [parse_message(raw) for raw in raws]
    assert not caplog.records  # no fallback: the helper answered every batch


def test_the_parsing_runs_in_the_helper_process_not_in_this_one():
    raws = [make_email(subject=f"Ticket {n}", body="Hello there. " * 2000) for n in range(300)]
    helper = parse_helper.process_helper()
    assert helper is not None and helper.pid != os.getpid()
    before = cpu_seconds(helper.pid)

    results = list(parse_helper.parsed_ahead(batches_of(raws, 50), lambda raw: raw))

    assert sum(len(parsed) for _, parsed in results) == 300
    assert cpu_seconds(helper.pid) - before > 0.05
    assert parse_helper.process_helper() is helper  # kept for the next sync


def test_of_the_first_batch_this_process_parses_the_second_half_while_the_helper_parses_the_first(
    monkeypatch,
):
    """Nothing can be stored before the first batch is parsed, so both cores parse it;
    every later batch is the helper's alone (this process is storing meanwhile)."""
    raws = [make_email(subject=f"Ticket {n}") for n in range(25)]
    parsed_here = []

    def parse_here(raw):
        parsed_here.append(raw)
        return parse_message(raw)

    monkeypatch.setattr(parse_helper, "parse_message", parse_here)

    results = list(parse_helper.parsed_ahead(batches_of(raws, 10), lambda raw: raw))

    assert parsed_here == raws[5:10]
    assert [p for _, parsed in results for p in parsed] == [parse_message(r) for r in raws]
    assert [batch for batch, _ in results] == batches_of(raws, 10)


def test_a_helper_killed_mid_stream_loses_nothing_and_the_next_call_starts_a_new_one(caplog):
    raws = [make_email(subject=f"Ticket {n}") for n in range(60)]
    first = parse_helper.process_helper()
    seen = []
    with caplog.at_level(logging.WARNING, logger="inboxes.sync.parse_helper"):
        for batch, parsed in parse_helper.parsed_ahead(batches_of(raws, 10), lambda raw: raw):
            if not seen:
                os.kill(first.pid, signal.SIGKILL)
            seen.append((batch, parsed))

    assert [raw for batch, _ in seen for raw in batch] == raws
    assert [p for _, parsed in seen for p in parsed] == [parse_message(raw) for raw in raws]
    assert any("parse helper failed" in record.getMessage() for record in caplog.records)
    second = parse_helper.process_helper()
    assert second is not None and second.pid != first.pid
    batch, parsed = next(iter(parse_helper.parsed_ahead([raws[:3]], lambda raw: raw)))
    assert parsed == [parse_message(raw) for raw in raws[:3]]


def test_when_the_fetching_fails_the_batches_fetched_before_still_come_out_first():
    raws = [make_email(subject=f"Ticket {n}") for n in range(6)]

    def fetched():
        yield raws[:3]
        yield raws[3:]
        raise ConnectionResetError("the server hung up mid-fetch")

    pipeline = parse_helper.parsed_ahead(fetched(), lambda raw: raw)
    assert [p.subject for p in next(pipeline)[1]] == ["Ticket 0", "Ticket 1", "Ticket 2"]
    assert [p.subject for p in next(pipeline)[1]] == ["Ticket 3", "Ticket 4", "Ticket 5"]
    with pytest.raises(ConnectionResetError):
        next(pipeline)


def test_answers_owed_by_an_abandoned_pipeline_never_reach_the_next_one():
    old = [make_email(subject=f"Old {n}") for n in range(20)]
    new = [make_email(subject=f"New {n}") for n in range(20)]
    pipeline = parse_helper.parsed_ahead(batches_of(old, 5), lambda raw: raw)
    next(pipeline)  # the helper has been handed the next batch too
    pipeline.close()  # the caller failed: that answer is still on its way

    results = list(parse_helper.parsed_ahead(batches_of(new, 5), lambda raw: raw))

    assert [p.subject for _, parsed in results for p in parsed] == [f"New {n}" for n in range(20)]


def test_two_syncs_in_threads_of_one_process_never_get_each_others_answers():
    """The IDLE watcher with --sync-here runs a sync per mailbox in its own thread,
    in one process with one helper."""
    import threading

    first = [make_email(subject=f"First {n}") for n in range(40)]
    second = [make_email(subject=f"Second {n}") for n in range(40)]
    first_started, second_done = threading.Event(), threading.Event()
    results: dict[str, list[str]] = {}

    def run(name, raws, started=None, wait_for=None):
        subjects = []
        for _, parsed in parse_helper.parsed_ahead(batches_of(raws, 5), lambda raw: raw):
            subjects += [p.subject for p in parsed]
            if started is not None:
                started.set()
            if wait_for is not None:
                wait_for.wait(10)  # the other sync runs while this one holds the helper
        results[name] = subjects

    one = threading.Thread(target=run, args=("first", first, first_started, second_done))
    one.start()
    assert first_started.wait(10)
    two = threading.Thread(target=run, args=("second", second))
    two.start()
    two.join(30)
    second_done.set()
    one.join(30)

    assert results["first"] == [f"First {n}" for n in range(40)]
    assert results["second"] == [f"Second {n}" for n in range(40)]


def test_without_the_helper_every_batch_is_parsed_in_this_process():
    raws = [make_email(subject=f"Ticket {n}") for n in range(5)]
    results = list(parse_helper.parsed_ahead([raws], lambda raw: raw, use_helper=False))
    assert results == [(raws, [parse_message(raw) for raw in raws])]
    assert parse_helper._helper is None


def test_an_answer_that_is_not_a_parse_result_is_refused():
    assert parse_helper._load_answer(pickle.dumps(parse_message(make_email(subject="Hi"))))
    with pytest.raises(pickle.UnpicklingError):
        parse_helper._load_answer(pickle.dumps(os.getcwd))  # would call any function
    with pytest.raises(pickle.UnpicklingError):
        parse_helper._load_answer(pickle.dumps({"subject": "not a ParsedMessage"}))


def test_the_helper_exits_when_the_process_that_started_it_is_killed():
    script = (
        "import sys, time\n"
        "from inboxes.sync import parse_helper\n"
        "helper = parse_helper.process_helper()\n"
        "print(helper.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        helper_pid = int(parent.stdout.readline())
        assert Path(f"/proc/{helper_pid}").exists()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(helper_pid):
            time.sleep(0.05)
        assert not _running(helper_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, or waits to be)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_helper_classifies_machine_mail_as_this_process_does():
    raws = [p.read_bytes() for p in sorted((ROOT / "tests" / "fixtures" / "machine").glob("*.eml"))]

    results = list(parse_helper.parsed_ahead(batches_of(raws, 5), lambda raw: raw))

    got = [p for _, parsed in results for p in parsed]
    assert got == [parse_message(raw) for raw in raws]
    assert {p.kind for p in got} == {"email", "auto_reply", "bounce"}
    assert all(p.bounce["recipients"] for p in got if p.kind == "bounce")
