"""Journey 4: members who are not Owners see no way to the API keys, and the address itself refuses them."""
import pytest

from dashboard.models import Role
from tests import helpers

from .support import PHONE, TABLET, Journey, expect, sign_in


@pytest.mark.parametrize(("role", "role_label", "landing"), [
    (Role.VIEW, "View", "Acme Payments"),
    (Role.RESTRICTED, "Restricted", "Contact support"),
])
def test_members_without_the_owner_role_cannot_reach_api_keys(new_page, clock, role, role_label, landing):
    merchant = helpers.create_merchant("Acme Payments")
    member = helpers.create_member(merchant, role, f"{role}@acme.test")
    page = new_page()
    journey = Journey(f"other-roles-{role}", page)

    sign_in(page, clock, member)
    expect(page.get_by_role("heading", name=landing, exact=True)).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text(role_label)
    assert page.get_by_role("link", name="API keys").count() == 0
    assert page.locator('a[href*="/keys/"]').count() == 0
    journey.check("landing", widths=(PHONE,))

    response = page.goto(f"/m/{merchant.slug}/keys/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="You can’t open this page")).to_be_visible()
    expect(page.get_by_text(
        f"This page needs the Owner role. Your role at Acme Payments is {role_label}."
    )).to_be_visible()
    assert page.get_by_role("link", name="API keys").count() == 0
    journey.check("forbidden", widths=(PHONE, TABLET))
