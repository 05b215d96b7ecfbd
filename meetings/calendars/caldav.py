"""A CalDAV calendar (Fastmail, Nextcloud, iCloud, Radicale...) through the ``caldav``
library: the principal's first calendar (or the one the URL names), busy times from
a time-range search, one event per booking saved under its UID, removed by URL.

The password is sealed like a mailbox's secrets (AES-GCM, inboxes.credentials),
bound to the connection's row. The server is a URL the user typed, so the host
goes through the same SSRF check as a mail server (inboxes.netguard: no loopback
or private addresses unless ALLOW_PRIVATE_MAIL_HOSTS, as in the tests) before every
request the library makes (it also follows hrefs the server answers with);
redirects are not followed. The check resolves the name itself, so a DNS answer
that changes between the check and the connection is not covered (unlike the
mail connections, which connect to the checked address).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from core.errors import ConnectionFailed
from inboxes.credentials import (
    SecretDecryptionError,
    decrypt_secrets,
    encrypt_secrets,
    is_current,
)
from inboxes.netguard import is_refused_address, normalize_host
from meetings.models import MeetingsConnection

TIMEOUT_SECONDS = 15

# caldav (with niquests and its QUIC stack) and icalendar are imported where a calendar
# is read or written, not with the module: the app's start-up imports this module
# (the secret rotator, meetings/apps.py), and every web and worker process paid about
# 20 MiB for libraries that only CalDAV users' booking requests need.


@dataclass(frozen=True)
class CaldavAccount:
    url: str
    username: str
    password: str


# --- the password at rest ----------------------------------------------------------------------


def _row(connection: MeetingsConnection) -> str:
    return f"meetings-connection:{connection.pk}"


def caldav_seal(connection: MeetingsConnection, password: str) -> bytes:
    return encrypt_secrets(
        {"password": password}, account_id=connection.account_id, mailbox_id=_row(connection)
    )


def caldav_account(connection: MeetingsConnection) -> CaldavAccount:
    if not connection.caldav_secret:
        raise ConnectionFailed("The CalDAV password is missing; enter it again.", step="auth")
    try:
        secrets = decrypt_secrets(
            connection.caldav_secret, account_id=connection.account_id, mailbox_id=_row(connection)
        )
    except SecretDecryptionError as exc:
        raise ConnectionFailed(
            "The CalDAV password can no longer be read; enter it again.", step="auth"
        ) from exc
    return CaldavAccount(
        url=connection.caldav_url, username=connection.caldav_username, password=secrets["password"]
    )


def caldav_secrets_rotate(result: Any) -> None:
    """``manage.py rotate_encryption_keys``: CalDAV passwords under the first key
    (``result`` is inboxes.secrets_rotation.RotationResult)."""
    from django.db import transaction

    with transaction.atomic():
        rows = MeetingsConnection.objects.select_for_update().filter(caldav_secret__isnull=False)
        for connection in rows:
            blob = bytes(connection.caldav_secret or b"")
            if not blob:
                continue
            if is_current(blob):
                result.current += 1
                continue
            try:
                password = caldav_account(connection).password
            except ConnectionFailed:
                result.unreadable.append(str(connection.pk))
                continue
            connection.caldav_secret = caldav_seal(connection, password)
            connection.save(update_fields=["caldav_secret"])
            result.rotated += 1


# --- connecting ----------------------------------------------------------------------------------


def _check_url(url: str) -> None:
    """http(s) only, and a host the netguard allows (every address it resolves to)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectionFailed(
            "The CalDAV URL must start with https:// (or http://) and name a server.", step="dns"
        )
    host = normalize_host(parts.hostname)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ConnectionFailed("The CalDAV URL has an invalid port.", step="dns") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConnectionFailed(f"Could not find the server {host}.", step="dns") from exc
    import ipaddress

    allow_private = bool(settings.ALLOW_PRIVATE_MAIL_HOSTS)
    for _family, _type, _proto, _canon, sockaddr in infos:
        try:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        except ValueError as exc:
            raise ConnectionFailed(
                "This calendar server address can't be used.", step="dns"
            ) from exc
        if is_refused_address(ip, allow_private=allow_private):
            raise ConnectionFailed("This calendar server address can't be used.", step="dns")


