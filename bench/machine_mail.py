"""What classifying machine mail (inboxes/mime/machine.py) costs inside parse_message,
on the sync benchmark's corpus, in this process (no services needed).

Prints the corpus's kinds, then best-of-5 parse CPU with the classification and with
it replaced by a constant (alternating), and the classification alone, replayed in a
tight loop with the arguments parse_message gave it.

    .venv/bin/python bench/machine_mail.py [N]     # N corpus messages (2,000)
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import inboxes.mime.message as parsing  # noqa: E402
from bench.corpus import message  # noqa: E402
from inboxes.mime.machine import classify  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    raws = [message(i) for i in range(count)]
    kinds: dict[str, int] = {}
    calls: list[tuple[Any, Any]] = []

    def capture(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return classify(*args, **kwargs)

    parsing.classify = capture
    for raw in raws:
        kind = parsing.parse_message(raw).kind
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"corpus: {count} messages, kinds {kinds}")

    def parse_all() -> float:
        gc.collect()
        started = time.process_time()
        for raw in raws:
            parsing.parse_message(raw)
        return time.process_time() - started

    def constant(*args: Any, **kwargs: Any) -> tuple[str, None]:
        return "email", None

    with_it, without = [], []
    for _ in range(5):
        parsing.classify = classify
        with_it.append(parse_all())
        parsing.classify = constant
        without.append(parse_all())
    parsing.classify = classify
    best_with, best_without = min(with_it), min(without)
    print(
        f"parse_message CPU, best of 5: {best_with * 1e3 / count:.3f} ms/msg with the "
        f"classification, {best_without * 1e3 / count:.3f} without "
        f"({100 * (best_with - best_without) / best_without:+.2f}%)"
    )
    alone = []
    for _ in range(5):
        started = time.perf_counter()
        for args, kwargs in calls:
            classify(*args, **kwargs)
        alone.append(time.perf_counter() - started)
    print(
        f"classify alone, best of 5: {min(alone) * 1e6 / count:.1f} us/msg "
        f"({100 * min(alone) / best_with:.2f}% of parse_message)"
    )


if __name__ == "__main__":
    main()
