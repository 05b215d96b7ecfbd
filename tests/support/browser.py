"""Browser fixtures: Debian's Chromium driven by Playwright against pytest-django's live server.

Every page a test opens is watched for what a user would never see but should
never happen: a request that leaves 127.0.0.1, a console error, an uncaught
JavaScript exception or a Content-Security-Policy violation. Any of those fails
the test when it ends.

Use from a test module with ``pytest_plugins = ["tests.support.browser"]``.

Why the Playwright driver lives per module rather than per session: Playwright's
sync API keeps an asyncio loop running in the main thread for as long as it is
started. While it runs, Django refuses ORM calls from that thread
(SynchronousOnlyOperation) unless DJANGO_ALLOW_ASYNC_UNSAFE is set, so the
browser tests set that variable, and a driver kept alive until the end of the
session would leak both the running loop and the variable into every test module
that runs after them. Starting Chromium costs about a second.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
# A browser test waits for the page, never for the network beyond 127.0.0.1.
TIMEOUT_MS = 10_000

# Page JavaScript cannot reach the test, but its console can: report every
# Content-Security-Policy violation there with a recognisable prefix.
_CSP_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline code"}`
    + ` at ${event.sourceFile || event.documentURI}:${event.lineNumber}`);
});
"""
_CSP_PREFIX = "CSP violation:"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One headless Chromium for the module; each test gets fresh contexts from ``pages``."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        # See the module docstring: the test thread shares its thread with Playwright's loop.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield chromium
            finally:
                chromium.close()


@dataclass
class PageProblems:
    """What went wrong in the browser while a test ran."""

    outside_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    # Console errors the test provoked on purpose (e.g. the 403 of a forbidden page).
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect_console_error(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def on_console(self, message) -> None:
        if message.type != "error":
            return
        text = message.text
        if text.startswith(_CSP_PREFIX):
            self.csp_violations.append(text)
        elif "Content Security Policy" in text:
            # Chromium's own report of the same violation.
            self.csp_violations.append(text)
        else:
            location = message.location or {}
            self.console_errors.append(f"{text} ({location.get('url', '?')})")

    def unexpected(self) -> dict[str, list[str]]:
        console = [e for e in self.console_errors if not any(p.search(e) for p in self.expected)]
        found = {
            "requests outside 127.0.0.1": self.outside_requests,
            "console errors": console,
            "uncaught JavaScript errors": self.page_errors,
            "Content-Security-Policy violations": self.csp_violations,
        }
        return {name: items for name, items in found.items() if items}


class Pages:
    """Opens fresh browser contexts (one per simulated person) against the live server."""

    def __init__(self, browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.problems = PageProblems()
        self._contexts: list = []

    def new(self, *, javascript: bool = True, **options):
        """A page in a new context: its own cookies, so its own logged-in user.

        ``options`` go to Playwright's ``new_context`` (e.g. ``viewport``, ``timezone_id``);
        ``javascript=False`` tries a page as a browser without JavaScript does.
        """
        context = self.browser.new_context(
            **{
                "base_url": self.base_url,
                "viewport": {"width": 1200, "height": 900},
                "java_script_enabled": javascript,
                **options,
            }
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(_CSP_REPORTER)
        context.route("**/*", self._only_local)
        self._contexts.append(context)
        page = context.new_page()
        page.on("console", self.problems.on_console)
        page.on("pageerror", lambda error: self.problems.page_errors.append(str(error)))
        return page

    def _only_local(self, route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.problems.outside_requests.append(url)
            route.abort("blockedbyclient")

    def log_in(self, email: str, password: str):
        """A new context whose user has logged in through the login form."""
        page = self.new()
        page.goto("/login/")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/settings/email/")
        return page

    @staticmethod
    def screenshot(page, name: str) -> None:
        """Save a full-page screenshot to /tmp/postkamer-NAME.png if POSTKAMER_SCREENSHOTS is set.

        For people looking at the pages, not for assertions.
        """
        if os.environ.get("POSTKAMER_SCREENSHOTS"):
            page.screenshot(path=f"/tmp/postkamer-{name}.png", full_page=True)

    def close(self) -> None:
        for context in self._contexts:
            context.close()


@pytest.fixture
def pages(browser, live_server) -> Iterator[Pages]:
    """Fresh contexts for one test; fails the test on any browser-side problem."""
    opened = Pages(browser, live_server.url)
    try:
        yield opened
    finally:
        opened.close()
    problems = opened.problems.unexpected()
    if problems:
        lines = [f"{name}:\n  " + "\n  ".join(items) for name, items in problems.items()]
        pytest.fail("The browser saw problems during the test:\n" + "\n".join(lines))
