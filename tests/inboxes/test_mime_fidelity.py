"""MIME the standard parser misreads (fixtures in tests/fixtures/fidelity/): a folded
boundary, comments in addresses, 8-bit text with no or a wrong charset, winmail.dat."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from inboxes.mime import parse_message
from inboxes.sync.parse_helper import _load_answer
from tests.fixtures.fidelity import make_fixtures as generator
from tests.support.tnef import tnef_stream

FIXTURES = Path(generator.__file__).parent


def parse_fixture(name: str):
    return parse_message((FIXTURES / f"{name}.eml").read_bytes())


def test_the_committed_fixtures_are_what_the_generator_writes():
    for name, build in generator.FIXTURES.items():
        assert (FIXTURES / f"{name}.eml").read_bytes() == build(), name


def test_a_boundary_folded_over_two_lines_is_unfolded_and_the_multipart_parses():
    parsed = parse_fixture("folded_boundary")

    assert parsed.error == ""
    assert parsed.text == "The report is attached."
    [report] = parsed.attachments
    assert (report.filename, report.content_type) == ("report.pdf", "application/pdf")
    assert report.payload == b"%PDF-1.4 fake report"


def test_comments_in_addresses_are_not_part_of_the_address():
    parsed = parse_fixture("address_comments")

    assert parsed.from_ is not None and parsed.from_.address == "pete@silly.test"
    assert [a.address for a in parsed.to] == ["pete@silly.test", "ann@example.com"]
    assert parsed.to[1].name == "Ann Smith"  # the trailing-comment convention
    assert parsed.cc == []  # an empty group
    assert parsed.message_id == "<testabcd.1234@silly.test>"


@pytest.mark.parametrize("name", sorted(generator.TEXTS))
@pytest.mark.parametrize("shape", ["undeclared", "wrong_charset"])
def test_8bit_text_with_no_or_a_wrong_charset_is_decoded_by_detection(name, shape):
    parsed = parse_fixture(f"{shape}_{name}")

    assert parsed.text.strip() == generator.TEXTS[name][1]
    assert "\ufffd" not in parsed.text


def test_a_winmail_dat_is_unpacked_into_its_files_and_body_and_stays_downloadable():
    parsed = parse_fixture("winmail_dat")

    assert parsed.text == generator.TNEF_BODY.replace("\r\n", "\n")
    files = [(a.filename, a.content_type, a.payload) for a in parsed.attachments]
    assert files[0][:2] == ("winmail.dat", "application/ms-tnef")
    assert files[0][2] == tnef_stream(
        body=generator.TNEF_BODY, attachments=generator.TNEF_FILES, subject="Contract"
    )
    assert files[1:] == [
        ("contract.pdf", "application/pdf", b"%PDF-1.4 signed contract"),
        ("notes.txt", "text/plain", b"Bring the pens."),
    ]
    assert parsed.error == ""


def test_a_winmail_dat_beside_a_text_body_adds_its_files_but_not_a_second_body():
    raw = (
        (FIXTURES / "winmail_dat.eml")
        .read_bytes()
        .replace(
            b"--tnef-boundary\r\nContent-Type: application/ms-tnef",
            b"--tnef-boundary\r\nContent-Type: text/plain\r\n\r\nThe plain version.\r\n"
            b"--tnef-boundary\r\nContent-Type: application/ms-tnef",
        )
    )
    parsed = parse_message(raw)

    assert parsed.text == "The plain version."
    assert [a.filename for a in parsed.attachments] == ["winmail.dat", "contract.pdf", "notes.txt"]


def test_a_broken_winmail_dat_stays_an_attachment_and_says_so():
    raw = (FIXTURES / "winmail_dat.eml").read_bytes()
    start = raw.index(b'filename="winmail.dat"\r\n\r\n') + 26
    broken = raw[:start] + b"bm90IFRORUY=\r\n" + raw[raw.index(b"--tnef-boundary--") :]
    parsed = parse_message(broken)

    assert [a.filename for a in parsed.attachments] == ["winmail.dat"]
    assert "winmail.dat" in parsed.error


def test_the_parse_helper_hands_a_tnef_result_back_through_its_restricted_unpickler():
    parsed = parse_fixture("winmail_dat")
    restored = _load_answer(pickle.dumps(parsed))

    assert restored == parsed
