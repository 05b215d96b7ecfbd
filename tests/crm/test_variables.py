"""Contact variables: the one syntax, fallbacks, HTML escaping, unknown names refused."""

from __future__ import annotations

from crm.variables import ContactValues, render, variables_check

ANN = ContactValues.of(name="Ann Marie Smith", email="ann@x.example", company="<Acme & Co>")
NAMELESS = ContactValues.of(name="", email="nobody@x.example", company="")


def test_values():
    assert render("{{ contact.first_name }}|{{contact.last_name}}", ANN) == "Ann|Marie Smith"
    assert render("{{ contact.name }} at {{ contact.email }}", ANN) == (
        "Ann Marie Smith at ann@x.example"
    )


def test_fallback_when_empty():
    template = 'Hi {{ contact.first_name | default: "there" }},'
    assert render(template, NAMELESS) == "Hi there,"
    assert render(template, ANN) == "Hi Ann,"
    assert render("{{ contact.company }}.", NAMELESS) == "."


def test_html_values_are_escaped():
    assert render("<b>{{ contact.company }}</b>", ANN, escape_html=True) == (
        "<b>&lt;Acme &amp; Co&gt;</b>"
    )
    assert render("{{ contact.company }}", ANN) == "<Acme & Co>"


def test_no_template_engine_behind_it():
    # What a template engine would evaluate stays text, and is refused on save.
    assert render("{% debug %}{{ contact.first_name.upper }}", ANN) == "{% debug %}"
    assert variables_check("{{ contact.first_name.upper }}")


def test_unknown_and_malformed_are_refused():
    assert variables_check('Hi {{ contact.first_name | default: "x" }}') == []
    assert "Unknown variable 'contact.phone'" in variables_check("{{ contact.phone }}")[0]
    assert variables_check("{{ contact.first_name | upper }}")
    assert variables_check("{{ contact.first_name")
    assert variables_check("no variables at all") == []
