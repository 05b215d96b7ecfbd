"""Which stored messages a search finds: one meaning, two engines.

A search is split into terms at whitespace; each term loses the punctuation around it
(``"refund,"`` is ``refund``), and a term left without a letter or digit is dropped.
A message matches when it matches every term, and it matches a term when

* a word of its subject, its sender's name or address, or its text (the first
  100,000 characters) starts with the term, in any case (``refu`` finds "Refund"), or
* the term has 3 characters or more and is part of its sender's address
  (``acme.com`` finds ``jan@acme.com``).

PostgreSQL (migration inboxes/0013_message_search) answers from indexes: the generated
column ``search_vector`` (GIN) for the words, the trigram index on the sender's address
for the parts of it; it also finds other forms of a word in the message's language
(stemming: ``running`` finds "run", English unless the message's Content-Language names
another language). SQLite scans: a regular expression for "a word starts with", and
``icontains`` for the address. The words are cut the way each engine's tokenizer cuts
them, so they can differ at the edges (an address inside the text is one word on
PostgreSQL; ``jan@acme.com`` in a body is found by ``acme`` on SQLite only); on plain
words, names, numbers and senders' addresses both give the same messages
(tests/conversations/test_search.py runs one corpus on both).
"""

from __future__ import annotations

import re
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


class _WordsMatch(Expression):
    """``search_vector @@ message_search_query(term)`` on the message table (whatever
    alias a subquery gives it). The column is not a model field so that Django never
    writes it; it is reached through the row's primary key column's alias."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, term: str, pk: Any = None) -> None:
        super().__init__()
        self.term = term
        # F("pk") until resolved, then the Col whose alias the subquery gave the table.
        self.pk: Any = pk if pk is not None else F("pk")

    def get_source_expressions(self) -> list[Any]:
        return [self.pk]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        (self.pk,) = exprs

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        alias = compiler.quote_name_unless_alias(self.pk.alias)
        return f"({alias}.search_vector @@ message_search_query(%s))", (self.term,)


def _words_start_with(term: str) -> Q:
    # (?<!\w): at the start of the field or after a character that is not a word's.
    pattern = r"(?<!\w)" + re.escape(term)
    return (
        Q(subject__iregex=pattern)
        | Q(from_name__iregex=pattern)
        | Q(from_address__iregex=pattern)
        | Q(search_text__iregex=pattern)
    )


def _term_matches(term: str, postgres: bool) -> Q:
    words = Q(_WordsMatch(term)) if postgres else _words_start_with(term)
    if len(term) >= MIN_ADDRESS_PART:
        # UPPER(from_address) LIKE UPPER('%term%'): the trigram index's expression.
        return words | Q(from_address__icontains=term)
    return words


def messages_matching(text: str, *, messages: QuerySet[Message] | None = None) -> QuerySet[Message]:
    """The messages (of ``messages``, default all: scope them to an account) that a
    search finds; none when it has no term (only punctuation)."""
    messages = Message.objects.all() if messages is None else messages
    terms = search_terms(text)
    if not terms:
        return messages.none()
    postgres = connections[messages.db].vendor == "postgresql"
    if not postgres:
        messages = messages.alias(search_text=Left("text", TEXT_LIMIT))
    for term in terms:
        messages = messages.filter(_term_matches(term, postgres))
    return messages
