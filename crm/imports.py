"""Contacts from a CSV file (DESIGN.md 4, ``POST /api/v1/contacts/import/``).

The file is read and checked whole before anything is written, so a dry run reports
exactly what the real run then does: the same plan is computed, and only the real run
writes it. Rows are numbered as a spreadsheet shows them: the header is row 1, and a
blank line still takes a row number.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import IO, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Account, User
from core.errors import Invalid
from core.text import has_control_characters
from crm.hooks import contacts_created
from crm.models import Contact
from inboxes.addresses import canonical_address

MAX_IMPORT_BYTES = 5 * 1024 * 1024
COLUMNS = ("email", "name", "company", "owner")
_TEXT_LIMITS = {"name": 200, "company": 200}
_SPREADSHEET_SUFFIXES = (".xlsx", ".xls", ".ods", ".numbers")
# A column whose values run up to the file size must still be read (csv's default is 128 KiB).
csv.field_size_limit(MAX_IMPORT_BYTES)


@dataclass
class ImportPlan:
    creates: list[Contact] = field(default_factory=list)
    updates: list[Contact] = field(default_factory=list)
    unchanged: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "created": len(self.creates),
            "updated": len(self.updates),
            "unchanged": self.unchanged,
            "errors": self.errors,
        }


def _not_csv(detail: str) -> Invalid:
    return Invalid(detail, errors={"file": [detail]})


def _read_text(file: IO[bytes], filename: str) -> str:
    if filename.lower().endswith(_SPREADSHEET_SUFFIXES):
        raise _not_csv("This is a spreadsheet file, not CSV: save it as CSV (UTF-8) first.")
    data = file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise _not_csv(
            f"The file is too large: at most {MAX_IMPORT_BYTES // (1024 * 1024)} MB. "
            "Split it into smaller files."
        )
    if b"\x00" in data:
        raise _not_csv("This is not a CSV file: save it as CSV (UTF-8) and upload that.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _not_csv(
            "The file is not UTF-8 text: save it as CSV (UTF-8) and upload that."
        ) from None


def _delimiter(header_line: str) -> str:
    """Spreadsheets in many European locales write ``;``; some tools write tabs."""
    counts = {sep: header_line.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _records(text: str) -> list[list[str]]:
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    try:
        return list(reader)
    except csv.Error as exc:
        raise _not_csv(f"Line {reader.line_num} could not be read as CSV: {exc}.") from None


def _header(record: list[str]) -> dict[str, int]:
    names = [cell.strip().lower() for cell in record]
    if "email" not in names:
        raise _not_csv(
            "The first row must name the columns, with at least an email column "
            "(and optionally name, company, owner)."
        )
    return {name: names.index(name) for name in COLUMNS if name in names}


def _owners(account: Account) -> dict[str, User]:
    users = User.objects.filter(account=account, is_active=True)
    found: dict[str, User] = {}
    for user in users:
        try:
            found[canonical_address(user.email)] = user
        except Invalid:
            continue
    return found


def _row_values(record: list[str], columns: dict[str, int]) -> dict[str, str]:
    return {
        name: (record[index].strip() if index < len(record) else "")
        for name, index in columns.items()
    }


def _check_row(values: dict[str, str], owners: dict[str, User]) -> tuple[str, User | None]:
    """The canonical address and the owner of a row, or Invalid with what is wrong."""
    if not values.get("email"):
        raise Invalid("The email is empty.")
    try:
        canonical = canonical_address(values["email"])
    except Invalid:
        raise Invalid(f"{values['email'][:80]} is not a valid email address.") from None
    for name, limit in _TEXT_LIMITS.items():
        value = values.get(name, "")
        if has_control_characters(value):
            raise Invalid(f"The {name} can't contain line breaks or control characters.")
        if len(value) > limit:
            raise Invalid(f"The {name} is longer than {limit} characters.")
    owner = None
    if values.get("owner"):
        try:
            owner = owners.get(canonical_address(values["owner"]))
        except Invalid:
            owner = None
        if owner is None:
            raise Invalid(
                f"The owner {values['owner'][:80]} is not an active user of this account: "
                "use a user's email address, or leave it empty."
            )
    return canonical, owner


def _apply(contact: Contact, values: dict[str, str], owner: User | None) -> bool:
    """Sets what the row gives; an empty cell keeps what the contact has."""
    changed = False
    for name in ("name", "company"):
        if values.get(name) and getattr(contact, name) != values[name]:
            setattr(contact, name, values[name])
            changed = True
    if owner is not None and contact.owner_id != owner.pk:
        contact.owner = owner
        changed = True
    return changed


def _plan(account: Account, records: list[list[str]]) -> ImportPlan:
    plan = ImportPlan()
    if not records or not any(cell.strip() for cell in records[0]):
        raise _not_csv("The file is empty: it needs a header row and one row per contact.")
    columns = _header(records[0])
    owners = _owners(account) if "owner" in columns else {}
    rows: list[tuple[int, dict[str, str], str, User | None]] = []
    first_row_of: dict[str, int] = {}
    for number, record in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in record):
            continue  # a blank line: it keeps its row number, and imports nothing
        values = _row_values(record, columns)
        try:
            canonical, owner = _check_row(values, owners)
        except Invalid as exc:
            plan.errors.append({"row": number, "detail": exc.detail})
            continue
        if canonical in first_row_of:
            plan.errors.append(
                {
                    "row": number,
                    "detail": f"{values['email']} is already in row {first_row_of[canonical]}; "
                    "only that row is imported.",
                }
            )
            continue
        first_row_of[canonical] = number
        rows.append((number, values, canonical, owner))
    existing = _existing(account, [canonical for _, _, canonical, _ in rows])
    now = timezone.now()
    for _, values, canonical, owner in rows:
        contact = existing.get(canonical)
        if contact is None:
            contact = Contact(account=account, email=values["email"], canonical_email=canonical)
            _apply(contact, values, owner)
            plan.creates.append(contact)
        elif _apply(contact, values, owner):
            contact.updated_at = now  # bulk_update leaves auto_now alone
            plan.updates.append(contact)
        else:
            plan.unchanged += 1
    return plan


def _existing(account: Account, canonicals: list[str]) -> dict[str, Contact]:
    found: dict[str, Contact] = {}
    for start in range(0, len(canonicals), 1000):
        chunk = canonicals[start : start + 1000]
        for contact in Contact.objects.filter(account=account, canonical_email__in=chunk):
            found[contact.canonical_email] = contact
    return found


def contacts_import_csv(
    account: Account, file: IO[bytes], *, dry_run: bool, actor: User, filename: str = ""
) -> dict[str, Any]:
    """``{created, updated, unchanged, errors: [{row, detail}]}``. Rows with errors are
    skipped, the others imported; ``dry_run`` writes nothing and answers the same."""
    if actor.account_id != account.pk:
        raise Invalid("The import is for another account.")
    records = _records(_read_text(file, filename))
    if dry_run:
        return _plan(account, records).report()
    try:
        with transaction.atomic():
            # One import per account at a time: two would plan the same new contacts.
            Account.objects.select_for_update().filter(pk=account.pk).exists()
            plan = _plan(account, records)
            Contact.objects.bulk_create(plan.creates, batch_size=1000)
            contacts_created(plan.creates)  # conversations with these addresses link up
            Contact.objects.bulk_update(
                plan.updates, ["name", "company", "owner", "updated_at"], batch_size=1000
            )
    except IntegrityError:
        # A contact added by hand meanwhile has an address of the file.
        raise Invalid(
            "Contacts were added while the file was imported: nothing was imported. "
            "Upload the file again."
        ) from None
    return plan.report()
