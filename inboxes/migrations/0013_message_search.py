"""Full-text search over stored messages on PostgreSQL (the inbox search at a million
messages; inboxes/search.py). Nothing on SQLite, which searches with a scan.

* ``conversations_message.search_vector``: a STORED generated column, so every way a
  row is written (the sync's COPY in core/bulk.py, the ``bulk_create`` fallback, an
  outbound message's ``create``, an update) keeps it current in the same statement,
  and no code path can forget it. It is not a model field: Django never writes it.
  It holds the words of the subject, the sender's name and address and the text
  twice: as written (the ``simple`` configuration: lower-cased, no stemming, what a
  word-prefix search needs) and stemmed in the message's language, from its
  ``Content-Language`` header (kept by the parser since this change), English when it
  has none or names a language PostgreSQL has no stemmer for here. Positions are
  stripped (nothing ranks or searches phrases), which halves the column. At most the
  first 100,000 characters of the text count: a tsvector must stay under 1 MB, and an
  INSERT must never fail on a huge message.
* A GIN index on it (``fastupdate``: new rows go to the pending list, merged by
  autovacuum, so a sync's batch pays little).
* pg_trgm GIN on ``UPPER(from_address)``, the expression Django's ``icontains``
  compares, for a part of a sender's address (``acme.com``, ``jan@acm``).
* ``message_search_query(term)``: the tsquery of one search term: every word of it as
  a prefix of a word as written, OR its stem in each language we stem in.

Adding a STORED generated column rewrites the table under an exclusive lock: on a
million messages (bench/inbox.py) this migration takes a few minutes, during which
syncs wait. Reversible: the column, the indexes and the function are dropped.
"""

from django.db import migrations

# Content-Language primary subtag -> PostgreSQL text search configuration.
LANGUAGES = {
    "da": "danish",
    "de": "german",
    "en": "english",
    "es": "spanish",
    "fi": "finnish",
    "fr": "french",
    "it": "italian",
    "nb": "norwegian",
    "nl": "dutch",
    "nn": "norwegian",
    "no": "norwegian",
    "pt": "portuguese",
    "sv": "swedish",
}
TEXT_LIMIT = 100_000

_WORDS = (
    "left(coalesce(subject, '') || ' ' || coalesce(from_name, '') || ' ' || "
    f"coalesce(from_address, '') || ' ' || coalesce(text, ''), {TEXT_LIMIT})"
)
_STEMMED = f"left(coalesce(subject, '') || ' ' || coalesce(text, ''), {TEXT_LIMIT})"
_LANGUAGE = "lower(split_part(headers ->> 'content-language', '-', 1))"


def _vector_sql() -> str:
    cases = " ".join(
        f"WHEN '{tag}' THEN to_tsvector('{config}'::regconfig, {_STEMMED})"
        for tag, config in LANGUAGES.items()
        if config != "english"
    )
    stemmed = f"CASE {_LANGUAGE} {cases} ELSE to_tsvector('english'::regconfig, {_STEMMED}) END"
    return f"strip(to_tsvector('simple'::regconfig, {_WORDS}) || {stemmed})"


def _query_function_sql() -> str:
    # One term -> its tsquery, or NULL when it has no word (then nothing matches).
    # The lexemes come from to_tsvector (the same parser and dictionaries as the
    # column) and are cast to tsquery as literals: to_tsquery would parse them again
    # and join a compound's parts with <-> (FOLLOWED BY), which never matches a
    # stripped vector.
    def lexemes(config: str, suffix: str) -> str:
        return (
            "(SELECT '(' || string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), "
            f"'''', '''''') || '''{suffix}', ' & ') || ')' "
            f"FROM unnest(to_tsvector('{config}'::regconfig, term)))"
        )

    parts = [lexemes("simple", ":*")] + [
        lexemes(config, "") for config in sorted(set(LANGUAGES.values()))
    ]
    values = ", ".join(f"({part})" for part in parts)
    return (
        "CREATE OR REPLACE FUNCTION message_search_query(term text) RETURNS tsquery "
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ "
        f"SELECT string_agg(DISTINCT part, ' | ')::tsquery FROM (VALUES {values}) AS p(part) "
        "$$"
    )


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    execute = schema_editor.execute
    execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    execute(_query_function_sql())
    execute(
        "ALTER TABLE conversations_message ADD COLUMN IF NOT EXISTS search_vector tsvector "
        f"GENERATED ALWAYS AS ({_vector_sql()}) STORED"
    )
    execute(
        "CREATE INDEX IF NOT EXISTS conversations_message_search ON conversations_message "
        "USING gin (search_vector)"
    )
    execute(
        "CREATE INDEX IF NOT EXISTS conversations_message_from_trgm ON conversations_message "
        'USING gin ((UPPER("from_address"::text)) gin_trgm_ops)'
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS conversations_message_from_trgm")
    schema_editor.execute("DROP INDEX IF EXISTS conversations_message_search")
    schema_editor.execute("ALTER TABLE conversations_message DROP COLUMN IF EXISTS search_vector")
    schema_editor.execute("DROP FUNCTION IF EXISTS message_search_query(text)")


class Migration(migrations.Migration):
    # The column rewrite and the index builds are one step each; not atomic, so a
    # failure leaves nothing half-built behind the IF NOT EXISTS guards.
    atomic = False

    dependencies = [("inboxes", "0012_push_and_watch")]

    operations = [migrations.RunPython(create, drop)]
