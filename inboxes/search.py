"""Which stored messages a search finds: one meaning, two engines.

A search is split into terms at whitespace; each term loses the punctuation around it
(``"refund,"`` is ``refund``), and a term left without a letter or digit is dropped.
A message matches when it matches every term, and it matches a term when

* a word of its subject, its sender's name or address, or its text (the first
  100,000 characters) starts with the term, in any case (``refu`` finds "Refund"), or
* the term has 3 characters or more and is part of its sender's address
  (``acme.com`` finds ``jan@acme.com``).

PostgreSQL (migration inboxes/0013_message_search) answers from indexes: the column
``search_vector`` (GIN) for the words, the trigram index on the sender's address for
the parts of it; it also finds other forms of a word in the message's language
(stemming: ``running`` finds "run", English unless the message's Content-Language names
another language). A message is indexed a moment after it is stored
(inboxes/search_index.py); until then it is read as SQLite reads every message, so it
is found at once, by the start of a word. SQLite scans: a regular expression for "a
word starts with", and ``icontains`` for the address. The words are cut the way each
engine's tokenizer cuts them, so they can differ at the edges (an address inside the text is one word on
PostgreSQL; ``jan@acme.com`` in a body is found by ``acme`` on SQLite only); on plain
words, names, numbers and senders' addresses both give the same messages
(tests/conversations/test_search.py runs one corpus on both).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.models import BooleanField, Expression, F, Q, QuerySet
from django.db.models.functions import Left

from inboxes.models import Message

# Bounds on what one search may ask of the database.
MAX_TERMS = 8
MAX_TERM_CHARS = 64
# Shorter terms would need every trigram row (pg_trgm has nothing to look up).
MIN_ADDRESS_PART = 3
# As in the migration: the part of the text that is searchable.
TEXT_LIMIT = 100_000

_EDGE = re.compile(r"^\W+|\W+$")
_WORD = re.compile(r"\w")


def search_terms(text: str) -> list[str]:
    """The terms of a search as the user typed it (see the module's docstring)."""
    terms: list[str] = []
    for raw in text.split():
        term = _EDGE.sub("", raw[:MAX_TERM_CHARS])
        if term and _WORD.search(term) and term.lower() not in (t.lower() for t in terms):
            terms.append(term)
    return terms[:MAX_TERMS]


class _SearchColumn(Expression):
    """A condition on the message table's ``search_vector`` (whatever alias a subquery
    gives the table). The column is not a model field so that Django never writes
    it; it is reached through the row's primary key column's alias."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, pk: Any = None) -> None:
        super().__init__()
        # F("pk") until resolved, then the Col whose alias the subquery gave the table.
        self.pk: Any = pk if pk is not None else F("pk")

    def get_source_expressions(self) -> list[Any]:
        return [self.pk]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        (self.pk,) = exprs

    def column(self, compiler: Any) -> str:
        return f"{compiler.quote_name_unless_alias(self.pk.alias)}.search_vector"


class _WordsMatch(_SearchColumn):
    """``search_vector @@ message_search_query(term)``."""

    def __init__(self, term: str, pk: Any = None) -> None:
        super().__init__(pk)
        self.term = term

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        return f"({self.column(compiler)} @@ message_search_query(%s))", (self.term,)


class _NotIndexedYet(_SearchColumn):
    """``search_vector IS NULL``: stored, and waiting for inboxes/search_index.py."""

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        return f"({self.column(compiler)} IS NULL)", ()


def _words_start_with(term: str) -> Q:
    # (?<!\w): at the start of the field or after a character that is not a word's.
    pattern = r"(?<!\w)" + re.escape(term)
    return (
        Q(subject__iregex=pattern)
        | Q(from_name__iregex=pattern)
        | Q(from_address__iregex=pattern)
        | Q(search_text__iregex=pattern)
    )


def _term_matches(term: str, words: Q) -> Q:
    if len(term) >= MIN_ADDRESS_PART:
        # UPPER(from_address) LIKE UPPER('%term%'): the trigram index's expression.
        # First: where the trigram index makes PostgreSQL recheck a row, the cheap
        # comparison spares it reading the row's search_vector when it matches.
        return Q(from_address__icontains=term) | words
    return words


def messages_matching(text: str, *, messages: QuerySet[Message] | None = None) -> QuerySet[Message]:
    """The messages (of ``messages``, default all: scope them to an account) that a
    search finds; none when it has no term (only punctuation)."""
    messages = Message.objects.all() if messages is None else messages
    terms = search_terms(text)
    if not terms:
        return messages.none()
    messages = messages.alias(search_text=Left("text", TEXT_LIMIT))
    scanned = Q()
    for term in terms:
        scanned &= _term_matches(term, _words_start_with(term))
    if connections[messages.db].vendor != "postgresql":
        return messages.filter(scanned)
    indexed = Q()
    for term in terms:
        indexed &= _term_matches(term, Q(_WordsMatch(term)))
    # Every term from the indexes (nearly every row), or, for a row stored seconds ago
    # and not indexed yet, every term by a scan of its fields (a partial index finds
    # such rows). Kept apart, not OR-ed per term: PostgreSQL then still intersects the
    # terms' bitmaps (a per-term OR made it read every row matching the commonest
    # term: 235 ms instead of 46 for a customer's full name at a million messages).
    return messages.filter(indexed | (Q(_NotIndexedYet()) & scanned))


# --- How common a search is (PostgreSQL's statistics) ---------------------------------------------

_STATS_SECONDS = 600.0
_stats: dict[str, tuple[float, dict[str, float]]] = {}


def _common_lexemes(using: str) -> dict[str, float]:
    """ANALYZE's most common lexemes of ``search_vector`` and the share of messages
    holding each (an empty dict before the first ANALYZE), kept for 10 minutes."""
    fetched = _stats.get(using)
    if fetched is not None and time.monotonic() - fetched[0] < _STATS_SECONDS:
        return fetched[1]
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
            "WHERE tablename = 'conversations_message' AND attname = 'search_vector'"
        )
        row = cursor.fetchone()
    lexemes = dict(zip(row[0], row[1], strict=False)) if row and row[0] else {}
    _stats[using] = (time.monotonic(), lexemes)
    return lexemes


def estimated_share(text: str, *, using: str = "default") -> float:
    """About what share of all stored messages the words of a search match, from
    PostgreSQL's statistics: the terms' shares multiplied, a term's share the sum
    over the common lexemes it starts. A word that is not among the common ones
    counts as 0 (the caller bounds what it then reads). 0.0 on SQLite."""
    terms = search_terms(text)
    if connections[using].vendor != "postgresql" or not terms:
        return 0.0
    common = _common_lexemes(using)
    if not common:
        return 0.0
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT array(SELECT lexeme FROM unnest(to_tsvector('simple'::regconfig, t))) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS q(t, n) ORDER BY n",
            [terms],
        )
        per_term = [row[0] for row in cursor.fetchall()]
    share = 1.0
    for lexemes in per_term:
        starts = [
            min(
                1.0,
                sum(
                    freq
                    for common_lexeme, freq in common.items()
                    if common_lexeme.startswith(lexeme)
                ),
            )
            for lexeme in lexemes
        ]
        share *= min(starts, default=0.0)
    return share
