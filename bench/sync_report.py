"""What the sync benchmark prints about its figures, shared by the IMAP run and the
Gmail / Graph runs (bench/sync_run.py), and the verdict against the targets.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import mib
from bench.sync_full import SAMPLE_SECONDS
from bench.sync_incremental import NEW_MESSAGES


def print_sync_line(sync: dict, profiled: bool) -> None:
    rate = sync["imported"] / sync["seconds"] if sync["seconds"] else 0.0
    print(
        f"sync:     {sync['imported']} msgs in {sync['seconds']:.2f} s = {rate:.0f} msg/s, "
        f"peak {mib(sync['peak_kib']):.0f} MiB (RSS before the sync "
        f"{mib(sync['rss_start_kib']):.0f} MiB)"
        + ("  [under cProfile: slower than real]" if profiled else "")
    )


def print_sync_details(sync: dict, figures: dict) -> None:
    """What was stored, the rate over each half, and where the sync's time went."""
    c = sync["counts"]
    print(
        f"          stored {c['messages']} messages ({c['parse_errors']} with a parse note), "
        f"{c['attachments']} attachments, {c['conversations']} conversations "
        f"(grouping {c['threading_signature']}); status {c['status']}/{c['sync_state']}"
    )
    first_half, second_half = halves(sync["samples"], sync["imported"])
    if first_half:
        print(
            f"          rate over the first half {first_half:.0f} msg/s, "
            f"second half {second_half:.0f} msg/s"
        )
    figures["sync_first_half_rate"], figures["sync_second_half_rate"] = first_half, second_half
    if sync["phases"]:
        print("          where the sync's time goes (wall clock, nested items are part of ingest):")
        for label, seconds in sync["phases"].items():
            share = 100 * seconds / sync["seconds"]
            print(f"            {label:44s} {seconds:7.2f} s  {share:5.1f}%")
        known = sum(  # the prefetch thread's time overlaps ingest's
            v for k, v in sync["phases"].items() if not k.startswith("  ") and "overlaps" not in k
        )
        rest = sync["seconds"] - known
        print(f"            {'the rest (lease, ledger lookups, cursor)':44s} {rest:7.2f} s")


def worker_peak_mib(sync: dict) -> float:
    """What one worker holds at most, the sync process and its parse helper
    together: its RSS plus the helper's own pages (USS), the most seen in the
    samples, or the process's peak RSS plus the least the helper ever held, if
    more (a peak between two samples)."""
    together = [s for s in sync["samples"] if len(s) > 6 and s[5]]
    sampled = max((s[5] + s[6] for s in together), default=0)
    floor = min((s[6] for s in together if s[6]), default=0)  # once the helper runs
    return mib(max(sampled, sync["peak_kib"] + floor))


def print_memory(sync: dict, base1: dict, base2: dict, figures: dict) -> None:
    together = [s for s in sync["samples"] if len(s) > 6 and s[5]]
    sampled = (
        f"; sampled every {SAMPLE_SECONDS} s, the two together at most: RSS summed "
        f"{mib(max(s[3] for s in together)):.0f} MiB (shared libraries counted twice), "
        f"PSS summed {mib(max(s[4] for s in together)):.0f} MiB, RSS of the sync + the "
        f"helper's own pages {mib(max(s[5] + s[6] for s in together)):.0f} MiB"
        if together
        else ""
    )
    print(
        f"peak memory: sync {mib(sync['peak_kib']):.0f} MiB, its parse helper "
        f"{mib(sync.get('helper_peak_kib', 0)):.0f} MiB (peak RSS of each){sampled}; "
        f"per worker {worker_peak_mib(sync):.0f} MiB; baseline "
        f"{mib(max(base1['peak_kib'], base2['peak_kib'])):.0f} MiB (target <= 150 MiB per worker)"
    )
    figures["worker_peak_mib"] = worker_peak_mib(sync)


