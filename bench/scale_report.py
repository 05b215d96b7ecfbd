"""The scale benchmark's figures, targets and printed report."""

from __future__ import annotations

import math
import os

TARGETS = {"p50": 2.0, "p95": 5.0, "p99": 10.0}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-100) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: list[float]) -> dict:
    return {
        "count": len(values),
        "p50": _round(percentile(values, 50)),
        "p95": _round(percentile(values, 95)),
        "p99": _round(percentile(values, 99)),
        "max": _round(max(values) if values else None),
        "mean": _round(sum(values) / len(values) if values else None),
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def lease_seconds() -> int:
    from django.conf import settings

    return int(os.environ.get("WATCH_LEASE_SECONDS") or settings.WATCH_LEASE_SECONDS)


def figures(result, args, deliverer, poll, samples, kill, cpu_before, cpu_after) -> dict:
    deliveries = deliverer.deliveries
    span = max(1e-9, deliverer.ended_at - deliverer.started_at)
    result["delivery"] = {
        "planned": round(args.rate * args.minutes * 60),
        "delivered": len(deliveries),
        "achieved_rate": round(len(deliveries) / span, 2),
        "late": deliverer.late,
        "errors": deliverer.errors[:10],
        "mode": "dovecot-lda" if args.lda else "Maildir new/ (tmp + rename)",
    }
    visible = [d for d in deliveries if d.visible_at is not None]
    result["latency_s"] = spread([d.visible_at - d.delivered_at for d in visible])
    result["latency_row_created_s"] = spread(
        [d.created_at - d.delivered_at for d in visible if d.created_at is not None]
    )
    drained_by = deliverer.ended_at + args.drain
    result["lost"] = sum(1 for d in deliveries if d.visible_at is None or d.visible_at > drained_by)
    result["lost_examples"] = [
        {"message_id": d.message_id, "user": d.user} for d in deliveries if d.visible_at is None
    ][:10]
    result["timeline"] = timeline(deliveries, deliverer.started_at)
    result["kill"] = kill_figures(kill, deliveries, deliverer.started_at, drained_by)
    result["memory"] = memory_figures(result, samples)
    result["cpu"] = cpu_figures(cpu_before, cpu_after)
    result["verdict"] = verdict(result)
    return result


def timeline(deliveries, started_at: float, bucket: float = 30.0) -> list[dict]:
    """Latency per ``bucket`` seconds of the run (the kill shows here)."""
    buckets: dict[int, list] = {}
    for d in deliveries:
        buckets.setdefault(int((d.delivered_at - started_at) // bucket), []).append(d)
    rows = []
    for index in sorted(buckets):
        group = buckets[index]
        seen = [d.visible_at - d.delivered_at for d in group if d.visible_at is not None]
        rows.append(
            {
                "from_s": int(index * bucket),
                "delivered": len(group),
                "lost": len(group) - len(seen),
                "p50": _round(percentile(seen, 50)),
                "p95": _round(percentile(seen, 95)),
                "max": _round(max(seen) if seen else None),
            }
        )
    return rows


def kill_figures(kill, deliveries, started_at: float, drained_by: float) -> dict | None:
    if kill is None or not kill.killed_at:
        return None
    figures: dict = {
        "victim": kill.victim.name,
        "at_s": round(kill.killed_at - started_at, 1),
        "held": len(kill.orphans),
        "lease_seconds": lease_seconds(),
    }
    if kill.owner is None:
        figures["takeover_s"] = None
        figures["note"] = "no watch leases: every watcher watches every mailbox"
        after = [d for d in deliveries if d.delivered_at >= kill.killed_at]
    else:
        end = kill.taken_over_at
        figures["takeover_s"] = None if end is None else round(end - kill.killed_at, 1)
        figures["progress"] = kill.progress[:: max(1, len(kill.progress) // 20)]
        orphans = set(kill.orphans)
        after = [
            d
            for d in deliveries
            if d.mailbox_id in orphans
            and d.delivered_at >= kill.killed_at
            and (end is None or d.delivered_at <= end)
        ]
    seen = [
        d.visible_at - d.delivered_at
        for d in after
        if d.visible_at is not None and d.visible_at <= drained_by
    ]
    figures["delivered_meanwhile"] = len(after)
    figures["lost_meanwhile"] = len(after) - len(seen)
    figures["latency_meanwhile_s"] = spread(seen)
    return figures


def memory_figures(result: dict, samples) -> dict:
    base = result.get("watcher_base_rss_kib", 0)
    watchers: dict[str, dict] = {}
    for sample in samples:
        for name, reading in sample.watchers.items():
            w = watchers.setdefault(name, {"max_rss_mib": 0.0, "held_max": 0, "first": reading})
            w["max_rss_mib"] = max(w["max_rss_mib"], reading["rss_kib"] / 1024)
            w["held_max"] = max(w["held_max"], reading["held"])
            w["last"] = reading
    for w in watchers.values():
        last = w.pop("last", w["first"])
        first = w.pop("first")
        held = last["held"] or w["held_max"]
        w["rss_mib"] = round(last["rss_kib"] / 1024, 1)
        w["rss_mib_at_start"] = round(first["rss_kib"] / 1024, 1)
        w["max_rss_mib"] = round(w["max_rss_mib"], 1)
        w["threads"] = last["threads"]
        w["held"] = held
        w["kib_per_mailbox"] = round(last["rss_kib"] / held, 1) if held else None
        w["kib_per_mailbox_above_base"] = (
            round((last["rss_kib"] - base) / held, 1) if held and base else None
        )
    loads = [s.load for s in samples]
    pss = [s.dovecot_pss_kib for s in samples if s.dovecot_pss_kib]
    return {
        "watcher_base_rss_mib": round(base / 1024, 1),
        "watchers": watchers,
        "dovecot_rss_sum_mib_max": round(
            max((s.dovecot_rss_kib for s in samples), default=0) / 1024
        ),
        "dovecot_pss_mib_max": round(max(pss, default=0) / 1024),
        "dovecot_processes_max": max((s.dovecot_processes for s in samples), default=0),
        "load_min": min(loads, default=None),
        "load_mean": round(sum(loads) / len(loads), 2) if loads else None,
        "load_max": max(loads, default=None),
        "queue_max": max((s.queue for s in samples), default=0),
        "db_connections_max": max((s.db_connections for s in samples), default=0),
    }


def cpu_figures(before: dict, after: dict) -> dict:
    seconds = max(1e-9, after["_at"] - before["_at"])
    figures: dict = {
        name: round((after[name] - before.get(name, 0.0)) / seconds * 100, 1)
        for name in after
        if not name.startswith("_") and after[name] >= before.get(name, 0.0)
    }
    for name in before:  # a process killed during the run (its CPU is gone with it)
        if not name.startswith("_") and name not in figures:
            figures[name] = None
    pg_before, pg_after = before["_postgres"], after["_postgres"]
    figures["postgres (backends alive at the end)"] = round(
        sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items()) / seconds * 100, 1
    )
    busy = after["_machine_busy"] - before["_machine_busy"]
    total = after["_machine_total"] - before["_machine_total"]
    figures["_machine_busy_percent"] = round(busy / max(1e-9, total) * 100, 1)
    figures["_seconds"] = round(seconds, 1)
    return figures


def verdict(result: dict) -> dict:
    latency = result["latency_s"]
    checks = {
        name: latency[name] is not None and latency[name] < target
        for name, target in TARGETS.items()
    }
    checks["lost"] = result["lost"] == 0 and result["delivery"]["delivered"] > 0
    kill = result["kill"]
    if kill is not None and kill.get("takeover_s") is not None:
        checks["takeover"] = kill["takeover_s"] <= kill["lease_seconds"]
    elif kill is not None and kill["held"]:
        checks["takeover"] = False
    if kill is not None:
        checks["lost_meanwhile"] = kill["lost_meanwhile"] == 0
    checks["all_met"] = all(checks.values())
    return checks


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def report(result: dict) -> None:
    args, machine = result["args"], result["machine"]
    print()
    print(
        f"== scale: {args['n']} mailboxes, {args['watchers']} watchers, "
        f"{args['workers']} worker(s) x {args['concurrency']}, beat {not args['no_beat']}"
    )
    print(f"code: {result['code']}")
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_mib']} MiB; "
        f"PostgreSQL {machine['postgresql']}, {machine['dovecot'][:20]}"
    )
    print(f"watcher flags: {args['watcher_args'] or '(none)'}")
    print(f"setup {result['setup_seconds']} s; synced once: {result['first_sync']}")
    warm = result["warmup"]
    print(
        f"warm-up: {warm['watched']}/{args['n']} watched by {warm['mode']}, all after "
        f"{warm['all_watched_after_s']} s (waited {warm['seconds']} s)"
    )
    d = result["delivery"]
    print(
        f"delivered {d['delivered']} of {d['planned']} ({d['mode']}) at "
        f"{d['achieved_rate']}/s (asked {args['rate']:g}/s); {d['late']} late, "
        f"{len(d['errors'])} errors"
    )
    lat = result["latency_s"]
    print(
        "arrival -> visible (s): "
        + ", ".join(
            f"{k} {lat[k]}"
            + (f" (target < {TARGETS[k]:g}: {yes(result['verdict'][k])})" if k in TARGETS else "")
            for k in ("p50", "p95", "p99", "max", "mean")
        )
    )
    row = result["latency_row_created_s"]
    print(f"  (to the row's created_at: p50 {row['p50']}, p95 {row['p95']}, p99 {row['p99']})")
    print(
        f"lost (not visible {args['drain']:g} s after the end): {result['lost']} "
        f"(target 0: {yes(result['verdict']['lost'])}); never visible (not even "
        f"{args['late_wait']:g} s later): {result.get('never_visible')}"
    )
    print(
        "per 30 s: "
        + "; ".join(
            f"{r['from_s']}s p95 {r['p95']} max {r['max']}"
            + (f" lost {r['lost']}" if r["lost"] else "")
            for r in result["timeline"]
        )
    )
    kill = result["kill"]
    if kill:
        took = kill.get("takeover_s")
        print(
            f"kill -9 {kill['victim']} at {kill['at_s']} s, holding {kill['held']}: "
            + (
                f"all watched again after {took} s (lease {kill['lease_seconds']} s: "
                f"{yes(result['verdict'].get('takeover', False))})"
                if took is not None
                else kill.get("note", "NOT all taken over")
            )
        )
        meanwhile = kill["latency_meanwhile_s"]
        print(
            f"  delivered to them meanwhile: {kill['delivered_meanwhile']}, lost "
            f"{kill['lost_meanwhile']}, latency p50 {meanwhile['p50']} max {meanwhile['max']}"
        )
    mem = result["memory"]
    print(
        f"watcher base RSS (Django + the command, nothing watched): "
        f"{mem['watcher_base_rss_mib']} MiB"
    )
    for name, w in mem["watchers"].items():
        print(
            f"  {name}: RSS {w['rss_mib']} MiB (max {w['max_rss_mib']}), {w['held']} held, "
            f"{w['threads']} threads: {w['kib_per_mailbox']} KiB per mailbox, "
            f"{w['kib_per_mailbox_above_base']} KiB above the base"
        )
    print(
        f"Dovecot: up to {mem['dovecot_processes_max']} processes, PSS {mem['dovecot_pss_mib_max']} "
        f"MiB (RSS summed {mem['dovecot_rss_sum_mib_max']} MiB)"
    )
    print(
        f"load average {mem['load_min']}-{mem['load_max']} (mean {mem['load_mean']}); "
        f"queue up to {mem['queue_max']}; up to {mem['db_connections_max']} database "
        f"connections (warm-up: {result['warmup'].get('db_connections_max')})"
    )
    cpu = result["cpu"]
    print(
        f"CPU over {cpu['_seconds']} s, % of one core (machine busy "
        f"{cpu['_machine_busy_percent']}% of all cores): "
        + ", ".join(f"{k} {v}" for k, v in cpu.items() if not k.startswith("_"))
    )
    print(f"verdict: {'all targets met' if result['verdict']['all_met'] else 'targets MISSED'}")
