"""The worker's malloc settings (core/memory.py): memory freed after a big message
goes back to the system instead of staying with the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

# A sync in miniature: one big message comes and goes (glibc then serves 300 KiB
# buffers from the heap unless the thresholds are fixed), then 300 buffers of
# ~300 KiB, each followed by a small object that outlives it, then the buffers go.
SCENARIO = """
import json, sys
from core.memory import malloc_release, malloc_tune

def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

if sys.argv[1] == "celery":
    import config.celery
tuned = malloc_tune() if sys.argv[1] in ("tune", "release") else False
base = rss_mib()
big = b"x" * (4 * 1024 * 1024)
del big
buffers, survivors = [], []
for i in range(300):
    buffers.append(b"y" * (300 * 1024 + i))
    survivors.append(b"z" * (1000 + i))
if sys.argv[1] == "release":
    # Buffers under the mmap threshold come from the heap even when tuned.
    buffers, survivors = [], []
    for i in range(1000):
        buffers.append(b"y" * (100 * 1024 + i))
        survivors.append(b"z" * (1000 + i))
peak = rss_mib()
del buffers
kept = rss_mib()
if sys.argv[1] == "release":
    malloc_release()
print(json.dumps({"tuned": tuned, "base": base, "peak": peak, "kept": kept, "after": rss_mib()}))
"""

glibc_only = pytest.mark.skipif(
    not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="the thresholds are glibc's",
)


def run_scenario(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        # glibc's own defaults, whatever this process was started with.
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
    )
    return json.loads(out.stdout)


@glibc_only
def test_freed_buffers_go_back_to_the_system_once_the_thresholds_are_fixed():
    figures = run_scenario("tune")
    assert figures["tuned"] is True
    assert figures["peak"] - figures["base"] > 80  # the buffers were really there
    assert figures["after"] - figures["base"] < 10


@glibc_only
def test_without_the_fixed_thresholds_the_same_work_keeps_its_memory():
    # The control: what the worker did before (RSS grew with the mailbox).
    figures = run_scenario("none")
    assert figures["tuned"] is False
    assert figures["after"] - figures["base"] > 80


@glibc_only
def test_a_worker_process_has_the_thresholds_fixed_from_the_start():
    # Importing the Celery app is what every worker (and each child it forks) does.
    figures = run_scenario("celery")
    assert figures["after"] - figures["base"] < 10


@glibc_only
def test_freed_heap_memory_goes_back_to_the_system_once_released():
    # What the sync does after each batch.
    figures = run_scenario("release")
    assert figures["peak"] - figures["base"] > 80
    assert figures["kept"] - figures["base"] > 80  # freed, but still the process's
    assert figures["after"] - figures["base"] < 15
