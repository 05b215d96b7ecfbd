"""The contacts API of DESIGN.md section 4: shapes, codes, search, paging, timeline, notes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm.models import Contact, Note, TimelineEvent
from crm.timeline import timeline_add
from tests.support.crm_factory import make_contact, make_logged_email

pytestmark = pytest.mark.django_db

CONTACT_FIELDS = {"id", "email", "name", "company", "owner", "created_at", "last_activity_at"}


def test_a_member_creates_a_contact_and_reads_it_back(member_api, member, admin):
    response = member_api.post(
        "/api/v1/contacts/",
        {
            "email": "Dana@Example.com",
            "name": "Dana Scully",
            "company": "FBI",
            "owner": str(admin.pk),
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert CONTACT_FIELDS | {"bounced_at"} <= body.keys()
    assert (body["email"], body["name"], body["company"]) == (
        "Dana@Example.com",
        "Dana Scully",
        "FBI",
    )
    assert body["owner"] == str(admin.pk)
    assert body["last_activity_at"] is None and body["bounced_at"] is None
    assert member_api.get(f"/api/v1/contacts/{body['id']}/").json()["email"] == "Dana@Example.com"


def test_a_second_contact_with_the_same_canonical_address_is_contact_exists(member_api, account):
    first = make_contact(account, "dana.scully@gmail.com")

    response = member_api.post(
        "/api/v1/contacts/", {"email": "DanaScully+crm@googlemail.com"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["code"] == "contact_exists"
    assert response.json()["contact"] == {"id": str(first.pk)}
    assert Contact.objects.count() == 1


def test_an_invalid_address_is_invalid_on_the_email_field(member_api):
    response = member_api.post("/api/v1/contacts/", {"email": "not an address"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "email" in response.json()["errors"]
    assert not Contact.objects.exists()


def test_an_owner_from_another_account_is_refused(member_api, outsider):
    response = member_api.post(
        "/api/v1/contacts/", {"email": "x@example.com", "owner": str(outsider.pk)}, format="json"
    )

    assert response.status_code == 400
    assert "owner" in response.json()["errors"]
    assert not Contact.objects.exists()


def test_another_accounts_contact_is_not_found_for_every_verb(outsider_api, account):
    contact = make_contact(account, "dana@example.com")
    base = f"/api/v1/contacts/{contact.pk}/"

    for method, url in (
        ("get", base),
        ("patch", base),
        ("delete", base),
        ("get", base + "timeline/"),
        ("get", base + "notes/"),
        ("post", base + "notes/"),
    ):
        response = getattr(outsider_api, method)(url, {"text": "hi"}, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["code"] == "not_found"
    assert outsider_api.get("/api/v1/contacts/").json()["results"] == []
    assert Contact.objects.filter(pk=contact.pk).exists()
    assert not Note.objects.exists()


def test_patch_changes_the_fields_and_recanonicalises_the_address(member_api, account, member):
    contact = make_contact(account, "dana@example.com", name="Dana")
    make_contact(account, "fox@example.com")

    response = member_api.patch(
        f"/api/v1/contacts/{contact.pk}/",
        {"email": "Dana.Scully@Example.COM", "company": "FBI", "owner": str(member.pk)},
        format="json",
    )

    assert response.status_code == 200, response.json()
    contact.refresh_from_db()
    assert (contact.email, contact.canonical_email) == (
        "Dana.Scully@Example.COM",
        "dana.scully@example.com",
    )
    assert (contact.name, contact.company, contact.owner) == ("Dana", "FBI", member)

    clash = member_api.patch(
        f"/api/v1/contacts/{contact.pk}/", {"email": "FOX@example.com"}, format="json"
    )
    assert clash.status_code == 409
    assert clash.json()["code"] == "contact_exists"
    contact.refresh_from_db()
    assert contact.canonical_email == "dana.scully@example.com"

    cleared = member_api.patch(f"/api/v1/contacts/{contact.pk}/", {"owner": None}, format="json")
    assert cleared.json()["owner"] is None


def test_delete_removes_the_contact_and_its_timeline(member_api, account):
    contact = make_contact(account, "dana@example.com")
    make_logged_email(contact)

    response = member_api.delete(f"/api/v1/contacts/{contact.pk}/")

    assert response.status_code == 204
    assert not Contact.objects.exists()
    assert not TimelineEvent.objects.exists()


def test_search_matches_name_email_and_company_in_any_case(member_api, account):
    make_contact(account, "dana@fbi.example.com", name="Dana Scully", company="FBI")
    make_contact(account, "fox@example.com", name="Fox Mulder", company="Bureau")
    make_contact(account, "walter@skinner.example.com", name="Walter", company="Assistant Director")

    def found(text):
        body = member_api.get("/api/v1/contacts/", {"search": text}).json()
        return sorted(c["email"] for c in body["results"])

    assert found("scul") == ["dana@fbi.example.com"]
    assert found("SKINNER") == ["walter@skinner.example.com"]
    assert found("bureau") == ["fox@example.com"]
    assert found("example") == [
        "dana@fbi.example.com",
        "fox@example.com",
        "walter@skinner.example.com",
    ]
    assert found("nobody") == []


def test_the_list_is_newest_first_and_pages_with_a_cursor(member_api, account):
    made = [make_contact(account, f"c{n}@example.com") for n in range(7)]
    # Two of them share a creation time: the id settles the order.
    now = timezone.now()
    for n, contact in enumerate(made):
        Contact.objects.filter(pk=contact.pk).update(created_at=now - timedelta(minutes=n // 2))

    seen, url = [], "/api/v1/contacts/?page_size=3"
    while url:
        body = member_api.get(url).json()
        seen += [c["id"] for c in body["results"]]
        url = body["next"]

    expected = [str(c.pk) for c in Contact.objects.order_by("-created_at", "-id")]
    assert seen == expected and len(set(seen)) == 7


def test_a_cursor_that_is_not_ours_is_invalid(member_api):
    response = member_api.get("/api/v1/contacts/", {"cursor": "garbage"})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_the_timeline_is_newest_first_pages_over_equal_times_and_costs_fixed_queries(
    member_api, account, member
):
    contact = make_contact(account, "dana@example.com")
    start = timezone.now() - timedelta(days=3)
    emails = [
        make_logged_email(contact, subject=f"Step {n}", at=start + timedelta(hours=n), opens=n)
        for n in range(6)
    ]
    # An open and a click at the very same moment as the last email
    last = emails[-1]
    timeline_add(contact, "open", at=last.at, email=last, detail={"machine": False})
    timeline_add(contact, "click", at=last.at, email=last, detail={"url": "https://example.com/"})
    member_api.post(f"/api/v1/contacts/{contact.pk}/notes/", {"text": "Called her."}, format="json")

    first = member_api.get(f"/api/v1/contacts/{contact.pk}/timeline/?page_size=4").json()
    events = list(first["results"])
    url = first["next"]
    while url:
        body = member_api.get(url).json()
        events += body["results"]
        url = body["next"]

    assert len(events) == 9 and len({e["id"] for e in events}) == 9
    assert events[0]["type"] == "note"
    assert events[0]["email"] is None
    assert events[0]["detail"]["text"] == "Called her."
    ats = [e["at"] for e in events]
    assert ats == sorted(ats, reverse=True)
    expected_ids = [
        str(pk) for pk in TimelineEvent.objects.order_by("-at", "-id").values_list("pk", flat=True)
    ]
    assert [e["id"] for e in events] == expected_ids
    email_event = next(
        e for e in events if e["type"] == "email" and e["email"]["subject"] == "Step 5"
    )
    assert {"id", "type", "at", "email", "detail"} <= email_event.keys()
    email = email_event["email"]
    assert email["direction"] == "outbound"
    assert email["delivery"]["state"] == "sent"
    assert email["tracking"] == {"opens": 5, "clicks": 0, "machine_opens": 0}
    assert email["from"]["address"] == "ann@acme.example.com"
    assert {e["type"] for e in events} == {"email", "open", "click", "note"}
    assert all(e["email"]["id"] == str(last.pk) for e in events if e["type"] in ("open", "click"))

    # The same number of queries for 3 events as for 9
    with CaptureQueriesContext(connection) as few:
        member_api.get(f"/api/v1/contacts/{contact.pk}/timeline/?page_size=3")
    with CaptureQueriesContext(connection) as many:
        member_api.get(f"/api/v1/contacts/{contact.pk}/timeline/?page_size=9")
    assert len(few) == len(many)


def test_notes_are_added_listed_and_put_on_the_timeline(member_api, account, member):
    contact = make_contact(account, "dana@example.com")

    created = member_api.post(
        f"/api/v1/contacts/{contact.pk}/notes/", {"text": "  Met at the fair. "}, format="json"
    )
    empty = member_api.post(f"/api/v1/contacts/{contact.pk}/notes/", {"text": "   "}, format="json")

    assert created.status_code == 201
    assert created.json()["text"] == "Met at the fair."
    assert created.json()["author"] == str(member.pk)
    assert empty.status_code == 400
    listed = member_api.get(f"/api/v1/contacts/{contact.pk}/notes/").json()
    assert [n["text"] for n in listed["results"]] == ["Met at the fair."]
    contact.refresh_from_db()
    assert contact.last_activity_at is not None
    assert TimelineEvent.objects.get(contact=contact).type == "note"


def test_contacts_are_shared_by_every_user_of_the_account(member_api, admin_api, admin):
    created = admin_api.post(
        "/api/v1/contacts/", {"email": "dana@example.com"}, format="json"
    ).json()

    assert [c["id"] for c in member_api.get("/api/v1/contacts/").json()["results"]] == [
        created["id"]
    ]


def test_the_list_costs_the_same_queries_for_few_and_many_contacts(
    member_api, account, admin, member
):
    for n in range(3):
        make_contact(account, f"few{n}@example.com", owner=admin)
    with CaptureQueriesContext(connection) as few:
        member_api.get("/api/v1/contacts/")
    for n in range(20):
        make_contact(account, f"many{n}@example.com", owner=member if n % 2 else admin)
    with CaptureQueriesContext(connection) as many:
        body = member_api.get("/api/v1/contacts/").json()

    assert len(body["results"]) == 23
    assert len(few) == len(many)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="trigram indexes are PostgreSQL's")
def test_the_search_has_trigram_indexes_on_the_expressions_it_compares_on_postgresql(db):
    """``icontains`` compares ``UPPER(column::text)``: the indexes must be on that (their
    use at scale is shown by bench/crm_contacts.py's EXPLAIN)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'crm_contact'")
        definitions = dict(cursor.fetchall())
    for column in ("name", "email", "company"):
        definition = definitions[f"crm_contact_{column}_trgm"]
        assert "USING gin" in definition and "gin_trgm_ops" in definition
        assert f"upper(({column})::text)" in definition
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attstattarget FROM pg_attribute WHERE attrelid = %s::regclass",
            ["crm_contact_name_trgm"],
        )
        assert cursor.fetchone()[0] == 1000  # the planner's estimates (migration 0002)
