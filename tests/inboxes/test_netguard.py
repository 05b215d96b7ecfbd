"""The SSRF guard refuses internal addresses however they are spelled or resolved."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator

import pytest
from pytest_django import Settings

from inboxes import netguard
from inboxes.netguard import GENERIC_REFUSAL, HostNotAllowed, HostNotFound
from tests.support.mailservers import FakeDNS, MailCA

REFUSED_SPELLINGS = [
    "127.1",
    "2130706433",
    "0x7f.0.0.1",
    "017700000001",
    "[::ffff:127.0.0.1]",
    "::ffff:127.0.0.1",
    "::1",
    "[::1]",
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "64:ff9b::a00:5",  # NAT64 of 10.0.0.5
    "2002:a00:5::1",  # 6to4 of 10.0.0.5
    "fe80::1",
    "fc00::1",
    "169.254.169.254",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "localhost",
]


@pytest.fixture
def strict(settings: Settings) -> Iterator[None]:
    """Production settings: no private hosts, the usual mail ports only."""
    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    settings.MAIL_ALLOWED_PORTS = [993, 143, 465, 587, 25]
    yield


@pytest.mark.parametrize("host", REFUSED_SPELLINGS)
def test_internal_addresses_are_refused_in_every_spelling_with_the_generic_message(
    strict: None, fake_dns: FakeDNS, host: str
) -> None:
    # Given production settings
    # When a user names an internal address, written any way the OS accepts
    with pytest.raises(HostNotAllowed) as caught:
        netguard.resolve_checked(host, 993)
    # Then it is refused with the same message that says nothing about why
    assert str(caught.value) == GENERIC_REFUSAL


def test_a_name_resolving_to_a_private_address_is_refused(strict: None, fake_dns: FakeDNS) -> None:
    fake_dns.add("mail.internal.example", "10.0.0.5")
    with pytest.raises(HostNotAllowed) as caught:
        netguard.resolve_checked("mail.internal.example", 993)
    assert str(caught.value) == GENERIC_REFUSAL


def test_a_name_resolving_to_one_public_and_one_private_address_is_refused(
    strict: None, fake_dns: FakeDNS
) -> None:
    # Given a name whose answer mixes a public and a private address
    fake_dns.add("mixed.example", ("93.184.216.34", "10.0.0.5"))
    # Then the whole host is refused, not just the private address
    with pytest.raises(HostNotAllowed) as caught:
        netguard.resolve_checked("mixed.example", 993)
    assert str(caught.value) == GENERIC_REFUSAL


def test_a_public_ip_literal_is_accepted_without_connecting(
    strict: None, fake_dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_connect(self: socket.socket, address: object) -> None:
        raise AssertionError(f"resolve_checked must not connect (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    assert netguard.resolve_checked("93.184.216.34", 993) == [(socket.AF_INET, "93.184.216.34")]
    assert netguard.resolve_checked("[2606:4700:4700::1111]", 993) == [
        (socket.AF_INET6, "2606:4700:4700::1111")
    ]


def test_a_name_with_only_public_addresses_returns_all_of_them(
    strict: None, fake_dns: FakeDNS
) -> None:
    fake_dns.add("mail.example.com", ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"))
    assert netguard.resolve_checked("mail.example.com", 587) == [
        (socket.AF_INET, "93.184.216.34"),
        (socket.AF_INET6, "2606:2800:220:1:248:1893:25c8:1946"),
    ]


@pytest.mark.parametrize("port", [22, 80, 6379, 0, 70000])
def test_a_port_outside_the_mail_ports_is_refused_with_the_generic_message(
    strict: None, fake_dns: FakeDNS, port: int
) -> None:
    with pytest.raises(HostNotAllowed) as caught:
        netguard.resolve_checked("93.184.216.34", port)
    assert str(caught.value) == GENERIC_REFUSAL


def test_an_empty_port_list_allows_any_port(
    strict: None, settings: Settings, fake_dns: FakeDNS
) -> None:
    settings.MAIL_ALLOWED_PORTS = []
    assert netguard.resolve_checked("93.184.216.34", 2525) == [(socket.AF_INET, "93.184.216.34")]


def test_a_name_that_does_not_resolve_raises_host_not_found(
    strict: None, fake_dns: FakeDNS
) -> None:
    with pytest.raises(HostNotFound) as caught:
        netguard.resolve_checked("no-such-host.invalid", 993)
    assert "no-such-host.invalid" in str(caught.value)


@pytest.mark.parametrize("host", ["", "   ", "[]", "mail.example.com\x00.evil"])
def test_an_empty_or_malformed_host_is_refused(strict: None, fake_dns: FakeDNS, host: str) -> None:
    with pytest.raises(HostNotAllowed):
        netguard.resolve_checked(host, 993)


def test_loopback_is_accepted_when_private_hosts_are_allowed(
    settings: Settings, fake_dns: FakeDNS
) -> None:
    settings.ALLOW_PRIVATE_MAIL_HOSTS = True
    settings.MAIL_ALLOWED_PORTS = []
    assert netguard.resolve_checked("127.1", 1143) == [(socket.AF_INET, "127.0.0.1")]
    # Addresses that are never a mail server stay refused.
    for host in ("0.0.0.0", "224.0.0.1", "::"):
        with pytest.raises(HostNotAllowed):
            netguard.resolve_checked(host, 1143)


def test_connect_checked_never_connects_to_a_refused_host(
    strict: None, fake_dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address))
    fake_dns.add("rebind.example", "10.0.0.5")
    with pytest.raises(HostNotAllowed):
        netguard.connect_checked("rebind.example", 993, timeout=1)
    assert attempts == []


def test_connect_checked_connects_to_the_checked_address_when_dns_changes_its_answer(
    strict: None, fake_dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a rebinding name: public on the first lookup, loopback afterwards
    fake_dns.add("rebind.example", "93.184.216.34", "127.0.0.1")
    attempts: list[object] = []

    def record_connect(self: socket.socket, address: object) -> None:
        attempts.append(address)
        # Stand in for the public server without leaving this machine.
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket.socket, "connect", record_connect)

    # When we connect
    with pytest.raises(ConnectionRefusedError):
        netguard.connect_checked("rebind.example", 993, timeout=1)

    # Then the name was looked up once and only the checked address was dialled
    assert fake_dns.calls == ["rebind.example"]
    assert attempts == [("93.184.216.34", 993)]


def test_connect_checked_reaches_the_listener_on_the_checked_address_not_the_second_answer(
    settings: Settings, fake_dns: FakeDNS
) -> None:
    # Given two local listeners on the same port and a name that answers with
    # the first on the first lookup and the second afterwards
    settings.ALLOW_PRIVATE_MAIL_HOSTS = True
    settings.MAIL_ALLOWED_PORTS = []
    first = socket.socket()
    second = socket.socket()
    try:
        first.bind(("127.0.0.1", 0))
        port = first.getsockname()[1]
        try:
            second.bind(("127.0.0.2", port))
        except OSError:
            pytest.skip("127.0.0.2 is not usable here")
        for listener in (first, second):
            listener.listen()
            listener.setblocking(False)
        fake_dns.add("rebind.example", "127.0.0.1", "127.0.0.2")

        # When we connect through the guard
        with netguard.connect_checked("rebind.example", port, timeout=2) as sock:
            # Then the connection reached the first listener only
            assert sock.getpeername() == ("127.0.0.1", port)
            accepted, _ = first.accept()
            accepted.close()
            with pytest.raises(BlockingIOError):
                second.accept()
    finally:
        first.close()
        second.close()


def test_mail_ssl_context_verifies_and_trusts_the_configured_ca(
    settings: Settings, mail_ca: MailCA
) -> None:
    settings.MAIL_TLS_CA_FILE = str(mail_ca.path)
    context = netguard.mail_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    subjects = [dict(item[0] for item in cert["subject"]) for cert in context.get_ca_certs()]
    assert any(s.get("organizationName") == "Postkamer test mail CA" for s in subjects)


def test_mail_ssl_context_is_shared_until_the_ca_file_changes(
    settings: Settings, mail_ca: MailCA, tmp_path
) -> None:
    settings.MAIL_TLS_CA_FILE = str(mail_ca.path)
    first = netguard.mail_ssl_context()
    assert netguard.mail_ssl_context() is first, "the CA bundle must not be reloaded per connection"

    copy = tmp_path / "ca.pem"
    copy.write_bytes(mail_ca.path.read_bytes())
    settings.MAIL_TLS_CA_FILE = str(copy)
    second = netguard.mail_ssl_context()
    assert second is not first
    os.utime(copy, ns=(0, 10**18))  # a rotated file: same path, new modification time
    assert netguard.mail_ssl_context() is not second

    settings.MAIL_TLS_CA_FILE = str(tmp_path / "missing.pem")
    with pytest.raises(OSError):
        netguard.mail_ssl_context()
