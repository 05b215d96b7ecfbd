"""Full-text search over stored messages on PostgreSQL (the inbox search at a million
messages; inboxes/search.py). Nothing on SQLite, which searches with a scan.

* ``conversations_message.search_vector``: a nullable tsvector, filled right after a
  batch of messages commits (inboxes/search_index.py: a task the ingest queues, and
  beat's sweep for anything else), not while the batch inserts: computing it costs
  PostgreSQL about 1 ms per message, which doubled a sync's time to store new mail.
  It is not a model field: Django never writes it. ``message_search_vector(...)``
  holds what it is: the words of the subject, the sender's name and address and the
  text twice: as written (the ``simple`` configuration: lower-cased, no stemming,
  what a word-prefix search needs) and stemmed in the message's language, from its
  ``Content-Language`` header, English when it has none or names a language
  PostgreSQL has no stemmer for here. Positions are stripped (nothing ranks or
  searches phrases), which halves the column. At most the first 100,000 characters of
  the text count: a tsvector must stay under 1 MB.
* A row whose vector is NULL is not indexed yet; the search reads such rows with a
  scan of their fields (the partial index ``conversations_message_unindexed`` finds
  them), so a message is found from the moment it is stored.
* A trigger empties the vector when a row's searched fields change, so the sweep
  computes it again.
* A GIN index on it (``fastupdate``), and pg_trgm GIN on ``UPPER(from_address)``, the
  expression Django's ``icontains`` compares, for a part of a sender's address
  (``acme.com``, ``jan@acm``).
* ``message_search_query(term)``: the tsquery of one search term: every word of it as
  a prefix of a word as written, OR its stem in each language we stem in.

Adding a nullable column does not rewrite the table; on an install with messages
already stored, every one starts unindexed and the sweep indexes them in batches
(``manage.py index_messages`` does it at once). Building the two GIN indexes reads the
table once. Reversible: the trigger, the column, the indexes and the functions are
dropped.
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


def _vector_function_sql() -> str:
    cases = " ".join(
        f"WHEN '{tag}' THEN to_tsvector('{config}'::regconfig, {_STEMMED})"
        for tag, config in LANGUAGES.items()
        if config != "english"
    )
    stemmed = f"CASE {_LANGUAGE} {cases} ELSE to_tsvector('english'::regconfig, {_STEMMED}) END"
    return (
        "CREATE OR REPLACE FUNCTION message_search_vector(subject text, from_name text, "
        "from_address text, text text, headers jsonb) RETURNS tsvector "
        "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
        f"SELECT strip(to_tsvector('simple'::regconfig, {_WORDS}) || {stemmed}) $$"
    )


# Changed searched fields: the vector is computed again (by the sweep).
_STALE_FUNCTION = (
    "CREATE OR REPLACE FUNCTION message_search_stale() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN NEW.search_vector := NULL; RETURN NEW; END $$"
)
_STALE_TRIGGER = (
    "CREATE TRIGGER conversations_message_search_stale BEFORE UPDATE OF subject, from_name, "
    "from_address, text, headers ON conversations_message FOR EACH ROW WHEN ("
    "OLD.subject IS DISTINCT FROM NEW.subject OR OLD.from_name IS DISTINCT FROM NEW.from_name "
    "OR OLD.from_address IS DISTINCT FROM NEW.from_address OR OLD.text IS DISTINCT FROM "
    "NEW.text OR OLD.headers IS DISTINCT FROM NEW.headers) EXECUTE FUNCTION message_search_stale()"
)


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
    execute(_vector_function_sql())
    execute("ALTER TABLE conversations_message ADD COLUMN IF NOT EXISTS search_vector tsvector")
    with schema_editor.connection.cursor() as cursor:
        # A database that ran this migration's first draft has the column generated
        # (computed in every INSERT): made a plain one, its values kept.
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'conversations_message' "
            "AND column_name = 'search_vector' AND is_generated = 'ALWAYS'"
        )
        if cursor.fetchone():
            execute("ALTER TABLE conversations_message ALTER COLUMN search_vector DROP EXPRESSION")
    execute(_STALE_FUNCTION)
    execute("DROP TRIGGER IF EXISTS conversations_message_search_stale ON conversations_message")
    execute(_STALE_TRIGGER)
    execute(
        "CREATE INDEX IF NOT EXISTS conversations_message_search ON conversations_message "
        "USING gin (search_vector)"
    )
    execute(
        "CREATE INDEX IF NOT EXISTS conversations_message_unindexed ON conversations_message "
        "(id) WHERE search_vector IS NULL"
    )
    execute(
        "CREATE INDEX IF NOT EXISTS conversations_message_from_trgm ON conversations_message "
        'USING gin ((UPPER("from_address"::text)) gin_trgm_ops)'
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    execute = schema_editor.execute
    execute("DROP TRIGGER IF EXISTS conversations_message_search_stale ON conversations_message")
    execute("DROP FUNCTION IF EXISTS message_search_stale()")
    execute("DROP INDEX IF EXISTS conversations_message_from_trgm")
    execute("DROP INDEX IF EXISTS conversations_message_unindexed")
    execute("DROP INDEX IF EXISTS conversations_message_search")
    execute("ALTER TABLE conversations_message DROP COLUMN IF EXISTS search_vector")
    execute("DROP FUNCTION IF EXISTS message_search_vector(text, text, text, text, jsonb)")
    execute("DROP FUNCTION IF EXISTS message_search_query(text)")


class Migration(migrations.Migration):
    # Each step on its own; not atomic, so a failure leaves nothing half-built behind
    # the IF NOT EXISTS guards.
    atomic = False

    dependencies = [("inboxes", "0012_push_and_watch")]

    operations = [migrations.RunPython(create, drop)]
