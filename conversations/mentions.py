"""@mentions in internal notes: who a handle names, who may be mentioned, and what
the note box's autocomplete offers.

A handle is ``@`` and the local part of someone's email address (``@ann``), their
whole address (``@ann@acme.example.com``) or their first name (``@Ann``), among the
account's active people. The address wins over the local part, which wins over the
first name; a handle that names nobody, or two people at one of those steps, is not a
mention (and is never highlighted). Only people who can see the conversation's inbox
may be mentioned: naming anyone else refuses the note, saying who and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from accounts.models import User
from conversations.selectors import people_who_see
from core.errors import Invalid
from core.web import names_text
from inboxes.models import Inbox

MENTION = re.compile(r"(?<![\w.])@([\w.+-]+(?:@[\w-]+(?:\.[\w-]+)+)?)")
SUGGESTIONS = 8


def handle_key(token: str) -> str:
    """A handle as compared and stored: lower case, without a sentence's full stop."""
    return token.lower().rstrip(".")


def first_name(user: User) -> str:
    return user.full_name.split()[0] if user.full_name.strip() else user.email.split("@")[0]


def _local(user: User) -> str:
    return user.email.lower().split("@")[0]


def person_named(token: str, people: Sequence[User]) -> User | None:
    """The one person ``token`` names among ``people``, or None (nobody, or ambiguous)."""
    key = handle_key(token)
    for matches in (
        [u for u in people if u.email.lower() == key],
        [u for u in people if _local(u) == key],
        [u for u in people if u.full_name.strip() and first_name(u).lower() == key],
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            return None  # two people answer to it: not a mention
    return None


def account_people(account_id: Any) -> list[User]:
    return list(User.objects.filter(account_id=account_id, is_active=True))


def mentions_in(text: str, *, account_id: Any) -> dict[str, User]:
    """Each handle of ``text`` that names one person, with that person."""
    tokens = {handle_key(m.group(1)) for m in MENTION.finditer(text or "")}
    if not tokens:
        return {}
    people = account_people(account_id)
    found = {}
    for token in sorted(tokens):
        person = person_named(token, people)
        if person is not None:
            found[token] = person
    return found


def check_can_be_mentioned(people: Iterable[User], inbox: Inbox) -> None:
    """Refuse mentions of people who cannot see the inbox (they could not open the
    conversation a notification would send them to)."""
    seeing = {user.pk for user in people_who_see(inbox)}
    refused = []
    for person in people:
        if person.pk not in seeing and first_name(person) not in refused:
            refused.append(first_name(person))
    if not refused:
        return
    if len(refused) == 1:
        sentence = (
            f"{refused[0]} can't see this inbox. Share the inbox with their team first, "
            "or remove the mention."
        )
    else:
        sentence = (
            f"{names_text(refused)} can't see this inbox. Share the inbox with their teams "
            "first, or remove the mentions."
        )
    raise Invalid(sentence, errors={"text": [sentence]})


def handle_for(user: User, people: Sequence[User]) -> str:
    """What the autocomplete writes after ``@``: the local part when it names only
    this person, else the whole address."""
    local = _local(user)
    if MENTION.fullmatch("@" + local) and person_named(local, people) == user:
        return local
    return user.email.lower()


def mention_suggestions(inbox: Inbox, query: str = "") -> list[dict[str, str]]:
    """The people who can see the inbox whose name or address starts with ``query``
    (or has a word that does), for the note box's autocomplete."""
    people = account_people(inbox.account_id)
    query = query.strip().lower().lstrip("@")
    out = []
    for person in people_who_see(inbox):
        words = [person.email.lower(), *person.full_name.lower().split()]
        if query and not any(word.startswith(query) for word in words):
            continue
        out.append(
            {
                "id": str(person.pk),
                "handle": handle_for(person, people),
                "name": person.display_name,
                "email": person.email,
            }
        )
        if len(out) == SUGGESTIONS:
            break
    return out
