"""Steps the journeys share: signing in, key actions as an Owner does them, screenshots and the axe check.

Everything here goes through the browser and reads what the page shows; nothing peeks at the database
except ``tests.helpers.current_code``, which plays the user's authenticator app.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests import helpers

try:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the conftest skips every journey then
    Axe = expect = None
    PlaywrightError = Exception

SCREENSHOTS = Path(__file__).parent / "screenshots"
PHONE, TABLET, DESKTOP = 360, 768, 1280
# axe-core impacts that fail a journey; "minor" and "moderate" findings are left to review.
BLOCKING_IMPACTS = {"serious", "critical"}
PUBLIC_KEY = re.compile(r"sbx_[0-9a-f]{40}")

_axe = Axe() if Axe is not None else None


# What sticks out to the right of the viewport and so makes the whole page scroll sideways. Content inside
# a scrolling box (a wide table in its wrapper, the tabs) is that box's business, not the page's.
_OVERFLOW_SCRIPT = """() => {
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= width) { return []; }
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    // An absolutely positioned element is clipped by the scrolling boxes from its containing block up only.
    const absolute = getComputedStyle(el).position === "absolute";
    let clipped = false;
    for (let up = absolute ? el.offsetParent : el.parentElement; up && up !== document.body;
         up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== "visible") { clipped = true; break; }
    }
    if (clipped || box.width === 0) { continue; }
    if (box.right > width + 1) {
      out.push(`${el.tagName.toLowerCase()}.${el.className} ends at ${Math.round(box.right)}px`);
    } else if (box.left + el.scrollWidth > width + 1 && getComputedStyle(el).overflowX === "visible") {
      const end = Math.round(box.left + el.scrollWidth);
      out.push(`the text of ${el.tagName.toLowerCase()}.${el.className} ends at ${end}px`);
    }
  }
  return out.length ? out.slice(0, 8) : [`document ${document.documentElement.scrollWidth}px wide`];
}"""


def horizontal_overflow(page) -> list[str]:
    return page.evaluate(_OVERFLOW_SCRIPT)


def accessibility_problems(page, options: dict | None = None) -> list[str]:
    """The serious and critical axe-core violations of the page as it is now, one readable line each."""
    results = _axe.run(page, options={"resultTypes": ["violations"], **(options or {})})
    lines = []
    for violation in results.response["violations"]:
        if violation["impact"] not in BLOCKING_IMPACTS:
            continue
        for node in violation["nodes"]:
            lines.append(
                f"[{violation['impact']}] {violation['id']}: {violation['help']} "
                f"at {' '.join(map(str, node['target']))}\n    {node['html'][:200]}\n    "
                + "; ".join(check["message"] for kind in ("any", "all", "none") for check in node.get(kind, []))
            )
    return lines


class Journey:
    """Screenshots under ``screenshots/<name>/<nn>-<step>.png`` and an axe check of every page shown."""

    def __init__(self, name: str, page):
        self.page = page
        self.folder = SCREENSHOTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    def check(self, step: str, *, widths: tuple[int, ...] = ()) -> None:
        """Check the current page with axe and screenshot it, then again at each extra width."""
        self._check_and_shoot(step)
        if widths:
            original = self.page.viewport_size
            for width in widths:
                self.page.set_viewport_size({"width": width, "height": original["height"]})
                self._check_and_shoot(f"{step}-{width}px", extra_width=True)
            self.page.set_viewport_size(original)

    def _check_and_shoot(self, step: str, *, extra_width: bool = False) -> None:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        self.page.screenshot(path=path, full_page=True, animations="disabled")
        width = self.page.viewport_size["width"]
        overflow = horizontal_overflow(self.page)
        assert not overflow, f"{self.page.url} ({step}) scrolls sideways at {width} px: {overflow}"
        # Colours do not change with the width, and the contrast rule is the slowest: checked once per page.
        options = {"rules": {"color-contrast": {"enabled": False}}} if extra_width else None
        problems = accessibility_problems(self.page, options)
        assert not problems, (
            f"axe-core found serious or critical problems on {self.page.url} ({step}, {width} px):\n"
            + "\n".join(problems)
        )


def settled_content(page) -> str:
    """The page's HTML once it stops navigating (a failed history navigation lands on an error page)."""
    for _ in range(100):
        try:
            return page.content()
        except PlaywrightError as error:
            if "navigating" not in str(error):
                raise
            page.wait_for_load_state()
            page.wait_for_timeout(20)
    raise AssertionError(f"{page.url} kept navigating")


# Steps


