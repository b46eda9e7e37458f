"""Keyboard only: from the key list to the secret page and back, the QR toggle included."""
import re

from dashboard.models import Role
from tests import helpers

from .support import PHONE, TABLET, Journey, expect, generate_key, key_row, sign_in, status_of

MAX_TABS = 40


def tab_to(page, target) -> None:
    """Press Tab until ``target`` has the focus, and check that the focus can be seen."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            outline = target.evaluate("element => getComputedStyle(element).outlineStyle")
            assert outline != "none", "the focused element shows no focus outline"
            return
    raise AssertionError(f"{target} never received the focus after {MAX_TABS} presses of Tab")


def focused_id(page) -> str:
    return page.evaluate("document.activeElement.id")


def test_owner_activates_a_key_and_opens_the_qr_code_with_the_keyboard(page, clock):
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    journey = Journey("keyboard", page)
    sign_in(page, clock, owner)
    public_key = generate_key(page, clock, owner, name="Checkout server")

    tab_to(page, key_row(page, public_key).get_by_role("link", name=re.compile(r"^Activate\b")))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Activate API key")).to_be_visible()

    tab_to(page, page.get_by_label("IP addresses"))
    page.keyboard.type("127.0.0.1, 2001:db8::/32")
    page.keyboard.press("Tab")
    assert focused_id(page) == page.get_by_label("2FA code").get_attribute("id")
    page.keyboard.type(clock.next_code(owner))
    journey.check("activation-form-filled", widths=(PHONE,))
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Your secret key")).to_be_visible()
    qr = page.locator("details.qr-toggle svg")
    summary = page.locator("details.qr-toggle summary")
    tab_to(page, summary)
    expect(qr).to_be_hidden()
    page.keyboard.press("Enter")
    expect(qr).to_be_visible()
    journey.check("qr-open-by-keyboard", widths=(PHONE, TABLET))
    page.keyboard.press("Space")
    expect(qr).to_be_hidden()
    page.keyboard.press("Space")
    expect(qr).to_be_visible()

    tab_to(page, page.get_by_role("link", name="Done"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    assert status_of(page, public_key) == "Active"
    expect(key_row(page, public_key)).to_contain_text("127.0.0.1, 2001:db8::/32")