def _guard(session: Any) -> None:
    """Every request the library makes (it follows hrefs from the server's answers)
    goes through the host check; no redirects, no proxies from the environment."""
    session.trust_env = False
    send = session.request

    def checked(method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        _check_url(str(url))
        kwargs["allow_redirects"] = False
        return send(method, url, *args, **kwargs)

    session.request = checked


@contextlib.contextmanager
def _client(account: CaldavAccount) -> Iterator[Any]:
    from caldav.davclient import DAVClient
    from caldav.lib import error as dav_error

    _check_url(account.url)
    client = DAVClient(
        url=account.url.strip(),
        username=account.username,
        password=account.password,
        timeout=TIMEOUT_SECONDS,
    )
    _guard(client.session)
    try:
        yield client
    except ConnectionFailed:
        raise
    except dav_error.AuthorizationError as exc:
        raise ConnectionFailed(
            "The calendar server refused the user name or password; check them (some "
            "providers want an app password).",
            step="auth",
        ) from exc
    except dav_error.NotFoundError as exc:
        raise ConnectionFailed(
            "There is no calendar at this URL; check the CalDAV address your provider gives.",
            step="caldav",
        ) from exc
    except dav_error.DAVError as exc:
        raise ConnectionFailed(
            f"The calendar server answered with an error: {exc}", step="caldav"
        ) from exc
    except Exception as exc:  # the HTTP library's own errors (refused, TLS, timeout)
        text = f"{type(exc).__name__}: {exc}"
        step = "tls" if "ssl" in text.lower() or "certificate" in text.lower() else "tcp"
        raise ConnectionFailed(f"Could not reach the calendar server ({text}).", step=step) from exc
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _calendar(client: Any, calendar_url: str = "") -> Any:
    if calendar_url:
        return client.calendar(url=calendar_url)
    principal = client.principal()
    calendars = principal.calendars()
    if not calendars:
        raise ConnectionFailed(
            "The account has no calendar at this address; create one or give the calendar's "
            "own URL.",
            step="caldav",
        )
    wanted = next(
        (c for c in calendars if str(c.url).rstrip("/") == client.url.geturl().rstrip("/")), None
    )
    return wanted or calendars[0]


def caldav_probe(account: CaldavAccount) -> str:
    """Log in, find the calendar and read it once; the calendar's URL. Raises
    ConnectionFailed with the step (dns, tcp, tls, auth, caldav)."""
    with _client(account) as client:
        calendar = _calendar(client)
        now = datetime.now(UTC)
        calendar.search(start=now, end=now, event=True)
        return str(calendar.url)


# --- the backend (see meetings/calendars/__init__.py) ---------------------------------------------


def _utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.combine(value, time(0), tzinfo=UTC)  # all day: taken as UTC days


def busy(connection: MeetingsConnection, start: datetime, end: datetime) -> list:
    from meetings.calendars import Interval

    found = []
    with _client(caldav_account(connection)) as client:
        calendar = _calendar(client, connection.calendar_id)
        for item in calendar.search(start=start, end=end, event=True, expand=True):
            component = item.icalendar_component
            if str(component.get("TRANSP", "")).upper() == "TRANSPARENT":
                continue
            if str(component.get("STATUS", "")).upper() == "CANCELLED":
                continue
            begin = component.get("DTSTART")
            if begin is None:
                continue
            finish = component.get("DTEND")
            first = _utc(begin.dt)
            if finish is not None:
                last = _utc(finish.dt)
            elif component.get("DURATION") is not None:
                last = first + component.get("DURATION").dt
            else:
                last = first
            if last > first:
                found.append(Interval(first, last))
    return found


def _ics(event: Any) -> str:
    import icalendar

    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//Postkamer//Meetings//EN")
    calendar.add("version", "2.0")
    item = icalendar.Event()
    item.add("uid", event.uid)
    item.add("dtstamp", datetime.now(UTC))
    item.add("dtstart", event.start.astimezone(UTC))
    item.add("dtend", event.end.astimezone(UTC))
    item.add("summary", event.summary)
    item.add("sequence", event.sequence)
    if event.description:
        item.add("description", event.description)
    if event.organizer:
        item.add("organizer", f"mailto:{event.organizer}")
    for attendee in event.attendees:
        item.add("attendee", f"mailto:{attendee}")
    calendar.add_component(item)
    return str(calendar.to_ical().decode())


def write(connection: MeetingsConnection, event: Any, event_id: str) -> str:
    """Saved under the event's UID: writing again (a reschedule) replaces it."""
    with _client(caldav_account(connection)) as client:
        calendar = _calendar(client, connection.calendar_id)
        saved = calendar.save_event(_ics(event))
        return str(saved.url)


def remove(connection: MeetingsConnection, event_id: str, event: Any) -> None:
    from caldav.lib import error as dav_error

    with _client(caldav_account(connection)) as client:
        calendar = _calendar(client, connection.calendar_id)
        try:
            target = (
                calendar.event_by_url(event_id) if event_id else calendar.event_by_uid(event.uid)
            )
            target.delete()
        except dav_error.NotFoundError:
            return  # already gone
