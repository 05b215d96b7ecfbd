"""The contacts benchmark's data: one account with 10 users, N contacts (names,
companies and addresses from a seed) and M logged emails on their timelines, written
with ``core.bulk.bulk_insert`` (COPY) as the product stores rows; then VACUUM ANALYZE.

Emails are spread unevenly, as a CRM's are: most contacts have a handful, a few
hundred have hundreds, ``HEAVY`` have 2,000 each. Every email is a stored message, a
CRM ``Email`` and a timeline event; one outbound email in ten was opened (an ``open``
event too).
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.harness import log

SEED = 20261207
END = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
SPAN = timedelta(days=730)
USERS = 10
HEAVY = 20  # contacts with exactly HEAVY_EMAILS emails
HEAVY_EMAILS = 2_000
BATCH = 5_000  # rows per bulk_insert / transaction
DOMAIN = "crm-bench.example.com"

FIRST = [
    "Anna",
    "Bram",
    "Carla",
    "Daan",
    "Eva",
    "Finn",
    "Greta",
    "Hugo",
    "Iris",
    "Jan",
    "Kim",
    "Lars",
    "Mila",
    "Noah",
    "Olga",
    "Piet",
    "Quinn",
    "Rosa",
    "Sven",
    "Tess",
    "Umar",
    "Vera",
    "Wim",
    "Xena",
    "Yara",
    "Zoë",
    "Jürgen",
    "Sören",
    "José",
    "Łukasz",
    "Chloé",
    "Renée",
    "François",
    "Ömer",
    "Ágnes",
    "Siobhán",
    "Maria",
    "Lucas",
    "Sofia",
    "Liam",
    "Emma",
    "Mohammed",
    "Fatima",
    "Wei",
    "Yuki",
    "Priya",
    "Arjun",
    "Ana",
    "Pedro",
]
LAST = [
    "Jansen",
    "Smit",
    "Visser",
    "Bakker",
    "Meijer",
    "Mulder",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "Müller",
    "Schäfer",
    "Groß",
    "Dvořák",
    "Nowak",
    "Kowalski",
    "Rossi",
    "Bianchi",
    "García",
    "López",
    "Martin",
    "Bernard",
    "Dubois",
    "Silva",
    "Santos",
    "Tanaka",
    "Suzuki",
    "Kim",
    "Lee",
    "Chen",
    "Wang",
    "Singh",
    "Patel",
    "Okafor",
    "Mensah",
    "Johansson",
    "Nielsen",
    "Virtanen",
    "Horvat",
    "Novak",
    "Popescu",
    "Ivanova",
    "Yilmaz",
    "Haddad",
    "Cohen",
    "Murphy",
    "Kelly",
    "O'Brien",
    "Walsh",
    "Byrne",
    "Ryan",
    "Doyle",
    "Quigley",
    "Fitzgerald",
]
SYLLABLES = [
    "ac",
    "ber",
    "cor",
    "dan",
    "el",
    "fin",
    "gal",
    "har",
    "ion",
    "jet",
    "kor",
    "lum",
    "mar",
    "nov",
    "or",
    "pix",
    "quo",
    "ren",
    "sol",
    "tek",
    "ul",
    "vex",
    "wyn",
    "zor",
]
SUFFIXES = ("BV", "GmbH", "Ltd", "Inc", "SA", "AB", "Oy", "Group", "Labs", "& Co")
SUBJECTS = (
    "Quote for {c}",
    "Follow-up on our call",
    "Re: Pricing for {c}",
    "Contract renewal",
    "Introduction: {c} and Postkamer",
    "Meeting next week?",
    "Re: Your question about seats",
    "Invoice {n}",
)


def det_uuid(*parts: object) -> uuid.UUID:
    digest = hashlib.md5(":".join(map(str, (SEED, *parts))).encode()).digest()
    return uuid.UUID(bytes=digest, version=4)


def company_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        names.add(f"{word} {rng.choice(SUFFIXES)}")
    return sorted(names)


def email_counts(rng: random.Random, contacts: int, emails: int) -> list[int]:
    """Emails per contact: HEAVY with HEAVY_EMAILS, the rest lognormal, summing to ``emails``."""
    heavy = min(HEAVY, contacts // 10)
    rest = max(emails - heavy * HEAVY_EMAILS, 0)
    weights = [rng.lognormvariate(0, 1.2) for _ in range(contacts - heavy)]
    scale = rest / sum(weights) if weights else 0
    counts = [int(w * scale) for w in weights]
    for index in range(rest - sum(counts)):
        counts[index % len(counts)] += 1
    return [HEAVY_EMAILS] * heavy + counts


def load(contacts: int, emails: int) -> dict:
    """Fill the (migrated) database; returns what was loaded and the ids measured."""
    from django.db import connection, transaction

    from accounts.models import Account, User
    from bench.inbox_copy import CopyStream, CopyTable, esc, js, ts
    from core.bulk import bulk_insert
    from crm.models import Contact, Email, TimelineEvent
    from inboxes.models import Message

    rng = random.Random(SEED)
    started = time.perf_counter()
    account = Account.objects.create(name="CRM bench", plan="professional")
    users = [
        User.objects.create_user(
            email=f"rep{n}@{DOMAIN}",
            password="bench",
            account=account,
            full_name=f"Rep {n}",
            role="admin" if n == 0 else "member",
        )
        for n in range(USERS)
    ]
    companies = company_names(rng, max(contacts // 20, 10))
    counts = email_counts(rng, contacts, emails)
    log(f"load: {contacts:,} contacts, {sum(counts):,} emails, {len(companies):,} companies")

    contact_rows: list[Contact] = []
    for index in range(contacts):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = rng.choice(companies)
        domain = company.split()[0].lower() + ".example.com"
        address = f"{first.lower()}.{last.lower().replace(chr(39), '')}{index}@{domain}"
        contact_rows.append(
            Contact(
                id=det_uuid("contact", index),
                account=account,
                email=address,
                canonical_email=address.lower(),
                name=f"{first} {last}",
                company=company if rng.random() < 0.9 else "",
                owner=users[rng.randrange(USERS)] if rng.random() < 0.8 else None,
            )
        )
    for start in range(0, len(contact_rows), BATCH):
        with transaction.atomic():
            bulk_insert(Contact, contact_rows[start : start + BATCH])
    # bulk_insert writes created_at as now (auto_now_add): spread it over two years.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE crm_contact SET created_at = %s - (random() * interval '730 days') "
            "WHERE account_id = %s",
            [END, account.pk],
        )
    log(f"  contacts: {time.perf_counter() - started:.0f} s")

    # The emails' rows go by COPY in text format on three connections of their own, with
    # the FK triggers off (every id is made here): the Django objects bulk_insert needs
    # cost ~1 ms per email, 15 minutes for a million.
    db = connection.settings_dict["NAME"]
    messages = CopyStream(
        db,
        CopyTable(
            Message,
            "id created_at updated_at account_id dedupe_key direction message_id subject "
            "from_name from_address to sent_at text raw",
        ),
    )
    logged = CopyStream(
        db,
        CopyTable(
            Email,
            "id created_at updated_at account_id contact_id message_id direction sent_by_id "
            "at opens",
        ),
    )
    events = CopyStream(
        db,
        CopyTable(TimelineEvent, "id created_at updated_at account_id contact_id type at email_id"),
    )
    span = SPAN.total_seconds()
    end = END.timestamp()
    body = esc(" ".join(["Thanks for your time today; the figures are attached."] * 4))
    account_id = str(account.pk)
    reps = [(str(u.pk), esc(u.full_name), esc(u.email)) for u in users]
    written = 0
    for index, (contact, count) in enumerate(zip(contact_rows, counts, strict=True)):
        contact_id = str(contact.pk)
        theirs = {"name": contact.name, "address": contact.email}
        for number in range(count):
            at_ts = end - rng.random() * span
            at = ts(at_ts)
            outbound = rng.random() < 0.6
            key = hashlib.sha256(f"{SEED}:{index}:{number}".encode()).hexdigest()
            rep_id, rep_name, rep_email = reps[rng.randrange(USERS)]
            subject = rng.choice(SUBJECTS).format(c=contact.company or "you", n=number)
            message_id = str(det_uuid("message", index, number))
            email_id = str(det_uuid("email", index, number))
            direction = "outbound" if outbound else "inbound"
            sender = (rep_name, rep_email) if outbound else (esc(contact.name), esc(contact.email))
            recipient = theirs if outbound else {"name": rep_name, "address": rep_email}
            messages.add(
                [
                    message_id,
                    at,
                    at,
                    account_id,
                    key,
                    direction,
                    f"<{key[:24]}@{DOMAIN}>",
                    esc(subject),
                    sender[0],
                    sender[1],
                    js([recipient]),
                    at,
                    body,
                    "",
                ]
            )
            opened = outbound and number % 10 == 0
            logged.add(
                [
                    email_id,
                    at,
                    at,
                    account_id,
                    contact_id,
                    message_id,
                    direction,
                    rep_id if outbound else "\\N",
                    at,
                    "1" if opened else "0",
                ]
            )
            events.add(
                [
                    str(det_uuid("event", index, number)),
                    at,
                    at,
                    account_id,
                    contact_id,
                    "email",
                    at,
                    email_id,
                ]
            )
            if opened:
                open_at = ts(at_ts + rng.randint(60, 36_000))
                events.add(
                    [
                        str(det_uuid("open", index, number)),
                        open_at,
                        open_at,
                        account_id,
                        contact_id,
                        "open",
                        open_at,
                        email_id,
                    ]
                )
            written += 1
        if index % 10_000 == 0 and index:
            log(
                f"  {index:,} contacts' emails, {written:,} emails ({time.perf_counter() - started:.0f} s)"
            )
    for stream in (messages, logged, events):
        stream.close()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE crm_contact c SET last_activity_at = t.at FROM "
            "(SELECT contact_id, max(at) AS at FROM crm_timelineevent GROUP BY contact_id) t "
            "WHERE t.contact_id = c.id"
        )
    log(f"  emails: {time.perf_counter() - started:.0f} s; VACUUM ANALYZE")
    connection.ensure_connection()
    raw = connection.connection
    autocommit = raw.autocommit
    raw.autocommit = True
    try:
        raw.execute("VACUUM ANALYZE")
    finally:
        raw.autocommit = autocommit
    heavy = [str(c.pk) for c, n in zip(contact_rows, counts, strict=True) if n == HEAVY_EMAILS]
    typical = [str(c.pk) for c, n in zip(contact_rows, counts, strict=True) if 3 <= n <= 30]
    return {
        "contacts": contacts,
        "emails": written,
        "events": TimelineEvent.objects.count(),
        "load_seconds": round(time.perf_counter() - started),
        "user": str(users[1].pk),
        "heavy": heavy,
        "typical": rng.sample(typical, min(len(typical), 200)),
        "companies": rng.sample(companies, min(len(companies), 50)),
    }
