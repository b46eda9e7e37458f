"""Every dashboard URL × every kind of visitor gets exactly the answer it should."""
from __future__ import annotations

import pytest
from django.urls import reverse

from dashboard.models import Role
from dashboard.views import PENDING_SIGN_IN_KEY
from keys.models import ApiKey

from . import helpers

SIGN_IN = "sign-in"

# (url name, needs key id) -> answer for: owner, view/exchange/limits, restricted
MERCHANT_PAGES = {
    "dashboard:merchant-home": (302, 302, 302),
    "dashboard:overview": (200, 200, 403),
    "dashboard:support": (200, 200, 200),
    "dashboard:activity": (200, 403, 403),
    "keys:list": (200, 403, 403),
    "keys:archived": (200, 403, 403),
    "keys:generate-form": (200, 403, 403),
    "keys:activate-form": (200, 403, 403),
    "keys:deactivate-form": (200, 403, 403),
    "keys:allowlist-form": (200, 403, 403),
    "keys:rename-form": (200, 403, 403),
    "keys:archive-form": (200, 403, 403),
    # The actions themselves take POST only: a GET changes nothing and gets the 405 page.
    "keys:generate": (405, 403, 403),
    "keys:activate": (405, 403, 403),
    "keys:deactivate": (405, 403, 403),
    "keys:allowlist": (405, 403, 403),
    "keys:rename": (405, 403, 403),
    "keys:archive": (405, 403, 403),
    "integration:request-log": (200, 403, 403),
    "integration:signature-check": (200, 403, 403),
}
KEY_ACTIONS = {"keys:activate", "keys:deactivate", "keys:allowlist", "keys:rename", "keys:archive"}
KEY_PAGES = KEY_ACTIONS | {f"{name}-form" for name in KEY_ACTIONS}
VISITORS = ["anonymous", "password only", "staff without 2FA", "owner", "view", "exchange", "limits", "restricted",
            "owner of another merchant"]


@pytest.fixture
def world(merchant, owner):
    key = ApiKey.objects.create(merchant=merchant, public_key="sbx_" + "a" * 40, created_by=owner)
    other = helpers.create_merchant("Other Merchant")
    return {"merchant": merchant, "key": key, "other_owner": helpers.create_member(other, Role.OWNER)}


def url_for(name: str, world) -> str:
    kwargs = {"merchant_slug": world["merchant"].slug}
    if name in KEY_PAGES:
        kwargs["key_id"] = world["key"].pk
    return reverse(name, kwargs=kwargs)


def become(client, visitor: str, world, owner) -> None:
    merchant = world["merchant"]
    if visitor == "anonymous":
        return
    if visitor == "password only":
        user = helpers.create_member(merchant, Role.OWNER)
        client.post(reverse("dashboard:sign-in"), {"email": user.email, "password": helpers.PASSWORD})
        assert PENDING_SIGN_IN_KEY in client.session
        return
    if visitor == "staff without 2FA":
        client.force_login(helpers.create_user(staff=True))
        return
    if visitor == "owner":
        helpers.sign_in_verified(client, owner)
        return
    if visitor == "owner of another merchant":
        helpers.sign_in_verified(client, world["other_owner"])
        return
    helpers.sign_in_verified(client, helpers.create_member(merchant, Role(visitor)))


def expected(visitor: str, name: str) -> int | str:
    if visitor in ("anonymous", "password only", "staff without 2FA"):
        return SIGN_IN
    if visitor == "owner of another merchant":
        return 404
    owner_answer, member_answer, restricted_answer = MERCHANT_PAGES[name]
    if visitor == "owner":
        return owner_answer
    if visitor == "restricted":
        return restricted_answer
    return member_answer


@pytest.mark.parametrize("visitor", VISITORS)
@pytest.mark.parametrize("name", list(MERCHANT_PAGES))
def test_each_visitor_gets_the_right_answer_on_each_merchant_page(client, owner, world, visitor, name):
    become(client, visitor, world, owner)
    url = url_for(name, world)
    response = client.get(url)
    answer = expected(visitor, name)
    if answer == SIGN_IN:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("dashboard:sign-in") + "?next=")
    else:
        assert response.status_code == answer, (visitor, name)
        if answer == 403:
            assert "needs the Owner role" in response.content.decode() or name == "dashboard:overview"


@pytest.mark.parametrize("visitor", ["anonymous", "password only", "staff without 2FA"])
@pytest.mark.parametrize("name", ["dashboard:home", "dashboard:account-security", "dashboard:backup-codes",
                                  "dashboard:time-zone"])
def test_pages_of_the_account_need_both_factors(client, owner, world, visitor, name):
    become(client, visitor, world, owner)
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:sign-in"))


@pytest.mark.parametrize("visitor", ["anonymous", "password only", "staff without 2FA", "owner"])
def test_the_admin_needs_a_staff_member_signed_in_with_both_factors(client, owner, world, visitor):
    become(client, visitor, world, owner)
    response = client.get("/admin/", follow=True)
    if visitor == "owner":
        assert response.status_code == 403
    else:
        final_url, _ = response.redirect_chain[-1]
        assert final_url.startswith(reverse("dashboard:sign-in"))
        assert response.status_code == 200
        assert b"Sign in" in response.content


@pytest.mark.parametrize("name", ["dashboard:backup-codes", "dashboard:time-zone"])
def test_account_actions_answer_get_with_405_and_a_link_to_their_form(client, owner, name):
    helpers.sign_in_verified(client, owner)
    response = client.get(reverse(name))
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert f'href="{reverse("dashboard:account-security")}"' in response.content.decode()


def test_a_demoted_owner_is_refused_on_the_very_next_request(client, owner, world):
    helpers.sign_in_verified(client, owner)
    url = url_for("keys:list", world)
    assert client.get(url).status_code == 200
    owner.memberships.update(role=Role.VIEW)
    assert client.get(url).status_code == 403
