"""SSRF guard for mail server hosts that users type in.

A user-supplied IMAP/SMTP host is an outbound TCP connection that we make on the
user's behalf, so it must not reach loopback, private networks or cloud metadata
endpoints. The guard resolves the name once, checks every address and hands
back only checked addresses; callers connect to those addresses (never to the
name again), so a second, different DNS answer cannot slip past the check.

Refusals all carry the same message so the API cannot be used to learn which
internal addresses or ports exist.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
import time

from django.conf import settings

GENERIC_REFUSAL = "This mail server address can't be used."

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges that Python's ``is_global`` (3.11) still calls global, or that embed an
# IPv4 address a translator would forward to.
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")


class HostNotAllowed(Exception):
    """The host, one of its addresses or the port is refused.

    The message never says which, so refusals can't be used as a scanner.
    """

    def __init__(self, message: str = GENERIC_REFUSAL) -> None:
        super().__init__(message)


class HostNotFound(Exception):
    """The name does not resolve to any address."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(f"Could not find the mail server {host}.")


def normalize_host(host: str) -> str:
    """The host as the resolver and TLS expect it: trimmed, IPv6 brackets removed."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1].strip()
    return host


def _check_port(port: int, *, mail: bool = True) -> None:
    # bool is an int subclass; "True" as a port is a bug, not port 1.
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise HostNotAllowed()
    if not mail:
        return
    allowed = settings.MAIL_ALLOWED_PORTS
    if allowed and port not in allowed:
        raise HostNotAllowed()


def _ipv4_refused(ip: ipaddress.IPv4Address, *, allow_private: bool) -> bool:
    # Never a unicast mail server, whatever the setting says.
    if ip.is_multicast or ip.is_unspecified or ip == ipaddress.IPv4Address("255.255.255.255"):
        return True
    if allow_private:
        return False
    return not ip.is_global or ip in _CGNAT or ip.is_reserved


def _ipv6_refused(ip: ipaddress.IPv6Address, *, allow_private: bool) -> bool:
    if ip.is_multicast or ip.is_unspecified:
        return True
    # Judge an embedded IPv4 address as what it really reaches.
    if ip.ipv4_mapped is not None:
        return _ipv4_refused(ip.ipv4_mapped, allow_private=allow_private)
    if allow_private:
        return False
    if ip in _IPV4_COMPATIBLE:
        if ip == ipaddress.IPv6Address("::1"):
            return True
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        return _ipv4_refused(embedded, allow_private=False)
    if ip.sixtofour is not None and _ipv4_refused(ip.sixtofour, allow_private=False):
        return True
    if any(
        ip in net
        for net in (_NAT64_WELL_KNOWN, _NAT64_LOCAL_USE, _IPV4_TRANSLATED, _TEREDO, _SITE_LOCAL)
    ):
        return True
    return not ip.is_global or ip.is_link_local or ip.is_loopback or ip.is_private


def is_refused_address(ip: IPAddress, *, allow_private: bool | None = None) -> bool:
    """Whether a mail connection to ``ip`` must be refused."""
    if allow_private is None:
        allow_private = bool(settings.ALLOW_PRIVATE_MAIL_HOSTS)
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_refused(ip, allow_private=allow_private)
    return _ipv6_refused(ip, allow_private=allow_private)


def resolve_checked(host: str, port: int, *, mail: bool = True) -> list[tuple[int, str]]:
    """Resolve ``host`` and return its ``(family, ip)`` pairs, all of them allowed.

    Raises HostNotAllowed (generic message) for a refused port or if any one
    address is refused, and HostNotFound if the name does not resolve.
    ``mail=False``: not a mail server (the autoconfig lookup's web server), so
    MAIL_ALLOWED_PORTS does not apply; the addresses are judged the same way.
    """
    _check_port(port, mail=mail)
    name = normalize_host(host)
    # An empty name makes getaddrinfo answer with loopback; NUL and whitespace
    # inside a name are never a real host.
    if not name or any(ch.isspace() or ch == "\x00" for ch in name):
        raise HostNotAllowed()
    try:
        # The OS resolver, not our own parser, decides what "127.1" or
        # "0x7f.0.0.1" means, so what we check is what a connect would reach.
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError) as exc:
        # gaierror, an over-long label the IDNA codec rejects, and the like.
        raise HostNotFound(name) from exc

    allow_private = bool(settings.ALLOW_PRIVATE_MAIL_HOSTS)
    checked: list[tuple[int, str]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise HostNotAllowed()
        raw_ip = str(sockaddr[0])
        try:
            # A scope id ("fe80::1%eth0") is not part of the address itself.
            ip = ipaddress.ip_address(raw_ip.split("%", 1)[0])
        except ValueError as exc:
            # Fail closed: an address we cannot parse is an address we cannot judge.
            raise HostNotAllowed() from exc
        if is_refused_address(ip, allow_private=allow_private):
            raise HostNotAllowed()
        pair = (int(family), raw_ip)
        if pair not in checked:
            checked.append(pair)
    if not checked:
        raise HostNotFound(name)
    return checked


def connect_resolved(addresses: list[tuple[int, str]], port: int, timeout: float) -> socket.socket:
    """Connect a TCP socket to the first reachable address of an already checked list.

    Only pass the result of :func:`resolve_checked`; this does no checking itself.
    ``timeout`` bounds all attempts together and is then the socket's timeout.
    """
    if not addresses:
        raise ConnectionError("No address to connect to")
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    for family, ip in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(remaining)
            # A numeric address: the socket layer parses it without another lookup.
            sock.connect((ip, port))
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        sock.settimeout(timeout)
        return sock
    raise last_error or TimeoutError("timed out")


def connect_checked(host: str, port: int, timeout: float) -> socket.socket:
    """Resolve and check ``host`` once, then connect to one of the checked addresses."""
    return connect_resolved(resolve_checked(host, port), port, timeout)


def mail_ssl_context() -> ssl.SSLContext:
    """A verifying client context, also trusting MAIL_TLS_CA_FILE when set.

    Shared between connections: loading the system's CA bundle costs tens of
    milliseconds, on every sync and send otherwise. A changed CA file (by path
    or modification time) gets a new context.
    """
    ca_file = settings.MAIL_TLS_CA_FILE or ""
    try:
        changed = os.stat(ca_file).st_mtime_ns if ca_file else 0
    except OSError:
        changed = -1  # load_verify_locations says what is wrong with it
    return _ssl_context(ca_file, changed)


@functools.lru_cache(maxsize=4)
def _ssl_context(ca_file: str, changed: int) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context
