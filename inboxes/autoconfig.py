"""Server settings for an address: the bundled presets, else a Thunderbird-style
autoconfig lookup where the operator allows it.

The lookup (``MAIL_AUTOCONFIG_LOOKUP``, off by default) asks the address's own
domain, as Thunderbird does, at ``https://autoconfig.<domain>/mail/config-v1.1.xml``
and ``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml``. The domain
is whatever a user typed, so every request goes through the SSRF guard
(``inboxes.netguard``: no private, loopback or metadata addresses unless
ALLOW_PRIVATE_MAIL_HOSTS), is time-limited, follows no redirects, reads at most
``MAX_DOCUMENT_BYTES`` and refuses any document with a DTD (no entity tricks).
A failed lookup is just "nothing found": the user types the servers in.
"""

from __future__ import annotations

import http.client
import logging
import re
import ssl
import time
import xml.etree.ElementTree as ElementTree
from urllib.parse import quote, urlsplit

import defusedxml.ElementTree as safe_xml
import idna
from defusedxml import DefusedXmlException
from django.conf import settings

from inboxes import netguard
from inboxes.models import Security
from inboxes.provider_presets import (
    LOCAL_PART,
    WHOLE_ADDRESS,
    ProviderPreset,
    ServerPreset,
    address_domain,
    preset_for,
)

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 64 * 1024
REQUEST_TIMEOUT = 4.0  # seconds per request
TOTAL_TIMEOUT = 8.0  # seconds for the whole lookup

_SOCKET_TYPES = {"SSL": Security.SSL.value, "STARTTLS": Security.STARTTLS.value}
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9-]{1,63}\.)+[a-z0-9-]{2,63}$")


def server_settings_for(address: str) -> dict:
    """What the connect forms pre-fill for ``address``: ``{"found": False}`` or the
    settings with their ``source`` ("preset" or "autoconfig")."""
    preset = preset_for(address)
    if preset is not None:
        return preset.as_dict(address.strip())
    if settings.MAIL_AUTOCONFIG_LOOKUP:
        found = autoconfig_lookup(address)
        if found is not None:
            return found.as_dict(address.strip(), source="autoconfig")
    return {"found": False}


def _ascii_domain(address: str) -> str | None:
    domain = address_domain(address)
    if not domain:
        return None
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        return None
    return ascii_domain if _DOMAIN_RE.match(ascii_domain) else None


def autoconfig_lookup(address: str) -> ProviderPreset | None:
    """Ask the address's domain for its server settings (see the module's note)."""
    domain = _ascii_domain(address)
    if domain is None:
        return None
    deadline = time.monotonic() + TOTAL_TIMEOUT
    # settings.MAIL_AUTOCONFIG_URLS: {domain} is the IDNA form of the address's domain,
    # {address} the URL-quoted address.
    for template in settings.MAIL_AUTOCONFIG_URLS:
        url = template.format(domain=domain, address=quote(address.strip(), safe="@"))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            document = _fetch(url, timeout=min(REQUEST_TIMEOUT, remaining))
        except (
            netguard.HostNotAllowed,
            netguard.HostNotFound,
            OSError,
            http.client.HTTPException,
            ValueError,
        ) as exc:
            log.info("autoconfig: %s: %s", url, type(exc).__name__)
            continue
        if document is None:
            continue
        preset = parse_autoconfig(document, domain=domain)
        if preset is not None:
            return preset
    return None


def _fetch(url: str, *, timeout: float) -> bytes | None:
    """GET ``url`` (https only) through the SSRF guard; the body, or None on any
    answer but a small 200."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("autoconfig URLs must be https")
    host, port = parts.hostname, parts.port or 443
    # Resolve and judge once, then connect to the judged address (never the name again).
    addresses = netguard.resolve_checked(host, port, mail=False)
    raw = netguard.connect_resolved(addresses, port, timeout)
    context: ssl.SSLContext = netguard.mail_ssl_context()
    try:
        sock = context.wrap_socket(raw, server_hostname=host)
    except OSError:
        raw.close()
        raise
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    connection.sock = sock  # already connected and checked: http.client uses it as is
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection.request("GET", path, headers={"Accept": "application/xml, text/xml"})
        response = connection.getresponse()
        if response.status != 200:
            return None
        return _read_small(response, deadline=time.monotonic() + timeout)
    finally:
        connection.close()


def _first_server(elements: list[ElementTree.Element]) -> ServerPreset | None:
    for element in elements:
        server = _server(element)
        if server is not None:
            return server
    return None


def _read_small(response: http.client.HTTPResponse, *, deadline: float) -> bytes | None:
    """The body, if it is at most MAX_DOCUMENT_BYTES and arrives before ``deadline``
    (the socket's timeout bounds each read, not a server that drips bytes)."""
    body = b""
    while len(body) <= MAX_DOCUMENT_BYTES:
        if time.monotonic() > deadline:
            return None
        chunk = response.read1(8192)
        if not chunk:
            return body
        body += chunk
    return None


def _server(element: ElementTree.Element) -> ServerPreset | None:
    host = (element.findtext("hostname") or "").strip()
    port_text = (element.findtext("port") or "").strip()
    security = _SOCKET_TYPES.get((element.findtext("socketType") or "").strip().upper())
    if not _HOST_RE.match(host) or not port_text.isdigit() or security is None:
        return None  # plain-text servers are not offered; the user may still type one
    port = int(port_text)
    if not 0 < port < 65536:
        return None
    username = (element.findtext("username") or "").strip()
    style = LOCAL_PART if username == "%EMAILLOCALPART%" else WHOLE_ADDRESS
    return ServerPreset(host, port, security, username=style)


def parse_autoconfig(document: bytes, *, domain: str) -> ProviderPreset | None:
    """The first IMAP and SMTP servers of a config-v1.1 document, or None.

    A DTD is refused rather than parsed (defusedxml, whatever the document's encoding):
    a config file never needs one, and it is what entity-expansion attacks are made of."""
    if len(document) > MAX_DOCUMENT_BYTES:
        return None
    try:
        root = safe_xml.fromstring(document, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException):
        return None
    provider = root.find("emailProvider")
    if root.tag != "clientConfig" or provider is None:
        return None
    imap = _first_server(provider.findall("incomingServer[@type='imap']"))
    smtp = _first_server(provider.findall("outgoingServer[@type='smtp']"))
    if imap is None or smtp is None:
        return None
    label = (provider.findtext("displayName") or provider.get("id") or domain).strip()[:80]
    return ProviderPreset(label, imap=imap, smtp=smtp, domains=(domain,))
