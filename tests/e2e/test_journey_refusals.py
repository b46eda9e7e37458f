"""Journey 5: a wrong code, a reused code and invalid IP addresses are each explained next to their field,
and the key stays as it was; a new name for a key is saved only with a fresh code."""
import re

from dashboard.models import Role
from tests import helpers

from .support import PHONE, TABLET, Journey, expect, generate_key, key_row, open_activation, sign_in, status_of


def field_errors(page, label: str):
    """The error list inside the field group of the input labelled ``label``."""
    field = page.locator(".field").filter(has=page.get_by_label(label, exact=False))
    return field.locator(".errorlist")


def wrong_code_for(user) -> str:
    """Six digits the user's app does not show now, nor one step before or after."""
    valid = {helpers.current_code(user, steps_ahead=step) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def test_refused_codes_and_addresses_are_explained_and_change_nothing(page, clock):
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    journey = Journey("refusals", page)
    sign_in(page, clock, owner)
    public_key = generate_key(page, clock, owner)
    used_code = clock.code(owner)

    open_activation(page, public_key)
    ip_field = page.get_by_label("IP addresses")
    code_field = page.get_by_label("2FA code")

    # The code just used to generate the key.
    ip_field.fill("203.0.113.7")
    code_field.fill(used_code)
    page.get_by_role("button", name="Activate", exact=True).click()
    expect(field_errors(page, "2FA code")).to_have_text(
        "That code has already been used. Wait for your app to show a new code."
    )
    expect(page.get_by_label("2FA code")).to_have_attribute("aria-invalid", "true")
    # The spent code is not shown back, and the field to correct has the focus: type the next code straight away.
    expect(page.get_by_label("2FA code")).to_have_value("")
    expect(page.get_by_label("2FA code")).to_be_focused()
    expect(page.get_by_label("IP addresses")).to_have_value("203.0.113.7")
    journey.check("reused-code", widths=(PHONE, TABLET))

    # A code the app never showed.
    clock.next_code(owner)
    page.get_by_label("2FA code").fill(wrong_code_for(owner))
    page.get_by_role("button", name="Activate", exact=True).click()
    expect(field_errors(page, "2FA code")).to_have_text(
        "That code is not right. Check your authenticator app and try again."
    )
    expect(field_errors(page, "IP addresses")).to_have_count(0)
    journey.check("wrong-code")

    # Addresses that are not addresses, with a good code.
    page.get_by_label("IP addresses").fill("300.1.2.3, 10.0.0.1/24")
    page.get_by_label("2FA code").fill(clock.next_code(owner))
    page.get_by_role("button", name="Activate", exact=True).click()
    errors = field_errors(page, "IP addresses")
    expect(errors).to_contain_text("'300.1.2.3' is not an IPv4 or IPv6 address or network")
    expect(errors).to_contain_text("'10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?")
    expect(page.get_by_label("IP addresses")).to_have_value("300.1.2.3, 10.0.0.1/24")
    expect(page.get_by_label("IP addresses")).to_have_attribute("aria-invalid", "true")
    # Screen readers announce the errors with the field.
    described_by = page.get_by_label("IP addresses").get_attribute("aria-describedby").split()
    assert errors.get_attribute("id") in described_by
    expect(field_errors(page, "2FA code")).to_have_count(0)
    journey.check("invalid-addresses", widths=(PHONE,))

    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    assert status_of(page, public_key) == "Generated"
    assert page.locator(".keys-table tbody tr").count() == 1
    journey.check("unchanged")


def test_a_key_is_renamed_only_with_a_fresh_code(page, clock):
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    sign_in(page, clock, owner)
    public_key = generate_key(page, clock, owner, name="Checkout")
    used_code = clock.code(owner)

    key_row(page, public_key).get_by_role("link", name=re.compile(r"^Rename\b")).click()
    expect(page.get_by_role("heading", name="Rename API key")).to_be_visible()
    expect(page.get_by_label("Name")).to_have_value("Checkout")
    page.get_by_label("Name").fill("Checkout server")
    page.get_by_label("2FA code").fill(used_code)
    page.get_by_role("button", name="Save name").click()
    expect(field_errors(page, "2FA code")).to_have_text(
        "That code has already been used. Wait for your app to show a new code."
    )
    expect(page.get_by_label("Name")).to_have_value("Checkout server")

    page.get_by_label("2FA code").fill(clock.next_code(owner))
    page.get_by_role("button", name="Save name").click()
    expect(page.get_by_role("status").filter(has_text="Name saved.")).to_be_visible()
    expect(key_row(page, public_key)).to_contain_text("Checkout server")
    assert status_of(page, public_key) == "Generated"
