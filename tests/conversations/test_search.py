"""The inbox search (conversations/search.py over inboxes/search.py): one fixed corpus
and one table of expected results, checked on whichever database the suite runs on, so
the PostgreSQL run (full-text + trigram indexes) and the SQLite run (a scan) are held to
the same answers; what the ingest and a reply store is found; another account's mail
never is; odd input never errors."""

from __future__ import annotations

import pytest
from django.db import connection

from conversations.handling import conversation_reply
from conversations.models import Conversation
from conversations.selectors import conversation_list
from inboxes.models import Inbox, Mailbox, MailboxFolder, Message
from inboxes.providers.base import RawMessage
from inboxes.search import estimated_share, messages_matching, search_terms
from inboxes.search_index import messages_index_pending, messages_unindexed, search_indexed
from inboxes.sync.ingest import ingest_batch
from tests.support.conversations_factory import make_conversation
from tests.support.mail import make_email

pytestmark = pytest.mark.django_db

SUPPORT = "support@acme.example.com"

# key: (subject, sender name, sender address, text)
CORPUS = {
    "refund": (
        "Refund for order PK20481",
        "Jan de Vries",
        "jan.devries@acme-example.com",
        "Hello, I would like my money back for the broken kettle.",
    ),
    "invoice": (
        "Invoice question",
        "Maria Garcia",
        "maria.garcia@globalfoods.example",
        "The invoice total looks wrong; please check the VAT.",
    ),
    "parcel": (
        "Where is my parcel",
        "Peter Okafor",
        "p.okafor@mailbox.example.org",
        "Tracking number ZX-99812 shows no movement since Monday.",
    ),
    "kettle": (
        "Kettle warranty",
        "Anna Berg",
        "anna@acme-example.com",
        "My kettle stopped working after two weeks.",
    ),
}

# query -> the corpus conversations it finds, on PostgreSQL and SQLite alike.
EXPECTED = {
    "kettle": {"refund", "kettle"},  # a word, in a text and a subject
    "Kettle warranty": {"kettle"},  # two words
    "money kettle": {"refund"},  # two words of one message, apart
    "money, kettle!": {"refund"},  # punctuation around words is not part of them
    "kett": {"refund", "kettle"},  # the start of a word
    "invo": {"invoice"},
    "REFUND": {"refund"},  # case
    "rEfUnD pk204": {"refund"},
    "PK20481": {"refund"},  # an order number
    "20481": set(),  # the middle of a word is not the start of one
    "arcel": set(),
    "zx-99812": {"parcel"},
    "jan.devries@acme-example.com": {"refund"},  # an address
    "acme-example.com": {"refund", "kettle"},  # part of an address
    "globalfoods": {"invoice"},
    "okafor@mailbox": {"parcel"},
    "Garcia": {"invoice"},  # a name
    "Maria Garcia": {"invoice"},
    "peter okafor": {"parcel"},
    "the": {"refund", "invoice"},  # a stop word is still a word here
    "kettle invoice": set(),  # no message has both
    "nowhere": set(),
}


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address=SUPPORT,
        canonical_address=SUPPORT,
        imap_host="imap.acme.example.com",
        status="connected",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


@pytest.fixture
def corpus(support) -> dict[str, str]:
    made = {}
    for key, (subject, name, address, text) in CORPUS.items():
        conversation = make_conversation(
            support, subject=subject, sender_name=name, sender=address, text=text
        )
        made[str(conversation.pk)] = key
    return made


def found(user, query: str, corpus: dict[str, str]) -> set[str]:
    return {
        corpus[str(pk)] for pk in conversation_list(user, search=query).values_list("pk", flat=True)
    }


