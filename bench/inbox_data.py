"""The inbox benchmark's data, planned from a seed: the account's shape (3 inboxes,
one restricted to a team, 20 agents), and every conversation's inbox, times,
directions, status and assignee; the vocabulary of subjects, names and bodies.
``bench/inbox_load.py`` writes it into PostgreSQL.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from datetime import UTC, datetime

SEED = 20250630
END = datetime(2025, 6, 30, 17, 0, tzinfo=UTC)
SPAN_SECONDS = 730 * 86400
START_TS = END.timestamp() - SPAN_SECONDS
END_TS = END.timestamp()

DOMAIN = "inbox-bench.example.com"
INBOXES = (  # name, share of conversations, restricted to the team
    ("Support", 0.60, False),
    ("Sales", 0.25, False),
    ("Billing", 0.15, True),
)
AGENTS = 20
TEAM_SIZE = 8  # agents 0..7 are in the Billing team (agent 0 is the one measured)
FIFTY = 20  # conversations with exactly 50 messages
LONG = 30  # conversations with 60-120 messages


def det_uuid(*parts) -> str:
    """A UUID4-shaped id that depends only on the seed and ``parts``."""
    digest = hashlib.md5(":".join(map(str, (SEED, *parts))).encode()).digest()
    return str(uuid.UUID(bytes=digest, version=4))


WORDS = (  # noqa: SIM905
    "the of and to in is that for it as was with be by on not this are or from at we you your our "
    "order invoice refund payment account password login delivery shipping package tracking number "
    "subscription plan renewal seats price quote discount contract signed copy attached please "
    "thanks thank regards kind hello hi dear team support sales billing question issue problem error "
    "page button export import report dashboard settings user users admin access permission "
    "since yesterday morning today tomorrow week month last next still again already soon could "
    "would should can cannot does did have has had been will make sure check see find help need "
    "want know understand update updated change changed new old wrong right correct missing "
    "received sent email mail address phone call meeting schedule available time date customer "
    "product item size colour color return exchange replacement damaged broken working works fine "
    "server down slow fast app mobile browser chrome firefox windows mac version release note "
    "credit card bank transfer iban vat number company name street city postcode country "
    "café Grüße déjà façade naïve señor Łódź Kraków smørrebrød spasibo arigatou"
).split()
FIRST = (  # noqa: SIM905
    "Anna Bram Carla Daan Eva Finn Greta Hugo Iris Jan Kim Lars Mila Noah Olga Piet Quinn Rosa "
    "Sven Tess Umar Vera Wim Xena Yara Zoë Jürgen Sören José Łukasz Chloé Renée François Ömer "
    "Ágnes Siobhán Maria Lucas Sofia Liam Emma Mohammed Fatima Wei Yuki Priya Arjun Ana Pedro"
).split()
LAST = (  # noqa: SIM905
    "Jansen Smit Visser Bakker Meijer Mulder Bos Vos Peters Hendriks Müller Schäfer Groß Dvořák "
    "Nowak Wójcik García Peña Øster Lindqvist Åberg O'Brien Mäkinen Köhler Brontë Rossi Dubois "
    "Silva Kowalski Tanaka Chen Kumar Novak Horvat Popescu Nielsen Andersen Fischer Weber"
).split()
COMPANY = (  # noqa: SIM905
    "acme globex initech umbrella hooli vandelay stark wayne wonka tyrell cyberdyne soylent "
    "aperture blackmesa oceanic dunder monarch nakatomi gringotts sirius"
).split()
TLDS = ("com", "nl", "de", "co.uk", "fr", "es", "io", "be", "pl", "se")
SUBJECTS = (
    "Question about my order {n}",
    "Invoice {n} is wrong",
    "Cannot log in",
    "Refund request for order {n}",
    "Delivery delayed",
    "Vraag over factuur {n}",
    "Problem mit der Lieferung {n}",
    "Subscription renewal",
    "Urgent: dashboard down since this morning",
    "Feature request: export to CSV",
    "Wrong size, need an exchange",
    "Password reset does not arrive",
    "Pricing for {n} seats",
    "Contract {n}: signed copy",
    "Réclamation commande {n}",
    "Change of billing address",
    "VAT number on invoice {n}",
    "Damaged package",
    "How do I add users?",
    "Cancel my subscription",
)
ATTACHMENTS = (
    ("application/pdf", "invoice", "pdf"),
    ("application/pdf", "contract", "pdf"),
    ("image/png", "screenshot", "png"),
    ("image/jpeg", "photo", "jpg"),
    ("text/csv", "export", "csv"),
)


class Conv:
    __slots__ = (
        "i",
        "id",
        "inbox",
        "t0",
        "times",
        "outbound",
        "status",
        "assignee",
        "customer",
        "subject",
        "closed_at",
        "order",
    )


def paragraph_pool(rng: random.Random, count: int = 3000) -> list[str]:
    pool = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
            words[0] = words[0].capitalize()
            sentences.append(" ".join(words) + rng.choice(".....?!"))
        pool.append(" ".join(sentences))
    return pool


def message_counts(rng: random.Random, n: int, total: int, pinned: dict[int, int]) -> list[int]:
    """Lognormal counts (median ~6.5), exactly ``total`` in all, pinned ones fixed."""
    sigma = 0.9
    mean = total / n
    mu = math.log(mean) - sigma * sigma / 2
    counts = [min(120, max(1, round(rng.lognormvariate(mu, sigma)))) for _ in range(n)]
    for i, value in pinned.items():
        counts[i] = value
    free = [i for i in range(n) if i not in pinned]
    diff = total - sum(counts)
    while diff != 0 and free:
        i = free[rng.randrange(len(free))]
        if diff > 0 and counts[i] < 120:
            step = min(diff, rng.randint(1, 4), 120 - counts[i])
            counts[i] += step
            diff -= step
        elif diff < 0 and counts[i] > 1 and counts[i] != 50:
            step = min(-diff, rng.randint(1, 4), counts[i] - 1)
            counts[i] -= step
            diff += step
    return counts


def plan_conversations(n: int, total_messages: int) -> tuple[list[Conv], list[tuple], dict]:
    """Every conversation's shape: inbox, times, directions, status, assignee."""
    rng = random.Random(SEED)
    starts = sorted(START_TS + rng.random() * SPAN_SECONDS for _ in range(n))
    # Pinned lengths: exactly 50 (the "open a conversation" case) spread over time,
    # and some longer ones (50+).
    fifty = {int((k + 0.5) * n / FIFTY) for k in range(FIFTY)} if n >= FIFTY * 10 else set()
    pinned = {i: 50 for i in fifty}
    for k in range(LONG if n >= 1000 else 0):
        i = int((k + 0.25) * n / LONG)
        if i not in pinned:
            pinned[i] = rng.randint(60, 120)
    counts = message_counts(rng, n, total_messages, pinned)

    customers = []
    for c in range(max(1000, n // 3)):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = f"{rng.choice(COMPANY)}{c % 97}.{rng.choice(TLDS)}"
        local = f"{first}.{last}".lower().replace("'", "")
        local = local.encode("ascii", "ignore").decode() or f"user{c}"
        customers.append((f"{first} {last}", f"{local}{c}@{company}"))

    inbox_weights = [share for _, share, _ in INBOXES]
    agent_weights = [1 / math.sqrt(a + 1) for a in range(AGENTS)]
    convs = []
    for i in range(n):
        c = Conv()
        c.i = i
        c.id = det_uuid("c", i)
        c.inbox = rng.choices(range(len(INBOXES)), inbox_weights)[0]
        c.t0 = starts[i]
        count = counts[i]
        # Replies come hours to days apart; a long thread runs for weeks.
        gaps = [rng.expovariate(1 / (3 * 3600)) + 60 for _ in range(count - 1)]
        times = [c.t0]
        for gap in gaps:
            times.append(times[-1] + gap)
        if times[-1] > END_TS - 60:  # squeeze a thread that would run past the end
            scale = (END_TS - 60 - c.t0) / max(times[-1] - c.t0, 1)
            times = [c.t0 + (t - c.t0) * scale for t in times]
        c.times = times
        outbound = [False]
        for _k in range(1, count):
            outbound.append(rng.random() < (0.75 if not outbound[-1] else 0.25))
        c.outbound = outbound
        recent = END_TS - times[-1] < 30 * 86400
        c.status = "open" if rng.random() < (0.8 if recent else 0.27) else "closed"
        if c.status == "closed":
            c.closed_at = times[-1] + rng.uniform(60, 2 * 86400)
            c.closed_at = min(c.closed_at, END_TS)
            assigned = rng.random() < 0.95
        else:
            c.closed_at = None
            assigned = rng.random() < 0.6
        if assigned:
            pool = range(TEAM_SIZE) if INBOXES[c.inbox][2] else range(AGENTS)
            c.assignee = rng.choices(list(pool), [agent_weights[a] for a in pool])[0]
        else:
            c.assignee = None
        c.customer = rng.randrange(len(customers))
        c.order = 1_000_000 + rng.randrange(9_000_000)
        c.subject = rng.choice(SUBJECTS).format(n=c.order)
        convs.append(c)
    info = {
        "fifty": sorted(fifty),
        "long": sorted(i for i, v in pinned.items() if v != 50),
        "max_messages": max(counts),
    }
    return convs, customers, info
