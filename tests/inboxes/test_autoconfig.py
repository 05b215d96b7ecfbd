"""The autoconfig lookup: asked only where the operator allows it, through the SSRF
guard, over HTTPS, from a real server the test starts on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inboxes.autoconfig import MAX_DOCUMENT_BYTES, parse_autoconfig
from tests.support.mailservers import FakeDNS, MailCA

pytestmark = pytest.mark.django_db

CONFIG = b"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="acme.test">
    <domain>acme.test</domain>
    <displayName>Acme Mail</displayName>
    <incomingServer type="pop3">
      <hostname>pop.acme.test</hostname><port>995</port><socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>plain.acme.test</hostname><port>143</port><socketType>plain</socketType>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>imap.acme.test</hostname><port>993</port><socketType>SSL</socketType>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.acme.test</hostname><port>587</port><socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""


class AutoconfigServer:
    """An HTTPS server on 127.0.0.1 answering ``pages[path] = (status, body)``."""

    def __init__(self, mail_ca: MailCA) -> None:
        self.pages: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[str, str]] = []  # (Host header, path with query)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.headers.get("Host", ""), self.path))
                status, body = server.pages.get(self.path.split("?")[0], (404, b"not here"))
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = mail_ca.server_context("autoconfig.acme.test", "acme.test")
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


@pytest.fixture
def autoconfig(mail_ca: MailCA, fake_dns: FakeDNS, settings) -> Iterator[AutoconfigServer]:
    """The server, acme.test and autoconfig.acme.test resolving to it, lookups on."""
    server = AutoconfigServer(mail_ca)
    fake_dns.add("autoconfig.acme.test", "127.0.0.1")
    fake_dns.add("acme.test", "127.0.0.1")
    # The standard URLs, on the test server's port (443 needs root).
    settings.MAIL_AUTOCONFIG_URLS = [
        f"https://autoconfig.{{domain}}:{server.port}/mail/config-v1.1.xml"
        "?emailaddress={address}",
        f"https://{{domain}}:{server.port}/.well-known/autoconfig/mail/config-v1.1.xml",
    ]
    settings.MAIL_AUTOCONFIG_LOOKUP = True
    settings.ALLOW_PRIVATE_MAIL_HOSTS = True  # the test server is on loopback
    yield server
    server.close()


def _ask(client, address: str) -> dict:
    return client.get("/settings/email/servers/", {"address": address}).json()


def test_the_domains_autoconfig_file_pre_fills_the_servers(client, member, autoconfig):
    autoconfig.pages["/mail/config-v1.1.xml"] = (200, CONFIG)
    client.force_login(member)
    answer = _ask(client, "bo@acme.test")
    assert answer["found"] is True
    assert answer["source"] == "autoconfig"
    assert answer["label"] == "Acme Mail"
    # The first IMAP server that is not plain text, the SMTP server
    assert answer["imap"] == {"host": "imap.acme.test", "port": 993, "security": "ssl",
                              "username": "bo"}  # fmt: skip
    assert answer["smtp"] == {"host": "smtp.acme.test", "port": 587, "security": "starttls",
                              "username": "bo@acme.test"}  # fmt: skip
    host, path = autoconfig.requests[0]
    assert host.startswith("autoconfig.acme.test")
    assert path == "/mail/config-v1.1.xml?emailaddress=bo@acme.test"


def test_the_well_known_address_is_asked_when_the_autoconfig_host_has_nothing(
    client, member, autoconfig
):
    autoconfig.pages["/.well-known/autoconfig/mail/config-v1.1.xml"] = (200, CONFIG)
    client.force_login(member)
    answer = _ask(client, "bo@acme.test")
    assert answer["found"] is True
    assert [path.split("?")[0] for _host, path in autoconfig.requests] == [
        "/mail/config-v1.1.xml",
        "/.well-known/autoconfig/mail/config-v1.1.xml",
    ]


def test_the_no_javascript_fill_uses_the_lookup_too(client, member, autoconfig):
    autoconfig.pages["/mail/config-v1.1.xml"] = (200, CONFIG)
    client.force_login(member)
    page = client.post("/settings/email/", {"address": "bo@acme.test", "fill_servers": "1"})
    body = page.content.decode()
    assert 'value="imap.acme.test"' in body and 'value="smtp.acme.test"' in body
    assert "Filled in the server settings for Acme Mail" in body


def test_the_lookup_is_off_by_default(client, member, autoconfig, settings):
    from config import settings as project_settings

    assert project_settings.MAIL_AUTOCONFIG_LOOKUP is False  # no MAIL_AUTOCONFIG_LOOKUP set
    settings.MAIL_AUTOCONFIG_LOOKUP = project_settings.MAIL_AUTOCONFIG_LOOKUP
    autoconfig.pages["/mail/config-v1.1.xml"] = (200, CONFIG)
    client.force_login(member)
    assert _ask(client, "bo@acme.test")["found"] is False
    assert autoconfig.requests == []


def test_a_private_address_is_never_asked_unless_private_hosts_are_allowed(
    client, member, autoconfig, settings, fake_dns
):
    # Given acme.test's names resolve to loopback, where a config file waits
    autoconfig.pages["/mail/config-v1.1.xml"] = (200, CONFIG)
    autoconfig.pages["/.well-known/autoconfig/mail/config-v1.1.xml"] = (200, CONFIG)
    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    client.force_login(member)
    # When Bo types an address there
    answer = _ask(client, "bo@acme.test")
    # Then nothing is found, and the server was never reached (only resolved)
    assert answer["found"] is False
    assert autoconfig.requests == []
    assert {"autoconfig.acme.test", "acme.test"} <= set(fake_dns.calls)


def test_a_known_provider_is_never_looked_up(client, member, autoconfig, fake_dns):
    client.force_login(member)
    assert _ask(client, "bo@gmail.com")["source"] == "preset"
    assert fake_dns.calls == [] and autoconfig.requests == []


def test_a_server_error_or_a_broken_file_finds_nothing(client, member, autoconfig):
    autoconfig.pages["/mail/config-v1.1.xml"] = (500, CONFIG)
    autoconfig.pages["/.well-known/autoconfig/mail/config-v1.1.xml"] = (200, b"<clientConfig")
    client.force_login(member)
    answer = _ask(client, "bo@acme.test")
    assert answer["found"] is False
    assert "No server settings are known for acme.test" in answer["note"]


def test_a_file_with_a_dtd_or_too_big_is_refused_unparsed():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    ) + CONFIG.split(b"?>", 1)[1].replace(b"Acme Mail", b"&lol2;")
    assert parse_autoconfig(bomb, domain="acme.test") is None
    # The same in UTF-16, where no byte pattern of "<!DOCTYPE" shows.
    wide = bomb.replace(b'version="1.0"', b'version="1.0" encoding="utf-16"').decode()
    assert parse_autoconfig(wide.encode("utf-16"), domain="acme.test") is None
    assert parse_autoconfig(CONFIG, domain="acme.test") is not None
    padded = CONFIG.replace(b"</clientConfig>", b" " * MAX_DOCUMENT_BYTES + b"</clientConfig>")
    assert parse_autoconfig(padded, domain="acme.test") is None


def test_a_file_without_imap_or_smtp_finds_nothing():
    no_smtp = CONFIG.split(b"<outgoingServer")[0] + b"</emailProvider></clientConfig>"
    assert parse_autoconfig(no_smtp, domain="acme.test") is None
    assert parse_autoconfig(b"<html><body>hi</body></html>", domain="acme.test") is None