@pytest.mark.parametrize("query", list(EXPECTED))
@pytest.mark.parametrize("plan", ["messages first", "list first", "too many for messages first"])
@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "not indexed yet"])
def test_a_fixed_corpus_gives_the_same_conversations_on_every_database(
    member, corpus, query, plan, indexed, monkeypatch
):
    # PostgreSQL's two plans (conversations/search.py) find the same: a common word
    # walks the list; a search that matches more messages than the probe reads too.
    # And the same before the messages' search column is filled (a scan of the rows
    # stored a moment ago) as after (inboxes/search_index.py).
    if indexed:
        messages_index_pending()
    assert messages_unindexed() == (0 if indexed else len(CORPUS) * search_indexed())
    if plan == "list first":
        monkeypatch.setattr("conversations.search.WALK_SHARE", -1.0)
    elif plan == "too many for messages first":
        monkeypatch.setattr("conversations.search.PROBE_MESSAGES", 1)
    assert found(member, query, corpus) == EXPECTED[query], connection.vendor


def test_an_empty_search_is_no_search(member, corpus):
    assert found(member, "", corpus) == set(CORPUS)
    assert found(member, "   ", corpus) == set(CORPUS)


ODD_QUERIES = [
    '"',
    "'",
    "O'Brien",
    ":",
    "refund:",
    "kettle:*",
    "&",
    "|",
    "!",
    "!refund",
    "\\",
    "kettle\\",
    "a & b | !c",
    "(kettle",
    "<->",
    "*",
    "%",
    "_",
    "%_%",
    "'; DROP TABLE conversations_message; --",
    "\x00kettle",
    "x" * 10_000,
    "kettle " * 500,
    "ü" * 70,
]


@pytest.mark.parametrize("query", ODD_QUERIES, ids=range(len(ODD_QUERIES)))
def test_special_characters_and_very_long_queries_never_error(member, member_api, corpus, query):
    found(member, query, corpus)  # no error
    response = member_api.get("/api/v1/conversations/", {"search": query.replace("\x00", "")})
    assert response.status_code == 200


def test_punctuation_is_trimmed_and_a_query_without_words_finds_nothing(member, corpus):
    assert search_terms("  (refund),  REFUND  'kettle' ") == ["refund", "kettle"]
    assert search_terms("& | ! \\ :") == []
    assert len(search_terms(" ".join(f"w{i}" for i in range(50)))) == 8
    assert found(member, "refund:", corpus) == {"refund"}
    assert found(member, "kettle " * 500, corpus) == {"refund", "kettle"}
    assert found(member, "& | !", corpus) == set()


def test_another_accounts_mail_never_matches(member, outsider, support, corpus):
    other_mailbox = Mailbox.objects.create(
        account=outsider.account,
        kind="team",
        address="help@globex.example.com",
        canonical_address="help@globex.example.com",
    )
    other_inbox = Inbox.objects.create(account=outsider.account, name="Help", mailbox=other_mailbox)
    theirs = make_conversation(
        other_inbox, subject="Kettle refund", sender="jan.devries@acme-example.com"
    )

    assert found(member, "kettle", corpus) == {"refund", "kettle"}
    assert found(member, "jan.devries", corpus) == {"refund"}
    assert list(conversation_list(outsider, search="kettle").values_list("pk", flat=True)) == [
        theirs.pk
    ]
    # The engine's own scope: an account's messages only; and the PostgreSQL
    # statistics' estimate never errors (0 before an ANALYZE, or on SQLite).
    assert 0.0 <= estimated_share("kettle refund") <= 1.0
    mine = messages_matching("kettle", messages=Message.objects.filter(account=support.account))
    assert mine.count() == 2


def test_a_synced_message_is_found_by_a_word_of_its_body(member, support):
    folder = MailboxFolder.objects.create(mailbox=support.mailbox, role="inbox", name="INBOX")
    raw = make_email(
        sender="Quinn Lopez <quinn@lopez.example.net>",
        to=SUPPORT,
        subject="Broken hinge",
        body="The hinge of the cupboard door snapped off yesterday.\n",
    )
    ingest_batch(
        mailbox=support.mailbox,
        folder=folder,
        raws=[RawMessage(key="1:1", raw=raw)],
        cursor={},
        backfill=False,
    )
    [conversation] = Conversation.objects.filter(inbox=support)

    for query in ("cupboard", "snapped door", "cupb", "lopez.example", "Quinn", "hinge"):
        assert list(conversation_list(member, search=query).values_list("pk", flat=True)) == [
            conversation.pk
        ], query