def halves(samples: list, total: int) -> tuple[float | None, float | None]:
    """Messages/s over the first and the second half of the messages, from the samples."""
    samples = [(s[0], s[1]) for s in samples]
    if total < 4 or len(samples) < 4:
        return None, None
    first = next(((t, d) for t, d in samples if d >= total // 2), None)
    start = next(((t, d) for t, d in samples if d > 0), None)
    end = next(((t, d) for t, d in samples if d >= total), samples[-1])
    if not first or not start or first[0] <= start[0] or end[0] <= first[0]:
        return None, None
    return (first[1] - start[1]) / (first[0] - start[0]), (end[1] - first[1]) / (end[0] - first[0])


def rates(sync: dict, baselines: list) -> tuple[float, float, float]:
    """The sync's rate, the faster baseline's, and the wall-clock ratio of the two."""
    rate = sync["imported"] / sync["seconds"] if sync["seconds"] else 0.0
    base_rate = max(b["count"] / b["seconds"] for b in baselines)
    return rate, base_rate, rate / base_rate if base_rate else 0.0


def print_ratio(sync: dict, baselines: list) -> None:
    rate, base_rate, ratio = rates(sync, baselines)
    print(
        f"ratio (sync/baseline): {ratio:.2f}  ({rate:.0f} / {base_rate:.0f} msg/s; "
        "target >= 0.5, aim 1.0)"
    )


def print_load(load: dict) -> None:
    print(
        f"load average before baseline {load['before_baseline']:.1f}, "
        f"before sync {load['before_sync']:.1f}, after {load['after_sync']:.1f}"
        + ("  [machine busy: wall-clock figures skewed]" if max(load.values()) > 1.5 else "")
    )


def print_incremental_phases(inc: dict) -> None:
    if inc.get("incremental_phases"):
        print(
            "    of which: "
            + ", ".join(
                f"{label.strip()} {1000 * value:.0f} ms"
                for label, value in inc["incremental_phases"].items()
                if value >= 0.0005
            )
        )


def print_idle(inc: dict) -> None:
    """The IDLE watcher's burst, trickle and race (IMAP only)."""
    for name, idle in (inc.get("idle") or {}).items():
        label = f"IDLE {name} ({idle['expected']} messages"
        label += f", one every {idle['interval_ms']:.0f} ms)" if idle["interval_ms"] else ")"
        if name == "race":
            label = "IDLE race (a message arriving just after a sync, before IDLE resumes)"
        if idle["all_visible"]:
            first = (
                f"first visible {idle['first_visible_after_first_delivery'] * 1000:.0f} ms "
                "after the first delivery, "
                if not idle["interval_ms"]  # (a trickle is only watched once it is delivered)
                else ""
            )
            print(
                f"{label}: delivered in {idle['delivery_seconds'] * 1000:.0f} ms; {first}"
                f"all visible {idle['all_visible_after_last_delivery'] * 1000:.0f} ms "
                "after the last (target < 2 s)"
            )
        else:
            first = idle["first_visible_after_first_delivery"]
            seen = f"first after {first * 1000:.0f} ms" if first is not None else "none at all"
            print(
                f"{label}: only {idle['visible']} visible {idle['waited_seconds']:.0f} s after "
                f"the first delivery ({seen}); the watcher missed the rest"
            )
            if "catch_up_sync" in idle:
                print(
                    f"      a plain sync afterwards (as the next poll would) imported the other "
                    f"{idle['catch_up_sync']['imported']} in "
                    f"{idle['catch_up_sync']['seconds'] * 1000:.0f} ms"
                    + (
                        f" (it did not run: {idle['catch_up_sync']['reason']})"
                        if not idle["catch_up_sync"]["ran"]
                        else ""
                    )
                )
        for s in idle["on_change_syncs"]:
            print(
                f"      on_change sync at +{s['started_after_first_delivery'] * 1000:.0f} ms took "
                f"{s['seconds'] * 1000:.0f} ms, imported {s['imported']}"
            )


def finish(figures: dict, args, profile_path, baselines: list, sync: dict, inc: dict) -> None:
    """Keep the figures, print the verdict, write --json."""
    rate, base_rate, ratio = rates(sync, baselines)
    figures.update(
        baseline=baselines,
        baseline_rate=base_rate,
        sync={k: v for k, v in sync.items() if k != "samples"},
        sync_samples=sync["samples"],
        sync_rate=rate,
        ratio=ratio,
        incremental=inc,
    )
    verdict(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
        print(f"figures written to {args.json}")
    if profile_path:
        print(f"cProfile stats: {profile_path}")


def verdict(f: dict) -> None:
    sync_peak = f["worker_peak_mib"]
    inc = f["incremental"]
    idles = inc.get("idle") or {}
    lines = [
        ("full sync >= 0.5x baseline", f["ratio"] >= 0.5, f"{f['ratio']:.2f}x"),
        ("full sync >= 1.0x baseline (aim)", f["ratio"] >= 1.0, f"{f['ratio']:.2f}x"),
        ("peak memory <= 150 MiB", sync_peak <= 150, f"{sync_peak:.0f} MiB"),
        (
            "100 new messages imported < 0.25 s",
            inc["incremental_imported"] == NEW_MESSAGES and inc["incremental_seconds"] < 0.25,
            f"{inc['incremental_seconds'] * 1000:.0f} ms",
        ),
    ]
    for name, idle in idles.items():
        lat = idle["all_visible_after_last_delivery"]
        lines.append(
            (
                f"visible within 2 s of arrival (IDLE, {name})",
                bool(idle["all_visible"] and lat is not None and lat < 2),
                f"{lat * 1000:.0f} ms after the last delivery"
                if lat is not None
                else f"{idle['visible']}/{idle['expected']} visible after {idle['waited_seconds']:.0f} s",
            )
        )
    print("targets:")
    for name, ok, value in lines:
        print(f"  [{'met' if ok else 'NOT met'}] {name}: {value}")
    print("  (the 50,000-message scaling target needs a second run: bench/sync.py 50000)")
