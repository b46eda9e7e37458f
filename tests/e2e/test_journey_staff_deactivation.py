"""Journey 7: platform staff stop a merchant's key from the admin panel, with a reason and their own 2FA code;
the live API refuses the key at once and the Owner reads why on the Activity tab."""
from dashboard.models import Role
from keys import services
from keys.allowlist import parse_allowlist
from tests import helpers
from tests.sandbox_support import CTX

from .support import Journey, expect, sign_in
from .test_journey_sandbox_api import call_api

REASON = "Secret key posted in a public repository, reported to support"


def active_key(clock, owner, merchant):
    key = services.generate_key(actor=owner, merchant=merchant, code=clock.next_code(owner), context=CTX)
    return services.activate_key(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""), code=clock.next_code(owner),
        context=CTX,
    )


def test_staff_deactivate_a_merchants_key_and_the_owner_sees_why(new_page, clock, live_server):
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    staff = helpers.create_user("staff@platform.test", staff=True)
    activation = active_key(clock, owner, merchant)
    public_key = activation.key.public_key
    assert call_api(live_server, public_key, activation.secret)[0] == 200

    # Django's own admin pages: no axe check or screenshots here (the journeys check the dashboard's pages).
    page = new_page()
    page.goto(f"/admin/keys/apikey/{activation.key.pk}/change/")
    page.get_by_label("Email address").fill(staff.email)
    page.get_by_label("Password").fill(helpers.PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("2FA code").fill(clock.next_code(staff))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(public_key).first).to_be_visible()

    page.get_by_role("link", name="Deactivate").click()
    expect(page.get_by_role("heading", name="Deactivate an API key")).to_be_visible()
    expect(page.locator("#content-main")).to_contain_text("Acme Payments")
    # A wrong code first: said next to the field, the key still works.
    page.get_by_label("Reason").fill(REASON)
    page.get_by_label("2FA code").fill("000000")
    page.get_by_role("button", name="Deactivate").click()
    expect(page.locator(".field-code .errorlist")).to_contain_text("That code is not right")
    assert call_api(live_server, public_key, activation.secret)[0] == 200

    page.get_by_label("2FA code").fill(clock.next_code(staff))
    page.get_by_role("button", name="Deactivate").click()
    expect(page.locator(".messagelist")).to_contain_text(f"API key {public_key} of Acme Payments is deactivated")
    expect(page.get_by_role("link", name="Deactivate")).to_have_count(0)
    assert call_api(live_server, public_key, activation.secret) == (
        403, {"error": "Bad key header", "code": "bad_header_key"},
    )

    owner_page = new_page()
    sign_in(owner_page, clock, owner)
    owner_page.get_by_role("navigation", name="Sections").get_by_role("link", name="Activity").click()
    expect(owner_page.get_by_role("row").filter(has_text="API key deactivated").first).to_contain_text(
        f"By platform staff: {REASON}"
    )
    Journey("staff-deactivation", owner_page).check("owner-activity")
