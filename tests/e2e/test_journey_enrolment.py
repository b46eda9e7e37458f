"""Journey 1: a new user without an authenticator types the setup key, confirms, saves backup codes."""
import base64
from pathlib import Path

from django_otp.oath import totp

from dashboard.models import Membership, Role
from tests import helpers

from .support import PHONE, TABLET, Journey, expect


def test_new_user_sets_up_an_authenticator_from_the_manual_key(page, clock):
    merchant = helpers.create_merchant("Acme Payments")
    user = helpers.create_user("new.owner@acme.test", with_device=False)
    Membership.objects.create(user=user, merchant=merchant, role=Role.OWNER)
    journey = Journey("enrolment", page)

    page.goto("/")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(helpers.PASSWORD)
    page.get_by_role("button", name="Continue").click()

    expect(page.get_by_role("heading", name="Set up two-factor authentication")).to_be_visible()
    expect(page.locator("figure.qr svg")).to_be_visible()
    manual_key = page.locator("#manual-key").inner_text()
    journey.check("enrol", widths=(PHONE, TABLET))
    # What a person types into the app: the key as shown, in groups of four.
    key = "".join(manual_key.split())
    assert key.isalnum() and key == key.upper() and len(key) >= 26, manual_key
    code = f"{totp(base64.b32decode(key + '=' * (-len(key) % 8))):06d}"

    page.get_by_label("2FA code").fill(code)
    page.get_by_role("button", name="Confirm and continue").click()

    expect(page.get_by_role("heading", name="Save your backup codes")).to_be_visible()
    codes = page.locator("ol.backup-codes li").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(len(code) == 11 and code[5] == "-" for code in codes), codes
    expect(page.get_by_text("These codes are shown only once.")).to_be_visible()
    journey.check("backup-codes", widths=(PHONE,))
    # The same codes as a text file, saved by the browser (a data: link, nothing asked of the server).
    with page.expect_download() as saving:
        page.get_by_role("link", name="Download (.txt)").click()
    assert saving.value.suggested_filename == "sandbox-backup-codes.txt"
    assert Path(saving.value.path()).read_text().splitlines()[3:] == codes
    expect(page.get_by_role("button", name="Print")).to_be_visible()

    page.get_by_role("link", name="I have saved them. Continue").click()
    expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text("Acme Payments")
    expect(page.get_by_role("banner")).to_contain_text("new.owner@acme.test")
    journey.check("dashboard", widths=(PHONE,))

    # The account menu leads to the account's security page: one authenticator, ten unused backup codes.
    page.locator(".user-menu > summary").click()
    journey.check("account-menu")
    page.get_by_role("banner").get_by_role("link", name="Account security").click()
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()
    expect(page.locator(".facts")).to_contain_text("10 of 10")
    expect(page.get_by_role("region", name="Recent sign-ins")).to_contain_text("Sign-in")
    journey.check("account-security", widths=(PHONE,))
