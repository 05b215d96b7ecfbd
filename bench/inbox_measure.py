"""The inbox benchmark's measurements: each case (an API or page URL, or the
selector behind the page) requested N times with Django's test client after a
warm-up, its SQL captured, and EXPLAIN ANALYZE of the slowest query per group.
"""

from __future__ import annotations

import os
import statistics
import time
from html import unescape
from urllib.parse import urlencode

from bench.harness import log
from bench.inbox_experiments import experiments, run_profiles

LIST_TARGET_MS = 100.0
PAGE = 50  # rows per page of the inbox list
SHOW_MORE_DEPTH = 10  # the deep page measured: the 10th "Show more"
DETAIL_TARGET_MS = 150.0
SEARCH_TARGET_MS = 150.0


def search_terms(meta) -> dict[str, str]:
    """The loaded search terms (a common word, a customer's mail domain, an order
    number in one old message) and more shapes of a search, read from the data:
    a word's start, two words, a customer's name and full address, nothing."""
    from conversations.models import Conversation

    terms = dict(meta["search"])
    n = meta["rows"]["conversations"]
    # A customer of an old conversation: deterministic, and not at the list's top.
    name, address = (
        Conversation.objects.order_by("id")
        .exclude(customer_name="")
        .values_list("customer_name", "customer_address")[n // 3]
    )
    terms.update(
        {
            "word start": terms["common word"][:4],
            "two words": f"{terms['common word']} damaged",
            "customer name": name,
            "customer address": address,
            "nothing matches": "xylophonic",
        }
    )
    return terms


class Case:
    def __init__(
        self,
        group: str,
        name: str,
        client,
        url: str,
        *,
        target: float | None,
        headers: dict | None = None,
        status: int = 200,
    ):
        self.group = group  # api-list, page-list, search, api-detail, page-detail, selector, other
        self.name = name
        self.client = client
        self.url = url
        self.target = target
        self.headers = headers or {}
        self.expect = status
        self.times: list[float] = []
        self.cpu: list[float] = []  # this process's CPU per request (Python side)
        self.load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before/after
        self.queries: list[tuple[float, str]] = []
        self.size = 0
        self.func = None  # selector cases call a function instead of a URL
        self.template = None  # detail cases: the URL with {cid} for the conversation id

    def run(self):
        if self.func is not None:
            return self.func()
        response = self.client.get(self.url, **self.headers)
        if response.status_code != self.expect:
            raise RuntimeError(f"{self.name}: GET {self.url} answered {response.status_code}")
        self.size = len(response.content)
        return response

    def summary(self) -> dict:
        data = sorted(self.times)
        p95 = (
            statistics.quantiles(data, n=100, method="inclusive")[94] if len(data) > 1 else data[0]
        )
        out = {
            "group": self.group,
            "name": self.name,
            "url": self.url,
            "n": len(data),
            "p50_ms": round(statistics.median(data), 1),
            "p95_ms": round(p95, 1),
            "mean_ms": round(statistics.fmean(data), 1),
            "max_ms": round(data[-1], 1),
            "queries": len(self.queries),
            "sql_ms": round(sum(t for t, _ in self.queries), 1),
            "cpu_p50_ms": round(statistics.median(self.cpu), 1) if self.cpu else None,
            "load_avg": [round(x, 1) for x in self.load],
            "bytes": self.size,
            "target_ms": self.target,
        }
        out["met"] = None if self.target is None else out["p95_ms"] < self.target
        return out


HX = {"HTTP_HX_REQUEST": "true"}


def walk_urls(patterns, prefix=""):
    from django.urls import URLPattern, URLResolver

    for p in patterns:
        if isinstance(p, URLResolver):
            yield from walk_urls(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p


def inbox_routes() -> dict[str, str]:
    """The web routes under /inbox/ (the three-pane page), by URL name."""
    from django.urls import get_resolver

    return {
        pattern.name or route: route
        for route, pattern in walk_urls(get_resolver().url_patterns)
        if route.startswith("inbox")
    }


def build_page_cases(web, meta, args) -> tuple[list[Case], list[str]]:
    """The inbox page's cases, from the URL names conversations/inbox_views.py
    defines (inbox, inbox-list, inbox-conversation, inbox-thread), or --page."""
    from django.urls import reverse

    inbox_id = meta["inbox_ids"]["Support"]
    cases: list[Case] = []
    if args.page:
        for spec in args.page:
            name, _, url = spec.partition("=")
            group = "page-detail" if "{cid}" in url else "page-list"
            case = Case(
                group,
                name,
                web,
                url.replace("{inbox}", inbox_id),
                target=DETAIL_TARGET_MS if group == "page-detail" else LIST_TARGET_MS,
                headers=HX if "fragment" in name else None,
            )
            case.template = case.url if "{cid}" in url else None
            cases.append(case)
        return cases, ["page cases given with --page"]

    routes = inbox_routes()
    if not routes:
        return [], ["no route under /inbox/ in this snapshot: the inbox page is not built yet"]
    notes = ["inbox routes: " + ", ".join(f"/{r} ({n})" for n, r in routes.items())]
    views = [("", "default (unassigned)"), ("view=mine", "mine"), ("view=open", "open")]
    views += [("view=closed", "closed"), (f"inbox={inbox_id}", "inbox=Support (open)")]
    if "inbox" in routes:
        base = reverse("inbox")
        for query, label in views:
            url = f"{base}?{query}" if query else base
            cases.append(Case("page-list", f"page {label}", web, url, target=LIST_TARGET_MS))
    if "inbox-list" in routes:
        base = reverse("inbox-list")
        for query, label in views:
            url = f"{base}?{query}" if query else base
            cases.append(
                Case("page-list", f"fragment {label}", web, url, target=LIST_TARGET_MS, headers=HX)
            )
        # The page's deep page: "Show more" appends the next page after a keyset
        # cursor; the 10th one (rows 501-550), found by following the links.
        try:
            url, starts = f"{base}?view=open", []
            for _ in range(SHOW_MORE_DEPTH):
                html = web.get(url, **HX).content.decode()
                more = html.split('<p class="more">', 1)[1]
                url = unescape(more.split('hx-get="', 1)[1].split('"', 1)[0])
                starts.append(url.split("after=", 1)[1].split("&", 1)[0])
            cases.append(
                Case(
                    "page-list",
                    f"fragment view=open, Show more x{SHOW_MORE_DEPTH} "
                    f"(rows {PAGE * SHOW_MORE_DEPTH + 1}-{PAGE * (SHOW_MORE_DEPTH + 1)})",
                    web,
                    url,
                    target=LIST_TARGET_MS,
                    headers=HX,
                )
            )
            html = web.get(f"{base}?view=open", **HX).content.decode()
            version = html.split('data-version="', 1)[1].split('"', 1)[0]
            upto = "".join(f"&upto={start}" for start in starts[:-1])
            cases.append(
                Case(
                    "other",
                    f"fragment poll view=open, {SHOW_MORE_DEPTH - 1} pages appended, "
                    "unchanged (204)",
                    web,
                    f"{base}?view=open&v={version}{upto}",
                    target=None,
                    headers=HX,
                    status=204,
                )
            )
        except IndexError:
            notes.append("no keyset 'Show more' link in the list fragment: deep page not measured")
        try:
            html = web.get(base, **HX).content.decode()
            marker = 'data-version="'
            version = html.split(marker, 1)[1].split('"', 1)[0]
            cases.append(
                Case(
                    "other",
                    "fragment poll, unchanged (204)",
                    web,
                    f"{base}?v={version}",
                    target=None,
                    headers=HX,
                    status=204,
                )
            )
        except (IndexError, ValueError):
            notes.append("no data-version in the list fragment: poll not measured")
        for label, term in search_terms(meta).items():
            cases.append(
                Case(
                    "search",
                    f"fragment ?q= {label}",
                    web,
                    f"{base}?{urlencode({'q': term})}",
                    target=SEARCH_TARGET_MS,
                    headers=HX,
                )
            )
    if "inbox-conversation" in routes:
        url = reverse("inbox-conversation", args=[meta["fifty"][0]]).replace(
            meta["fifty"][0], "{cid}"
        )
        full = Case(
            "page-detail", "page open 50-message conversation", web, "", target=DETAIL_TARGET_MS
        )
        full.template = url
        pane = Case(
            "page-detail",
            "pane open 50-message conversation (htmx)",
            web,
            "",
            target=DETAIL_TARGET_MS,
            headers={**HX, "HTTP_HX_TARGET": "conversation-pane"},
        )
        pane.template = url
        cases += [full, pane]
    if "inbox-thread" in routes:
        url = reverse("inbox-thread", args=[meta["fifty"][0]]).replace(meta["fifty"][0], "{cid}")
        thread = Case("other", "thread refresh, 50 messages", web, "", target=None, headers=HX)
        thread.template = url
        cases.append(thread)
    # Keep the cases that answer (a page under construction may not yet).
    kept = []
    for case in cases:
        try:
            if case.template:
                case.url = case.template.format(cid=meta["fifty"][0])
            case.run()
            kept.append(case)
        except Exception as exc:
            notes.append(f"dropped {case.name}: {type(exc).__name__}: {exc}")
    return kept, notes


def selector_cases(meta, user) -> list[Case]:
    """What the page will cost in the database: conversation_list(view=...) [:50],
    evaluated and iterated, without templates (used while the page is missing)."""
    from conversations.selectors import conversation_list
    from inboxes.models import Inbox

    inbox = Inbox.objects.get(pk=meta["inbox_ids"]["Support"])
    cases = []
    for label, kwargs in [
        ("selector view=unassigned", {"view": "unassigned"}),
        ("selector view=mine", {"view": "mine"}),
        ("selector view=open", {"view": "open"}),
        ("selector view=closed", {"view": "closed"}),
        ("selector inbox=Support", {"inbox": inbox}),
        ("selector inbox=Support view=open", {"inbox": inbox, "view": "open"}),
    ]:
        case = Case(
            "selector", label, None, f"conversation_list(user, {kwargs})", target=LIST_TARGET_MS
        )

        def func(kwargs=kwargs):
            rows = list(conversation_list(user, **kwargs)[:50])
            # What a template reads from each row.
            return [
                (row.subject, row.inbox.name, row.assignee and row.assignee.full_name, row.is_read)
                for row in rows
            ]

        case.func = func
        cases.append(case)
    return cases


def follow(client, url: str, pages: int) -> str:
    for _ in range(pages):
        response = client.get(url)
        data = response.json()
        if not data.get("next"):
            break
        url = data["next"].replace("http://localhost", "")
    return url


def capture(case: Case) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    timings: list[float] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timings.append((time.perf_counter() - started) * 1000)

    # CaptureQueriesContext keeps the SQL with its parameters (for EXPLAIN), the
    # wrapper the time in microseconds (the context rounds to milliseconds).
    with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(timed):
        case.run()
    sqls = [q["sql"] for q in ctx.captured_queries]
    if len(timings) != len(sqls):
        timings = [float(q["time"]) * 1000 for q in ctx.captured_queries]
    case.queries = list(zip(timings, sqls, strict=True))


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def measure(meta: dict, args) -> dict:
    from django.db import connection
    from django.test import Client
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from accounts.models import User

    agent = User.objects.get(email=meta["agent"])
    admin = User.objects.get(email=meta["admin"])
    token, _ = Token.objects.get_or_create(user=agent)
    admin_token, _ = Token.objects.get_or_create(user=admin)
    api = APIClient(HTTP_HOST="localhost", HTTP_ACCEPT="application/json")
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    api_admin = APIClient(HTTP_HOST="localhost", HTTP_ACCEPT="application/json")
    api_admin.credentials(HTTP_AUTHORIZATION=f"Token {admin_token.key}")
    web = Client(HTTP_HOST="localhost")
    web.force_login(agent)

    base = "/api/v1/conversations/"
    inbox_id = meta["inbox_ids"]["Support"]
    deep = follow(api, base, args.deep_pages)
    deep_open = follow(api, f"{base}?status=open", args.deep_pages)
    fifty = meta["fifty"]
    if not fifty:
        raise SystemExit("no conversation with exactly 50 messages (use --conversations >= 200)")

    cases = [
        Case("api-list", "API first page", api, base, target=LIST_TARGET_MS),
        Case("api-list", f"API page {args.deep_pages} (cursor)", api, deep, target=LIST_TARGET_MS),
        Case(
            "api-list", "API ?inbox=Support", api, f"{base}?inbox={inbox_id}", target=LIST_TARGET_MS
        ),
        Case("api-list", "API ?status=open", api, f"{base}?status=open", target=LIST_TARGET_MS),
        Case(
            "api-list",
            f"API ?status=open page {args.deep_pages}",
            api,
            deep_open,
            target=LIST_TARGET_MS,
        ),
        Case(
            "api-list",
            "API ?assignee=me",
            api,
            f"{base}?assignee={agent.pk}",
            target=LIST_TARGET_MS,
        ),
        Case(
            "api-list",
            "API ?assignee=me&status=open",
            api,
            f"{base}?assignee={agent.pk}&status=open",
            target=LIST_TARGET_MS,
        ),
        Case(
            "api-list",
            "API ?unassigned=true",
            api,
            f"{base}?unassigned=true",
            target=LIST_TARGET_MS,
        ),
        Case(
            "api-list",
            "API ?unassigned=true&status=open",
            api,
            f"{base}?unassigned=true&status=open",
            target=LIST_TARGET_MS,
        ),
        Case("api-list", "API first page (admin)", api_admin, base, target=LIST_TARGET_MS),
    ]
    for label, term in search_terms(meta).items():
        cases.append(
            Case(
                "search",
                f"API ?search= {label}",
                api,
                f"{base}?{urlencode({'search': term})}",
                target=SEARCH_TARGET_MS,
            )
        )
    detail = Case(
        "api-detail", "API open 50-message conversation", api, "", target=DETAIL_TARGET_MS
    )
    detail.template = base + "{cid}/"
    cases.append(detail)

    page_cases, page_notes = build_page_cases(web, meta, args)
    if not any(c.group == "page-list" for c in page_cases):
        page_notes.append(
            "measured the selector the page will use (conversations.selectors.conversation_list "
            "with view=..., first 50 rows, no template) instead"
        )
        page_cases += selector_cases(meta, agent)
    cases += page_cases
    if args.only:
        cases = [c for c in cases if any(word.lower() in c.name.lower() for word in args.only)]
    if args.no_search:
        cases = [c for c in cases if c.group != "search"]
    # Search last: its multi-second parallel scans raise the load for what follows.
    cases.sort(key=lambda c: c.group == "search")

    # Rotate over the 50-message conversations so one hot row doesn't flatter the figure.
    rotation = {"i": 0}

    def next_fifty() -> str:
        rotation["i"] += 1
        return fifty[rotation["i"] % len(fifty)]

    log(
        f"measure: {len(cases)} cases, {args.warmup} warm-up + {args.requests} requests each "
        f"(search: {args.search_requests}); CONN_MAX_AGE={connection.settings_dict['CONN_MAX_AGE']}"
    )
    for note in page_notes:
        log("  page: " + note)
    for case in cases:
        count = args.search_requests if case.group == "search" else args.requests
        warmup = min(args.warmup, 2) if case.group == "search" else args.warmup
        detail_case = case.template is not None
        load_before = os.getloadavg()[0]
        for i in range(warmup + count):
            if detail_case:
                case.url = case.template.format(cid=next_fifty())
            cpu = time.process_time()
            started = time.perf_counter()
            case.run()
            elapsed = (time.perf_counter() - started) * 1000
            cpu = (time.process_time() - cpu) * 1000
            if i >= warmup:
                case.times.append(elapsed)
                case.cpu.append(cpu)
        case.load = (load_before, os.getloadavg()[0])
        capture(case)
        s = case.summary()
        log(
            f"  {case.name:<44} p50 {s['p50_ms']:7.1f}  p95 {s['p95_ms']:7.1f} ms  "
            f"{s['queries']} queries  (python CPU p50 {s['cpu_p50_ms']} ms, load {s['load_avg']})"
        )

    summaries = [c.summary() for c in cases]
    explains = {}
    for group in ("api-list", "page-list", "selector", "search", "api-detail", "page-detail"):
        members = [c for c in cases if c.group == group]
        if not members:
            continue
        worst = max(members, key=lambda c: c.summary()["p95_ms"])
        if not worst.queries:
            continue
        slowest_ms, slowest_sql = max(worst.queries)
        explains[group] = {
            "case": worst.name,
            "query_ms": round(slowest_ms, 1),
            "sql": slowest_sql,
            "plan": explain(slowest_sql)
            if slowest_sql.lstrip().upper().startswith("SELECT")
            else "",
        }
    profile = {}
    if args.profile:
        profile = run_profiles(cases, args)
    tried = experiments(cases) if args.experiments else []
    return {
        "cases": summaries,
        "experiments": tried,
        "explain": explains,
        "page_notes": page_notes,
        "profile": profile,
        "queries": {c.name: [(round(t, 2), sql) for t, sql in c.queries] for c in cases},
    }
