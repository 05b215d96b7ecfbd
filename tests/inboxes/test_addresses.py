import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import Invalid
from inboxes.addresses import canonical_address


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("ann@example.com", "ann@example.com"),
        ("  ann@example.com ", "ann@example.com"),
        ("j.o.h.n+crm@googlemail.com", "john@gmail.com"),
        ("John@Gmail.com", "john@gmail.com"),
        ("ann@bücher.de", "ann@xn--bcher-kva.de"),
        ("ann@xn--bcher-kva.de", "ann@xn--bcher-kva.de"),
        ("ANN@BÜCHER.DE", "ann@xn--bcher-kva.de"),
        ("first.last+tag@example.com", "first.last+tag@example.com"),
    ],
)
def test_canonical_form_of_examples(typed, canonical):
    assert canonical_address(typed) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "ann",
        "ann@",
        "@example.com",
        "ann@@example.com",
        "a..b@example.com",
        "ann@exa mple.com",
        "+tag@gmail.com",
        "x" * 300 + "@example.com",
        "ann@-example.com",
    ],
)
def test_invalid_addresses_are_refused_with_invalid(bad):
    with pytest.raises(Invalid) as excinfo:
        canonical_address(bad)
    assert excinfo.value.code == "invalid"
    assert "address" in excinfo.value.extra["errors"]


local_parts = st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
domains = st.sampled_from(
    ["example.com", "acme.io", "bücher.de", "mail.example.org", "exämple.com"]
)


def random_case(text: str, data) -> str:
    flips = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@given(local=local_parts, domain=domains, data=st.data())
def test_case_never_matters(local, domain, data):
    address = f"{local}@{domain}"
    assert canonical_address(random_case(address, data)) == canonical_address(address)


@given(local=local_parts, domain=domains)
def test_canonical_form_is_a_fixed_point(local, domain):
    once = canonical_address(f"{local}@{domain}")
    assert canonical_address(once) == once
    assert once == once.lower() and once.isascii()


@given(
    local=st.from_regex(r"[a-z][a-z0-9]{2,12}", fullmatch=True),
    dots=st.lists(st.integers(min_value=1, max_value=11), max_size=3, unique=True),
    tag=st.one_of(st.none(), st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)),
    domain=st.sampled_from(["gmail.com", "googlemail.com", "GMail.com"]),
)
def test_gmail_ignores_dots_tags_and_googlemail(local, dots, tag, domain):
    dotted = "".join(
        c + ("." if i + 1 in dots and i + 1 < len(local) else "") for i, c in enumerate(local)
    )
    typed = f"{dotted}{'+' + tag if tag else ''}@{domain}"
    assert canonical_address(typed) == f"{local}@gmail.com"


@given(local=local_parts)
def test_other_domains_keep_dots_and_tags(local):
    assert canonical_address(f"{local}+crm@example.com") == f"{local}+crm@example.com"