def test_a_message_stored_by_the_bulk_create_fallback_is_found(member, support, monkeypatch):
    # core/bulk.py falls back to bulk_create when COPY cannot take the rows (and on
    # SQLite always): found before and after the search column is filled.
    monkeypatch.setattr("core.bulk._copy_types", lambda model, connection: None)
    folder = MailboxFolder.objects.create(mailbox=support.mailbox, role="inbox", name="INBOX")
    raw = make_email(sender="zed@zed.example.com", to=SUPPORT, body="Thermostat is blinking.\n")
    ingest_batch(
        mailbox=support.mailbox,
        folder=folder,
        raws=[RawMessage(key="1:1", raw=raw)],
        cursor={},
        backfill=False,
    )
    assert conversation_list(member, search="thermostat").count() == 1
    messages_index_pending()
    assert conversation_list(member, search="thermostat").count() == 1


def test_an_outbound_reply_is_found(member, support):
    conversation = make_conversation(support, subject="Lamp", text="The lamp flickers.")
    assert conversation_list(member, search="replacement").count() == 0

    conversation_reply(
        actor=member, conversation=conversation, text="We will send a replacement bulb."
    )

    assert list(
        conversation_list(member, search="replacement bulb").values_list("pk", flat=True)
    ) == [conversation.pk]


def test_a_conversation_an_agent_started_is_found_by_its_customers_address(member, support):
    from conversations.outbound import conversation_start

    started = conversation_start(
        actor=member,
        inbox=support,
        to=["olga.wojcik@client.example.org"],
        subject="Your quote",
        text="Here is the quote we talked about.",
    )
    for query in ("olga.wojcik@client.example.org", "OLGA.WOJCIK@client", "client.example.org"):
        assert list(conversation_list(member, search=query).values_list("pk", flat=True)) == [
            started.pk
        ], query


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="stemming is PostgreSQL's (to_tsvector per language); SQLite matches the start "
    "of a word only",
)
def test_postgresql_finds_other_forms_of_a_word_in_the_messages_language(member, support):
    english = make_conversation(support, subject="Help", text="I run every morning.")
    folder = MailboxFolder.objects.create(mailbox=support.mailbox, role="inbox", name="INBOX")
    # (make_email's set_content drops Content-* headers given before it.)
    raw = b"Content-Language: de-DE\n" + make_email(
        sender="hans@firma.example.de",
        to=SUPPORT,
        subject="Frage",
        body="Die Häuser sind zu teuer.\n",
    )
    ingest_batch(
        mailbox=support.mailbox,
        folder=folder,
        raws=[RawMessage(key="1:1", raw=raw)],
        cursor={},
        backfill=False,
    )
    german = Conversation.objects.get(inbox=support, subject="Frage")
    assert messages_index_pending() == (2, False)

    def pks(query: str) -> set:
        return set(conversation_list(member, search=query).values_list("pk", flat=True))

    assert pks("running") == {english.pk}  # english: running -> run
    assert pks("runs") == {english.pk}
    assert pks("Haus") == {german.pk}  # german: Häuser -> haus
    assert pks("Häusern") == {german.pk}


def test_a_huge_message_of_distinct_words_is_stored_and_found_by_its_start(member, support):
    # A tsvector must stay under 1 MB: the column takes the first 100,000 characters
    # of the text, so even 130,000 characters of distinct non-ASCII words insert
    # (on PostgreSQL an error there would fail the sync's whole batch).
    words = " ".join(f"жз{n:05x}" for n in range(16_000))  # 128,000 characters
    conversation = make_conversation(support, subject="Log dump", text=f"firstword {words}")

    for _state in ("not indexed yet", "indexed"):
        assert conversation_list(member, search="firstword").get() == conversation
        assert conversation_list(member, search="жз00a1f").get() == conversation
        # past 100,000 characters
        assert conversation_list(member, search="жз03e7f").count() == 0
        messages_index_pending()
