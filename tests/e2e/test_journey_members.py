"""Journey 8: an Owner changes a member's role and removes another on the Members tab, each with a fresh 2FA
code; the member's next page follows the change."""
from dashboard.models import Role
from tests import helpers

from .support import PHONE, Journey, answer_next_dialog, expect, sign_in


def member_row(page, email: str):
    return page.locator(".members-table tbody tr").filter(has_text=email)


def test_owner_changes_a_role_and_removes_a_member(new_page, clock):
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")
    leaver = helpers.create_member(merchant, Role.EXCHANGE, "leaver@acme.test")
    page = new_page()
    journey = Journey("members", page)
    sign_in(page, clock, owner)

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Members").click()
    expect(page.get_by_role("heading", name="Members", exact=True)).to_be_visible()
    expect(member_row(page, "owner@acme.test")).to_contain_text("Changed by platform staff")
    journey.check("members", widths=(PHONE,))

    # A new role: the form says what each allows; a wrong code first, said next to the field.
    member_row(page, "viewer@acme.test").get_by_role("link", name="Change role of viewer@acme.test").click()
    expect(page.get_by_role("heading", name="Change a member’s role")).to_be_visible()
    expect(page.get_by_role("radio", name="Owner")).to_have_count(0)
    page.get_by_role("radio", name="Limits: what View does, and manages hot-wallet limits and cold-wallet transfers").check()
    page.get_by_label("2FA code").fill("000000")
    page.get_by_role("button", name="Change role").click()
    expect(page.locator(".field-invalid")).to_contain_text("That code is not right")
    journey.check("role-wrong-code", widths=(PHONE,))
    page.get_by_role("radio", name="Limits: what View does, and manages hot-wallet limits and cold-wallet transfers").check()
    page.get_by_label("2FA code").fill(clock.next_code(owner))
    page.get_by_role("button", name="Change role").click()
    expect(page.get_by_role("status").filter(has_text="viewer@acme.test now has the Limits role.")).to_be_visible()
    expect(member_row(page, "viewer@acme.test")).to_contain_text("Limits")

    # Removing asks for confirmation, then the member can no longer open the merchant.
    member_row(page, "leaver@acme.test").get_by_role("link", name="Remove leaver@acme.test").click()
    expect(page.get_by_role("heading", name="Remove a member")).to_be_visible()
    page.get_by_label("2FA code").fill(clock.next_code(owner))
    journey.check("remove", widths=(PHONE,))
    asked = answer_next_dialog(page, accept=True)
    page.get_by_role("button", name="Remove", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="leaver@acme.test is no longer a member")).to_be_visible()
    assert asked == ["Remove leaver@acme.test from Acme Payments?"]
    expect(member_row(page, "leaver@acme.test")).to_have_count(0)

    leaver_page = new_page()
    sign_in_as_member_of_nothing(leaver_page, clock, leaver)
    # Fetched, not shown: the browser logs every 404 document as a console error.
    assert leaver_page.request.get(f"/m/{merchant.slug}/overview/").status == 404


def sign_in_as_member_of_nothing(page, clock, user) -> None:
    page.goto("/")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(helpers.PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("2FA code").fill(clock.next_code(user))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Sign in")).to_have_count(0)
