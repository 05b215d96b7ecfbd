"""The contact pages with Django's test client: list, search, paging, new, edit, delete
(asks first), the contact page with its timeline and notes, and the CSV import."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from crm.models import Contact, Note, Sequence
from inboxes.models import Mailbox
from tests.support.crm_factory import make_contact, make_logged_email

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(client, member):
    client.force_login(member)
    return client


def test_the_top_navigation_has_contacts(web):
    page = web.get("/contacts/").content.decode()

    assert '<a href="/contacts/" class="active" aria-current="page">Contacts</a>' in page


def test_the_list_shows_the_accounts_contacts_and_searches_them(web, account, outsider):
    make_contact(account, "dana@fbi.example.com", name="Dana Scully", company="FBI")
    make_contact(account, "fox@example.com", name="Fox Mulder")
    make_contact(outsider.account, "spy@globex.example.com", name="Spy")

    everyone = web.get("/contacts/").content.decode()
    found = web.get("/contacts/", {"q": "fbi"}).content.decode()
    nothing = web.get("/contacts/", {"q": "zzz"}).content.decode()

    assert "Dana Scully" in everyone and "Fox Mulder" in everyone and "Spy" not in everyone
    assert "Dana Scully" in found and "Fox Mulder" not in found
    assert "No contact matches" in nothing


def test_the_list_pages_with_a_next_link_that_skips_nothing(web, account):
    now = timezone.now()
    for n in range(55):
        contact = make_contact(account, f"c{n:02d}@example.com", name=f"Person {n:02d}")
        Contact.objects.filter(pk=contact.pk).update(created_at=now - timedelta(seconds=n // 3))

    first = web.get("/contacts/")
    assert first.context["page"].next
    second = web.get("/contacts/", {"after": first.context["page"].next})

    seen = [c.pk for c in first.context["page"].rows] + [c.pk for c in second.context["page"].rows]
    assert seen == list(Contact.objects.order_by("-created_at", "-id").values_list("pk", flat=True))
    assert second.context["page"].next is None
    # A position we did not make starts at the top instead of failing
    assert web.get("/contacts/", {"after": "nonsense"}).status_code == 200


def test_the_enrol_form_posts_ids_to_the_sequences_page_and_lists_the_accounts_sequences(
    web, account, member
):
    contact = make_contact(account, "dana@example.com")
    without = web.get("/contacts/").content.decode()
    assert 'name="sequence"' not in without
    assert f'name="contacts" value="{contact.pk}"' in without

    mailbox = Mailbox.objects.create(
        account=account,
        kind="personal",
        owner=member,
        address="bo@acme.example.com",
        canonical_address="bo@acme.example.com",
    )
    Sequence.objects.create(account=account, owner=member, name="Welcome", mailbox=mailbox)
    page = web.get("/contacts/").content.decode()

    assert 'action="/sequences/enroll/"' in page
    assert 'name="sequence"' in page and ">Welcome</option>" in page
    assert "Enrol in sequence" in page


def test_a_new_contact_is_added_from_its_form(web, account, admin):
    response = web.post(
        "/contacts/new/",
        {"email": "dana@example.com", "name": "Dana", "company": "FBI", "owner": str(admin.pk)},
    )

    contact = Contact.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/contacts/{contact.pk}/"
    assert (contact.name, contact.owner) == ("Dana", admin)


def test_the_new_contact_form_says_what_to_do_about_a_known_or_invalid_address(web, account):
    known = make_contact(account, "dana@example.com")

    clash = web.post("/contacts/new/", {"email": "DANA@example.com"})
    invalid = web.post("/contacts/new/", {"email": "dana at example"})

    assert clash.status_code == 400
    assert f'href="/contacts/{known.pk}/"' in clash.content.decode()
    assert "already a contact" in clash.content.decode()
    assert invalid.status_code == 400
    assert "email-error" in invalid.content.decode()
    assert Contact.objects.count() == 1


def test_the_contact_page_shows_the_details_timeline_and_bounce_warning(web, account, member):
    contact = make_contact(
        account, "dana@example.com", name="Dana Scully", company="FBI", owner=member
    )
    make_logged_email(contact, subject="Our offer", opens=2, clicks=1)
    make_logged_email(contact, subject="Re: Our offer", direction="inbound")
    Contact.objects.filter(pk=contact.pk).update(
        bounced_at=timezone.now(), bounce_detail="550 5.1.1 No such user."
    )

    page = web.get(f"/contacts/{contact.pk}/").content.decode()

    assert "Dana Scully" in page and "FBI" in page and "Bo Lee" in page
    assert 'id="bounced"' in page and "550 5.1.1 No such user." in page
    assert "Our offer" in page and "Re: Our offer" in page
    assert "Sent" in page and "Received" in page
    assert "Delivered to the server" in page
    assert "2 opens · 1 click" in page
    assert f'href="/contacts/{contact.pk}/email/"' in page
    assert page.index("Re: Our offer") < page.index("2 opens")  # newest first


def test_another_accounts_contact_pages_are_not_found(web, outsider):
    contact = make_contact(outsider.account, "spy@globex.example.com")

    for url in ("", "edit/", "delete/"):
        assert web.get(f"/contacts/{contact.pk}/{url}").status_code == 404
    assert web.post(f"/contacts/{contact.pk}/delete/").status_code == 404
    assert web.post(f"/contacts/{contact.pk}/notes/", {"text": "x"}).status_code == 404
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_a_note_is_added_from_the_contact_page(web, account, member):
    contact = make_contact(account, "dana@example.com")

    response = web.post(f"/contacts/{contact.pk}/notes/", {"text": "Call back on Friday."})
    empty = web.post(f"/contacts/{contact.pk}/notes/", {"text": "  "})

    assert response.status_code == 302
    assert Note.objects.get().author == member
    assert "Call back on Friday." in web.get(f"/contacts/{contact.pk}/").content.decode()
    assert empty.status_code == 400
    assert Note.objects.count() == 1


def test_edit_saves_and_delete_asks_first(web, account):
    contact = make_contact(account, "dana@example.com", name="Dana")

    web.post(
        f"/contacts/{contact.pk}/edit/",
        {"email": "dana@example.com", "name": "Dana Scully", "company": "", "owner": ""},
    )
    contact.refresh_from_db()
    assert contact.name == "Dana Scully"

    question = web.get(f"/contacts/{contact.pk}/delete/")
    assert question.status_code == 200 and "Delete Dana Scully?" in question.content.decode()
    assert Contact.objects.filter(pk=contact.pk).exists()

    unconfirmed = web.post(f"/contacts/{contact.pk}/delete/")
    assert unconfirmed.status_code == 200 and "Delete Dana Scully?" in unconfirmed.content.decode()
    assert Contact.objects.filter(pk=contact.pk).exists()

    deleted = web.post(f"/contacts/{contact.pk}/delete/", {"confirm": "yes"})
    assert deleted.status_code == 302
    assert not Contact.objects.filter(pk=contact.pk).exists()


def test_the_import_page_previews_with_row_errors_then_imports_on_confirm(
    web, account, settings, tmp_path
):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    make_contact(account, "dana@example.com", name="Dana")
    content = b"email;name\ndana@example.com;Dana Scully\nfox@example.com;Fox\nbroken;Nobody\n"

    preview = web.post(
        "/contacts/import/", {"file": SimpleUploadedFile("people.csv", content, "text/csv")}
    )

    page = preview.content.decode()
    assert preview.status_code == 200
    assert (
        "1 new contact will be added, 1 contact will be updated; 1 row with errors will be skipped."
        in page
    )
    assert '<td class="num">4</td>' in page and "broken is not a valid email address" in page
    assert Contact.objects.count() == 1  # nothing changed yet
    token = preview.context["token"]

    done = web.post("/contacts/import/confirm/", {"token": token})

    assert done.status_code == 302
    assert Contact.objects.count() == 2
    assert Contact.objects.get(canonical_email="dana@example.com").name == "Dana Scully"
    assert not default_storage.exists(f"crm-imports/{account.pk}/{token}.csv")
    again = web.post("/contacts/import/confirm/", {"token": token}, follow=True)
    assert "no longer available" in again.content.decode()


def test_the_import_page_refuses_a_file_that_is_not_csv_and_says_what_to_do(web):
    response = web.post(
        "/contacts/import/",
        {"file": SimpleUploadedFile("people.xlsx", b"PK\x03\x04", "application/zip")},
    )

    assert response.status_code == 400
    assert "save it as CSV (UTF-8) first" in response.content.decode()
