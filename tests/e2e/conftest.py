"""Fixtures of the browser journeys: Debian's Chromium driven by Playwright against a live server.

The whole directory is skipped, with the reason and the fix, where Chromium or Playwright is missing.
Time is travelled, never waited for: each 2FA code is taken from the next 30-second step (``clock``).
"""
from __future__ import annotations

import datetime
import os
import shutil

import pytest
import time_machine

from tests import helpers

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if sync_playwright is None:
    CAUSE = "Playwright is not installed (pip install -r requirements-dev.txt)"
elif CHROMIUM is None:
    CAUSE = "no `chromium` on PATH (install Debian's Chromium: apt-get install -y chromium; no browser is downloaded)"
else:
    CAUSE = None
SKIP_REASON = f"browser journeys skipped: {CAUSE}" if CAUSE else None

HERE = os.path.dirname(__file__)


def pytest_collection_modifyitems(config, items):
    if SKIP_REASON is None:
        return
    journeys = [item for item in items if str(item.path).startswith(HERE + os.sep)]
    # CI sets E2E_REQUIRED=1: there, journeys that cannot run are a failure, not a skip.
    if journeys and os.environ.get("E2E_REQUIRED", "").strip() not in ("", "0"):
        raise pytest.UsageError(f"E2E_REQUIRED is set, but the browser journeys cannot run: {CAUSE}")
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in journeys:
        item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if SKIP_REASON is not None and terminalreporter.stats.get("skipped"):
        terminalreporter.write_line(f"tests/e2e: {SKIP_REASON}", yellow=True, bold=True)


@pytest.fixture(scope="package", autouse=True)
def _orm_beside_playwright():
    """Let the journeys' ORM calls run while Playwright's event loop sits in this thread.

    Playwright's sync API keeps an asyncio loop "running" in the main thread between its calls, so
    Django would take every ORM call of a test for one made from async code; here they really run one
    after the other, never at once. Only for this package: the browser stops at its end, and the rest
    of the suite keeps Django's check.
    """
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="package")
def browser(_orm_beside_playwright):
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    playwright.stop()


class PageProblems:
    """Console errors (a blocked inline style or script among them) and uncaught exceptions of a page."""

    # The browser logs every 4xx document it is shown; the journeys open the 403 page on purpose.
    EXPECTED = ("Failed to load resource: the server responded with a status of 403",)

    def __init__(self):
        self.messages: list[str] = []

    def watch(self, page):
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"uncaught: {error}"))

    def _console(self, message):
        if message.type == "error" and not message.text.startswith(self.EXPECTED):
            self.messages.append(f"console {message.type}: {message.text}")


@pytest.fixture
def new_page(browser, live_server, transactional_db):
    """Make a page in a fresh browser context (its own cookies), ``width`` x ``height`` pixels."""
    contexts = []
    problems = PageProblems()

    def make(width: int = 1280, height: int = 900):
        context = browser.new_context(
            base_url=live_server.url,
            viewport={"width": width, "height": height},
            locale="en-GB",
            timezone_id="UTC",
        )
        context.set_default_timeout(5_000)
        contexts.append(context)
        page = context.new_page()
        problems.watch(page)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems.messages, "The browser reported problems:\n" + "\n".join(problems.messages)


@pytest.fixture
def page(new_page):
    return new_page()


class Clock:
    """Real time, ticking, moved 30 seconds ahead for each new 2FA code (a code is accepted once per step)."""

    def __init__(self, traveller):
        self._traveller = traveller

    def next_code(self, user) -> str:
        """The code the user's app shows after moving to the next 30-second step."""
        self._traveller.shift(datetime.timedelta(seconds=30))
        return helpers.current_code(user)

    def code(self, user) -> str:
        """The code of the current step, the one the last ``next_code`` returned."""
        return helpers.current_code(user)

    def shift(self, seconds: float) -> None:
        self._traveller.shift(datetime.timedelta(seconds=seconds))


@pytest.fixture
def clock():
    # One second into a fresh 30-second step, so no journey step straddles a step boundary.
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    start = datetime.datetime.fromtimestamp((now // 30 + 1) * 30 + 1, datetime.timezone.utc)
    with time_machine.travel(start, tick=True) as traveller:
        yield Clock(traveller)