def sign_in(page, clock, user, journey: Journey | None = None) -> None:
    """Both factors, as on the sign-in pages: email and password, then the app's current code."""
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    if journey:
        journey.check("sign-in", widths=(PHONE,))
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(helpers.PASSWORD)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Enter your 2FA code")).to_be_visible()
    if journey:
        journey.check("sign-in-code")
    page.get_by_label("2FA code").fill(clock.next_code(user))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Sections")).to_be_visible()


def open_keys_tab(page) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()


def key_row(page, public_key: str):
    return page.locator(".keys-table tbody tr").filter(has_text=public_key)


def status_of(page, public_key: str) -> str:
    return key_row(page, public_key).locator(".badge").inner_text()


def generate_key(page, clock, user, *, name: str = "", journey: Journey | None = None) -> str:
    """Generate a key from the API keys tab; return the API key the success message names."""
    open_keys_tab(page)
    page.get_by_role("link", name="Generate API key").click()
    expect(page.get_by_role("heading", name="Generate API key")).to_be_visible()
    if name:
        page.get_by_label("Name").fill(name)
    page.get_by_label("2FA code").fill(clock.next_code(user))
    if journey:
        journey.check("generate", widths=(PHONE,))
    page.get_by_role("button", name="Generate", exact=True).click()
    message = page.get_by_role("status").filter(has_text="generated")
    expect(message).to_be_visible()
    public_key = PUBLIC_KEY.search(message.inner_text()).group()
    assert status_of(page, public_key) == "Generated"
    return public_key


def open_activation(page, public_key: str) -> None:
    # Each row's links also name their key for screen readers: "Activate Checkout server".
    key_row(page, public_key).get_by_role("link", name=re.compile(r"^Activate\b")).click()
    expect(page.get_by_role("heading", name="Activate API key")).to_be_visible()


def activate_key(page, clock, user, public_key: str, *, ips: str = "", journey: Journey | None = None) -> str:
    """Activate a never-activated key; return the secret key shown once."""
    open_activation(page, public_key)
    page.get_by_label("IP addresses").fill(ips)
    page.get_by_label("2FA code").fill(clock.next_code(user))
    if journey:
        journey.check("activate", widths=(PHONE,))
    page.get_by_role("button", name="Activate", exact=True).click()
    expect(page.get_by_role("heading", name="Your secret key")).to_be_visible()
    return page.get_by_label("Secret key", exact=True).input_value()


def answer_next_dialog(page, *, accept: bool) -> list[str]:
    """Answer the next confirm() dialog; return the list its message will be appended to."""
    seen: list[str] = []

    def answer(dialog):
        seen.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", answer)
    return seen


def submit_after_confirmation(page, button: str, *, cancel_first: bool = False) -> str:
    """Click a destructive button and accept its confirmation; return the question asked.

    With ``cancel_first``, first answer "Cancel" and check that the form was not sent.
    """
    if cancel_first:
        url = page.url
        seen = answer_next_dialog(page, accept=False)
        page.get_by_role("button", name=button, exact=True).click()
        assert seen, f"{button} asked no confirmation"
        assert page.url == url and page.get_by_role("button", name=button, exact=True).is_visible()
    seen = answer_next_dialog(page, accept=True)
    page.get_by_role("button", name=button, exact=True).click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    assert seen, f"{button} asked no confirmation"
    return seen[0]


def deactivate_key(page, clock, user, public_key: str, *, cancel_first: bool = False,
                   journey: Journey | None = None) -> None:
    key_row(page, public_key).get_by_role("link", name=re.compile(r"^Deactivate\b")).click()
    expect(page.get_by_role("heading", name="Deactivate API key")).to_be_visible()
    page.get_by_label("2FA code").fill(clock.next_code(user))
    if journey:
        journey.check("deactivate", widths=(PHONE,))
    question = submit_after_confirmation(page, "Deactivate", cancel_first=cancel_first)
    assert question == f"Deactivate API key {public_key}? Applications using it stop working at once."
    expect(page.get_by_role("status").filter(has_text="is deactivated")).to_be_visible()
    assert status_of(page, public_key) == "Deactivated"


def archive_key(page, clock, user, public_key: str, *, journey: Journey | None = None) -> None:
    key_row(page, public_key).get_by_role("link", name=re.compile(r"^Archive\b")).click()
    expect(page.get_by_role("heading", name="Archive API key")).to_be_visible()
    page.get_by_label("2FA code").fill(clock.next_code(user))
    if journey:
        journey.check("archive")
    question = submit_after_confirmation(page, "Archive")
    assert question == f"Archive API key {public_key}? This is permanent: it can never be activated again."
    expect(page.get_by_role("status").filter(has_text="is archived")).to_be_visible()
    expect(key_row(page, public_key)).to_have_count(0)
