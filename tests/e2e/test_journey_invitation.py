"""Journey 9: an Owner invites a colleague by email; the colleague opens the link, chooses a password, sets up an
authenticator at the first sign-in and lands in the merchant with the role given."""
import base64
import re

from django.core import mail
from django_otp.oath import totp

from dashboard.models import Role
from tests import helpers

from .support import PHONE, Journey, expect, sign_in

PASSWORD = "a long and new passphrase 7"


def test_owner_invites_a_colleague_who_joins_with_a_new_account(new_page, clock, live_server, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    page = new_page()
    journey = Journey("invitation", page)
    sign_in(page, clock, owner)

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Members").click()
    page.get_by_role("link", name="Invite a member").click()
    expect(page.get_by_role("heading", name="Invite a member")).to_be_visible()
    page.get_by_label("Email address").fill("colleague@acme.test")
    page.get_by_role("radio", name=re.compile(r"^Exchange:")).check()
    page.get_by_label("2FA code").fill(clock.next_code(owner))
    journey.check("invite", widths=(PHONE,))
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_role("status").filter(has_text="Invitation sent to colleague@acme.test")).to_be_visible()
    expect(page.locator(".invitations-table")).to_contain_text("colleague@acme.test")
    journey.check("invited", widths=(PHONE,))

    [message] = mail.outbox
    link = re.search(r"(/invitations/[^/\s]+/)", message.body).group(1)
    colleague = new_page()
    journey.page = colleague
    colleague.goto(link)
    expect(colleague.get_by_role("heading", name="Join Acme Payments")).to_be_visible()
    assert colleague.url.endswith("/invitation/")  # the token left the address bar at once
    colleague.get_by_label("Choose a password").fill("short")
    colleague.get_by_label("The same password again").fill("short")
    colleague.get_by_role("button", name="Create account and join").click()
    expect(colleague.locator(".field-invalid").first).to_contain_text("too short")
    journey.check("password-refused", widths=(PHONE,))
    colleague.get_by_label("Choose a password").fill(PASSWORD)
    colleague.get_by_label("The same password again").fill(PASSWORD)
    colleague.get_by_role("button", name="Create account and join").click()

    # Signed in with the new password, the first stop is setting up an authenticator.
    expect(colleague.get_by_role("heading", name="Sign in")).to_be_visible()
    colleague.get_by_label("Email address").fill("colleague@acme.test")
    colleague.get_by_label("Password").fill(PASSWORD)
    colleague.get_by_role("button", name="Continue").click()
    expect(colleague.get_by_role("heading", name="Set up two-factor authentication")).to_be_visible()
    key = "".join(colleague.locator("#manual-key").inner_text().split())
    colleague.get_by_label("2FA code").fill(f"{totp(base64.b32decode(key + '=' * (-len(key) % 8))):06d}")
    colleague.get_by_role("button", name="Confirm and continue").click()
    colleague.get_by_role("link", name="I have saved them. Continue").click()
    expect(colleague.get_by_role("banner")).to_contain_text("Acme Payments")
    expect(colleague.get_by_role("banner")).to_contain_text("Exchange")
    assert colleague.request.get(link).status == 404  # used: fetched, as the browser logs a 404 document
