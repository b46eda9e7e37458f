"""Journey 3: the secret signs real requests to the live sandbox API; deactivation stops them at once;
only one key is active at a time."""
import json
import urllib.error
import urllib.request

from dashboard.models import Role
from keys import crypto
from tests import helpers

from .support import (
    PHONE, TABLET, Journey, activate_key, archive_key, deactivate_key, expect, generate_key, key_row, open_activation,
    open_keys_tab, sign_in, status_of,
)


def call_api(live_server, public_key: str, secret: str, path: str = "accounts/list") -> tuple[int, dict]:
    body = b"{}"
    request = urllib.request.Request(
        f"{live_server.url}/api/v2/{path}",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Processing-Key": public_key,
            "X-Processing-Signature": crypto.sign(secret, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_activated_key_calls_the_api_until_deactivated_and_only_one_key_is_active(page, clock, live_server):
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    journey = Journey("sandbox-api", page)
    sign_in(page, clock, owner)

    first = generate_key(page, clock, owner, name="Checkout server")
    secret = activate_key(page, clock, owner, first, ips="127.0.0.1, 203.0.113.7")
    page.get_by_role("link", name="Done").click()

    status, answer = call_api(live_server, first, secret)
    assert status == 200, answer
    assert isinstance(answer["data"], list)

    # A second key cannot be activated while the first is active.
    second = generate_key(page, clock, owner, name="Staging")
    journey.check("two-keys", widths=(PHONE, TABLET))
    open_activation(page, second)
    page.get_by_label("2FA code").fill(clock.next_code(owner))
    page.get_by_role("button", name="Activate", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Another API key is already active. Deactivate it first.")
    journey.check("second-refused", widths=(PHONE,))
    page.get_by_role("link", name="Cancel").click()
    assert status_of(page, second) == "Generated"
    assert status_of(page, first) == "Active"

    # Deactivated: the very next request is refused.
    deactivate_key(page, clock, owner, first, cancel_first=True, journey=journey)
    journey.check("first-deactivated", widths=(PHONE,))
    status, answer = call_api(live_server, first, secret)
    assert (status, answer) == (403, {"error": "Bad key header", "code": "bad_header_key"})

    # Now the second can be activated, and its own secret works.
    second_secret = activate_key(page, clock, owner, second)
    assert second_secret != secret
    page.get_by_role("link", name="Done").click()
    assert status_of(page, second) == "Active"
    assert status_of(page, first) == "Deactivated"
    expect(key_row(page, second)).to_contain_text("Any IP address")
    journey.check("second-active", widths=(PHONE,))
    status, answer = call_api(live_server, second, second_secret)
    assert status == 200, answer

    page.get_by_role("link", name="API requests").click()
    expect(page.get_by_role("heading", name="API requests")).to_be_visible()
    expect(page.locator("tbody")).to_contain_text("bad_header_key")
    journey.check("request-log", widths=(PHONE,))

    # The deactivated key is put away for good.
    open_keys_tab(page)
    archive_key(page, clock, owner, first, journey=journey)
    page.get_by_role("link", name="Archived keys (1)").click()
    expect(page.get_by_role("heading", name="Archived API keys")).to_be_visible()
    expect(page.locator("tbody")).to_contain_text(first)
    journey.check("archived", widths=(PHONE,))
