"""The body of a one-to-one email: the font, the text part, the tracking rewrite and
its tokens (pure functions)."""

from __future__ import annotations

import uuid

from crm.compose import email_body, font_stack, html_to_text_part, text_to_html, with_font
from crm.tracking import click_token, open_token, rewrite_links, token_read, with_tracking


def test_text_becomes_paragraphs_with_links_and_escaped_markup():
    html = text_to_html("Hi <Dana> & co,\n\nSee https://acme.example.com/p?a=1&b=2.\nBye")
    assert "Hi &lt;Dana&gt; &amp; co," in html
    assert '<a href="https://acme.example.com/p?a=1&amp;b=2">' in html
    assert "</a>.<br>" in html  # the full stop is not part of the link
    assert html.count("<p ") == 2


def test_the_font_wraps_the_html_and_a_hostile_family_cannot_escape_the_style():
    wrapped = with_font("<p>Hi</p>", family="Georgia", size=16)
    assert wrapped.startswith(
        "<div style=\"font-family: Georgia, 'Times New Roman', serif; font-size: 16px\">"
    )
    hostile = with_font("<p>Hi</p>", family="x'; color: red\"><script>alert(1)</script>", size=99)
    opening = hostile[: hostile.index("<p>")]
    assert "<script" not in opening and '"><' not in opening
    assert "font-size: 32px" in opening  # clamped
    assert "\\'" in opening  # the quote is escaped inside the CSS string


def test_a_whole_document_gets_the_font_inside_its_body():
    doc = "<html><head><title>t</title></head><body><p>Hi</p></body></html>"
    wrapped = with_font(doc, family="Arial", size=14)
    assert wrapped.startswith("<html><head><title>t</title></head><body><div style=")
    assert wrapped.endswith("<p>Hi</p></div></body></html>")


def test_an_unknown_family_falls_back_to_a_generic_one():
    assert font_stack("Comic Neue") == "'Comic Neue', sans-serif"


def test_html_only_gets_a_text_part_with_link_addresses():
    text = html_to_text_part(
        '<p>Read <a href="https://x.example.com/a">the offer</a></p><p>Bye</p>'
    )
    assert text == "Read the offer (https://x.example.com/a)\n\nBye\n"


def test_both_parts_always_come_out():
    plain, html = email_body(text="Hello\nthere", html="", font_family="Arial", font_size=14)
    assert plain == "Hello\nthere" and "Hello<br>" in html and "font-size: 14px" in html
    plain, html = email_body(text="", html="<b>Bold</b>", font_family="Arial", font_size=14)
    assert plain == "Bold\n" and "<b>Bold</b>" in html


def test_tokens_are_signed_compact_and_name_their_email_and_link():
    email_id = uuid.uuid4()
    token = click_token(email_id, 3)
    found = token_read(token)
    assert (found.kind, found.email_id, found.position) == ("c", email_id, 3)
    assert len(token) < 80 and all(c.isalnum() or c in "-_." for c in token)
    assert token_read(open_token(email_id)).kind == "o"


def test_forged_and_altered_tokens_read_as_nothing():
    email_id = uuid.uuid4()
    token = click_token(email_id, 0)
    value, signature = token.rsplit(".", 1)
    assert token_read(value[:-1] + "1." + signature) is None  # another position
    assert token_read(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    assert token_read("c" + "A" * 22 + "0.forged") is None
    assert token_read("") is None and token_read("x" * 500) is None


def test_links_are_rewritten_by_position_and_others_left_alone():
    email_id = uuid.uuid4()
    html = (
        '<p><a href="https://a.example.com/x?y=1&amp;z=2" title="A">one</a> '
        "<a href='mailto:ann@acme.example.com'>mail</a> "
        "<a class=btn href=http://b.example.com>two</a></p>"
    )
    rewritten, links = rewrite_links(html, email_id)
    assert links == ["https://a.example.com/x?y=1&z=2", "http://b.example.com"]
    assert "mailto:ann@acme.example.com" in rewritten
    assert "a.example.com" not in rewritten and "b.example.com" not in rewritten
    assert f'/t/c/{click_token(email_id, 0)}" title="A">one</a>' in rewritten
    assert f'<a class="btn" href="http://127.0.0.1:8000/t/c/{click_token(email_id, 1)}">' in (
        rewritten
    )


def test_the_pixel_goes_inside_the_font_wrapper():
    email_id = uuid.uuid4()
    html, links = with_tracking(
        '<div style="x"><p>Hi</p></div>', email_id, opens=True, clicks=False
    )
    assert links == []
    assert html.endswith(
        f'/t/o/{open_token(email_id)}" width="1" height="1" alt="" '
        'style="display: block; width: 1px; height: 1px; border: 0"></div>'
    )
