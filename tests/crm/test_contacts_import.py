"""CSV import of contacts: dry run against the real run, per-row errors numbered as a
spreadsheet shows them, owners by address, BOM, semicolons and blank lines."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from crm.imports import MAX_IMPORT_BYTES
from crm.models import Contact
from tests.support.crm_factory import make_contact

pytestmark = pytest.mark.django_db


def upload(api, content: bytes | str, *, dry_run: bool = False, name: str = "contacts.csv"):
    data = content.encode() if isinstance(content, str) else content
    url = "/api/v1/contacts/import/" + ("?dry_run=true" if dry_run else "")
    return api.post(url, {"file": SimpleUploadedFile(name, data, "text/csv")}, format="multipart")


def snapshot():
    return sorted(Contact.objects.values_list("canonical_email", "name", "company", "owner_id"))


MIXED = (
    "email,name,company,owner\n"
    "dana@example.com,Dana Scully,FBI,bo@acme.example.com\n"  # row 2: updates Dana
    "fox@example.com,Fox Mulder,,\n"  # row 3: new
    "not-an-address,Nobody,,\n"  # row 4: invalid address
    ",Empty,,\n"  # row 5: no address
    "walter@example.com,Walter,,olga@globex.example.com\n"  # row 6: owner of another account
    "FOX@example.com,Fox again,,\n"  # row 7: the same address as row 3
    "monica@example.com,Monica,Reyes Inc,ANN@acme.example.com\n"  # row 8: new, owner Ann
)


def test_a_dry_run_reports_exactly_what_the_real_run_then_does(
    member_api, account, admin, member, outsider
):
    make_contact(account, "dana@example.com", name="Dana")
    before = snapshot()

    preview = upload(member_api, MIXED, dry_run=True)

    assert preview.status_code == 200, preview.json()
    assert snapshot() == before  # nothing changed
    report = preview.json()
    assert (report["created"], report["updated"], report["dry_run"]) == (2, 1, True)
    assert [e["row"] for e in report["errors"]] == [4, 5, 6, 7]
    assert "not-an-address" in report["errors"][0]["detail"]
    assert "empty" in report["errors"][1]["detail"]
    assert "olga@globex.example.com is not an active user" in report["errors"][2]["detail"]
    assert "row 3" in report["errors"][3]["detail"]

    real = upload(member_api, MIXED)

    assert real.status_code == 200
    assert {**real.json(), "dry_run": True} == report
    contacts = {c.canonical_email: c for c in Contact.objects.all()}
    assert set(contacts) == {"dana@example.com", "fox@example.com", "monica@example.com"}
    assert (contacts["dana@example.com"].name, contacts["dana@example.com"].company) == (
        "Dana Scully",
        "FBI",
    )
    assert contacts["dana@example.com"].owner == member
    assert contacts["monica@example.com"].owner == admin
    assert contacts["fox@example.com"].owner is None


def test_importing_the_same_file_twice_changes_nothing_the_second_time(member_api, admin):
    upload(member_api, MIXED)
    before = snapshot()

    again = upload(member_api, MIXED).json()

    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 3)
    assert snapshot() == before


def test_a_bom_semicolons_blank_lines_and_quoted_line_breaks_are_read_as_a_spreadsheet_shows_them(
    member_api,
):
    content = (
        "\ufeffEmail;Name;Company\r\n"
        'ann@x.example.com;Ann;"Acme; Inc"\r\n'  # row 2
        "\r\n"  # row 3: blank
        "bad;Bad;\r\n"  # row 4
        'cy@x.example.com;Cy;"Two\r\nlines"\r\n'  # row 5: a line break in a cell
        'dee@x.example.com;"Dee";\r\n'  # row 6
        "oops;;\r\n"  # row 7
    )

    report = upload(member_api, content.encode("utf-8")).json()

    assert report["created"] == 2
    assert [(e["row"]) for e in report["errors"]] == [4, 5, 7]
    assert "line breaks" in report["errors"][1]["detail"]
    assert Contact.objects.get(canonical_email="ann@x.example.com").company == "Acme; Inc"
    assert Contact.objects.get(canonical_email="dee@x.example.com").name == "Dee"


@pytest.mark.parametrize(
    ("content", "name", "says"),
    [
        (b"PK\x03\x04\x14\x00\x00\x00binary", "contacts.xlsx", "spreadsheet file, not CSV"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "contacts.csv", "not a CSV file"),
        ("naïve,x\n".encode("latin-1"), "contacts.csv", "not UTF-8"),
        (b"name,company\nDana,FBI\n", "contacts.csv", "at least an email column"),
        (b"", "contacts.csv", "empty"),
    ],
)
def test_files_that_are_not_contacts_csv_are_refused_whole(member_api, content, name, says):
    response = upload(member_api, content, name=name)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert says in response.json()["detail"]
    assert not Contact.objects.exists()


def test_a_file_over_the_limit_is_refused_with_the_limit(member_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = MAX_IMPORT_BYTES * 2
    row = "someone@example.com,Some One,Company\n"
    content = "email,name,company\n" + row * (MAX_IMPORT_BYTES // len(row) + 1)

    response = upload(member_api, content, dry_run=True)

    assert response.status_code == 400
    assert "too large: at most 5 MB" in response.json()["detail"]


def test_an_import_without_a_file_is_invalid(member_api):
    response = member_api.post("/api/v1/contacts/import/", {}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()["errors"]


def test_imports_land_in_the_callers_account_only(member_api, outsider_api, account):
    make_contact(account, "dana@example.com", name="Dana")

    report = upload(outsider_api, "email,name\ndana@example.com,Someone else\n").json()

    assert report["created"] == 1
    assert Contact.objects.get(account=account).name == "Dana"
