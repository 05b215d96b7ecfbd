"""The sync benchmark's baselines: bare fetch + parse loops with the client library
each provider's product code uses, each run in a process of its own
(``bench/sync.py --child baseline[-gmail|-microsoft]``), and Dovecot's first indexing
of a new Maildir, kept out of every measurement.
"""

from __future__ import annotations

import email
import email.policy
import os
import time

from bench import harness

BASELINE_BATCH = 200


class BareLoop:
    """What a bare loop measures: messages and bytes parsed, wall and CPU time from
    its start, this process's memory at the start and at the peak."""

    def __init__(self) -> None:
        self.rss_start = harness.proc_status_kib("VmRSS")
        self.started = time.perf_counter()
        self.cpu_start = time.process_time()
        self.count = self.bytes = 0

    def parse(self, raw: bytes) -> None:
        """One message, parsed as the stdlib does by default."""
        email.message_from_bytes(raw, policy=email.policy.default)
        self.count += 1
        self.bytes += len(raw)

    def result(self, **seconds: float) -> dict:
        return {
            "count": self.count,
            "bytes": self.bytes,
            "seconds": time.perf_counter() - self.started,
            "cpu_seconds": time.process_time() - self.cpu_start,
            **seconds,  # list, fetch and parse
            "rss_start_kib": self.rss_start,
            "peak_kib": harness.proc_status_kib("VmHWM"),
        }


def child_baseline(args) -> dict:
    import ssl

    import imapclient

    context = ssl.create_default_context(cafile=os.environ["MAIL_TLS_CA_FILE"])
    loop = BareLoop()
    client = imapclient.IMAPClient(
        args.host, port=args.port, ssl=True, ssl_context=context, timeout=300
    )
    client.login(harness.MAIL_USER, args.password)
    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search("ALL"))
    fetch_seconds = parse_seconds = 0.0
    for start in range(0, len(uids), BASELINE_BATCH):
        batch = uids[start : start + BASELINE_BATCH]
        t = time.perf_counter()
        response = client.fetch(batch, ["BODY.PEEK[]"])
        t2 = time.perf_counter()
        fetch_seconds += t2 - t
        for uid in batch:
            loop.parse(response[uid][b"BODY[]"])
        parse_seconds += time.perf_counter() - t2
        del response
    client.logout()
    return loop.result(fetch_seconds=fetch_seconds, parse_seconds=parse_seconds)


def child_baseline_gmail(args) -> dict:
    """google-api-python-client as the product uses it: messages.list (500 a page),
    then messages.get(format=raw) in batch requests of 50, one batch at a time;
    each message parsed with the stdlib."""
    import base64

    import google_auth_httplib2
    import httplib2
    from google.oauth2.credentials import Credentials
    from googleapiclient.discovery import build
    from googleapiclient.http import BatchHttpRequest

    loop = BareLoop()
    http = google_auth_httplib2.AuthorizedHttp(
        Credentials(token=args.token),
        http=httplib2.Http(ca_certs=os.environ["OAUTH_CA_FILE"], timeout=300, proxy_info=None),
    )
    service = build(
        "gmail",
        "v1",
        http=http,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": os.environ["GMAIL_API_ENDPOINT"]},
    )
    messages = service.users().messages()
    ids: list[str] = []
    request = messages.list(userId="me", labelIds=["INBOX"], maxResults=args.page_size)
    while request is not None:
        page = request.execute()
        ids += [m["id"] for m in page.get("messages", [])]
        request = messages.list_next(request, page)
    ids.reverse()  # oldest first, as the product reads them
    list_seconds = time.perf_counter() - loop.started
    fetch_seconds = parse_seconds = 0.0
    batch_size = args.batch_size
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        found: dict[str, dict] = {}

        def on_item(request_id, response, exception, found=found):
            if exception is not None:
                raise exception
            found[request_id] = response

        batch = BatchHttpRequest(callback=on_item, batch_uri=os.environ["GMAIL_BATCH_URI"])
        for message_id in chunk:
            batch.add(messages.get(userId="me", id=message_id, format="raw"), request_id=message_id)
        t = time.perf_counter()
        batch.execute(http=http)
        t2 = time.perf_counter()
        fetch_seconds += t2 - t
        for message_id in chunk:
            data = found[message_id]["raw"]
            raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
            loop.parse(raw)
        parse_seconds += time.perf_counter() - t2
        del found
    return loop.result(
        list_seconds=list_seconds, fetch_seconds=fetch_seconds, parse_seconds=parse_seconds
    )


def child_baseline_microsoft(args) -> dict:
    """requests as the product uses it: one delta round ($select=id, pages of 100),
    then GET messages/{id}/$value with 4 requests in flight (Graph's limit per
    mailbox, as the product), kept full all the time; parsed in the main thread."""
    import collections
    import itertools
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import quote

    import requests
    from requests.adapters import HTTPAdapter

    loop = BareLoop()
    session = requests.Session()
    session.trust_env = False
    session.verify = os.environ["OAUTH_CA_FILE"]
    workers = args.batch_size
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=workers, max_retries=0)
    session.mount("https://", adapter)
    auth = {"Authorization": f"Bearer {args.token}"}
    base = f"{os.environ['GRAPH_API_ENDPOINT'].rstrip('/')}/users/{quote(args.address, safe='@')}"
    url = f"{base}/mailFolders/inbox/messages/delta?$select=id"
    keys: list[str] = []
    while url:
        response = session.get(
            url, headers={**auth, "Prefer": f"odata.maxpagesize={args.page_size}"}
        )
        response.raise_for_status()
        page = response.json()
        keys += [item["id"] for item in page.get("value", [])]
        url = page.get("@odata.nextLink", "")
    list_seconds = time.perf_counter() - loop.started

    def download(key: str) -> bytes:
        answer = session.get(f"{base}/messages/{quote(key, safe='')}/$value", headers=auth)
        answer.raise_for_status()
        return answer.content

    wait_seconds = parse_seconds = 0.0
    pending = iter(keys)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Downloads stay ahead of the parse: the workers never wait for it.
        in_flight = collections.deque(
            pool.submit(download, key) for key in itertools.islice(pending, 4 * workers)
        )
        while in_flight:
            t = time.perf_counter()
            raw = in_flight.popleft().result()
            t2 = time.perf_counter()
            next_key = next(pending, None)
            if next_key is not None:
                in_flight.append(pool.submit(download, next_key))
            loop.parse(raw)
            parse_seconds += time.perf_counter() - t2
            wait_seconds += t2 - t
    session.close()
    return loop.result(
        list_seconds=list_seconds, fetch_seconds=wait_seconds, parse_seconds=parse_seconds
    )


def warm_dovecot(dovecot, password: str, username: str = harness.MAIL_USER) -> float:
    """Let Dovecot index the new Maildir once, outside the measurements."""
    import ssl

    import imapclient

    context = ssl.create_default_context(cafile=os.environ["MAIL_TLS_CA_FILE"])
    t = time.perf_counter()
    client = imapclient.IMAPClient(
        dovecot.host, port=dovecot.imaps_port, ssl=True, ssl_context=context, timeout=600
    )
    client.login(username, password)
    info = client.select_folder("INBOX", readonly=True)
    if int(info.get(b"EXISTS", 0)):
        uids = client.search("ALL")
        for start in range(0, len(uids), 2000):  # servers cap the command length
            client.fetch(uids[start : start + 2000], ["RFC822.SIZE", "INTERNALDATE"])
    client.logout()
    return time.perf_counter() - t
