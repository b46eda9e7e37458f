"""Journey 2: the Owner generates a key, activates it for two addresses and sees its secret exactly once."""
import time

from dashboard.models import Role
from keys import services
from tests import helpers

from .support import (
    PHONE, TABLET, Journey, PlaywrightError, activate_key, expect, generate_key, key_row, open_activation,
    settled_content, sign_in, status_of,
)


# Nothing of the element's text is scrolled out of sight, across or down.
WHOLE_TEXT_SHOWN = "box => box.scrollWidth <= box.clientWidth && box.scrollHeight <= box.clientHeight"


def test_owner_activates_a_key_and_sees_its_secret_once(page, clock):
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    journey = Journey("secret-shown-once", page)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])

    sign_in(page, clock, owner, journey)
    expect(page.get_by_text("No API keys yet. Generate one to start calling the sandbox API.")).to_be_visible()
    journey.check("empty-key-list", widths=(PHONE, TABLET))

    public_key = generate_key(page, clock, owner, name="Checkout server", journey=journey)
    journey.check("key-generated", widths=(PHONE,))

    secret = activate_key(page, clock, owner, public_key, ips="127.0.0.1, 203.0.113.7", journey=journey)
    assert len(secret) >= 40
    # The warning comes first, before the secret itself.
    warning = page.get_by_text("Make sure no one can see or record your screen")
    expect(warning).to_be_visible()
    assert warning.bounding_box()["y"] < page.get_by_label("Secret key", exact=True).bounding_box()["y"]
    # Nothing else to click: no tabs, no menus; only Copy, the QR toggle and Done.
    expect(page.get_by_role("navigation", name="Sections")).to_have_count(0)
    clickable = page.locator("main a, main button, main summary, header a, header summary, header button")
    labels = sorted(" ".join(text.split()) for text in clickable.all_inner_texts())
    assert labels == ["Copy secret key", "Done", "Secret key QR code"], labels
    expect(page.get_by_text(public_key)).to_be_visible()
    qr_toggle = page.get_by_text("Secret key QR code")
    qr = page.locator("details.qr-toggle svg")
    expect(qr).to_be_hidden()
    journey.check("secret", widths=(PHONE, TABLET))
    secret_box = page.get_by_label("Secret key", exact=True)
    original = page.viewport_size
    for width in (PHONE, TABLET, original["width"]):
        page.set_viewport_size({"width": width, "height": original["height"]})
        assert secret_box.evaluate(WHOLE_TEXT_SHOWN), f"part of the secret is hidden at {width} px"
    page.set_viewport_size(original)
    secret_box.click()  # selected whole, ready to copy by hand
    assert page.evaluate("document.activeElement.value.substring("
                         "document.activeElement.selectionStart, document.activeElement.selectionEnd)") == secret

    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    expect(page.get_by_role("button", name="Copied")).to_be_visible()

    qr_toggle.click()
    expect(qr).to_be_visible()
    assert qr.bounding_box()["width"] >= 150
    journey.check("secret-qr", widths=(PHONE,))
    qr_toggle.click()
    expect(qr).to_be_hidden()

    page.get_by_role("link", name="Done").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    assert status_of(page, public_key) == "Active"
    expect(key_row(page, public_key)).to_contain_text("127.0.0.1, 203.0.113.7")
    journey.check("key-active", widths=(PHONE, TABLET))
    assert secret not in settled_content(page)

    # Back to the response that showed it: no-store, so the browser has nothing to show and will not
    # resend the form by itself.
    try:
        page.go_back()
    except PlaywrightError as error:
        assert "ERR_CACHE_MISS" in str(error)
    assert secret not in settled_content(page)
    # Reloading resends the activation form: the code is spent and the key active, so still no secret.
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("This API key is already active.")
    assert secret not in settled_content(page)
    journey.check("after-reload")
    # Nor on any other page of the merchant.
    for section in ("keys/", "api-requests/", "signature-check/", "activity/"):
        page.goto(f"/m/{merchant.slug}/{section}")
        assert secret not in settled_content(page), section
    journey.check("activity", widths=(PHONE,))


def test_a_second_click_on_activate_sends_nothing_and_the_secret_is_shown(page, clock, monkeypatch):
    """A second submission would spend the code again and replace the secret page with a refusal, for good."""
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    sign_in(page, clock, owner)
    public_key = generate_key(page, clock, owner)
    open_activation(page, public_key)
    page.get_by_label("2FA code").fill(clock.next_code(owner))
    # A slow answer, as over a slow network: the form is still on screen for the second click.
    activate = services.activate_key
    monkeypatch.setattr(services, "activate_key", lambda **kwargs: (time.sleep(0.5), activate(**kwargs))[1])
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)

    # Two clicks 100 ms apart, from the page itself: Playwright's own click waits for the navigation to end.
    page.get_by_role("button", name="Activate", exact=True).evaluate(
        "button => { button.click(); setTimeout(() => button.click(), 100); }"
    )

    expect(page.get_by_role("heading", name="Your secret key")).to_be_visible()
    assert len(posts) == 1, posts
    assert len(page.get_by_label("Secret key", exact=True).input_value()) >= 40
