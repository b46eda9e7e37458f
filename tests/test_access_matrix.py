"""Every dashboard URL × every kind of visitor gets exactly the answer it should."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import SESSION_KEY
from django.http import QueryDict
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Invitation, Membership, Role
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
    "dashboard:members": (200, 403, 403),
    "dashboard:member-role-form": (200, 403, 403),
    "dashboard:member-remove-form": (200, 403, 403),
    "dashboard:member-role": (405, 403, 403),
    "dashboard:member-remove": (405, 403, 403),
    "dashboard:member-invite-form": (200, 403, 403),
    "dashboard:member-invite": (405, 403, 403),
    "dashboard:invitation-withdraw-form": (200, 403, 403),
    "dashboard:invitation-withdraw": (405, 403, 403),
}
KEY_ACTIONS = {"keys:activate", "keys:deactivate", "keys:allowlist", "keys:rename", "keys:archive"}
KEY_PAGES = KEY_ACTIONS | {f"{name}-form" for name in KEY_ACTIONS}
MEMBER_ACTIONS = {"dashboard:member-role", "dashboard:member-remove"}
MEMBER_PAGES = MEMBER_ACTIONS | {f"{name}-form" for name in MEMBER_ACTIONS}
INVITATION_PAGES = {"dashboard:invitation-withdraw", "dashboard:invitation-withdraw-form"}
# Every URL of a merchant that changes or computes something when POSTed to.
MERCHANT_ACTIONS = ["keys:generate", *sorted(KEY_ACTIONS), "integration:signature-check", *sorted(MEMBER_ACTIONS),
                    "dashboard:member-invite", "dashboard:invitation-withdraw"]
ACCOUNT_PAGES = ["dashboard:home", "dashboard:account-security", "dashboard:backup-codes", "dashboard:time-zone",
                 "dashboard:sign-out", "dashboard:sign-in", "dashboard:sign-in-code", "dashboard:enrol"]
NOT_VERIFIED = ["anonymous", "password only", "staff without 2FA"]
NOT_OWNER_ROLES = ["view", "exchange", "limits", "restricted"]
VISITORS = [*NOT_VERIFIED, "owner", *NOT_OWNER_ROLES, "owner of another merchant", "staff with 2FA"]


@pytest.fixture
def world(merchant, owner):
    key = ApiKey.objects.create(merchant=merchant, public_key="sbx_" + "a" * 40, created_by=owner)
    other = helpers.create_merchant("Other Merchant")
    member = Membership.objects.get(user=helpers.create_member(merchant, Role.VIEW, "listed@acme.test"))
    invitation = Invitation.objects.create(
        merchant=merchant, email="invited@example.test", role=Role.VIEW, token_digest="0" * 64, invited_by=owner,
        expires_at=timezone.now() + timedelta(days=7),
    )
    return {"merchant": merchant, "key": key, "member": member, "invitation": invitation, "other": other,
            "other_owner": helpers.create_member(other, Role.OWNER)}


def url_for(name: str, world) -> str:
    kwargs = {"merchant_slug": world["merchant"].slug}
    if name in KEY_PAGES:
        kwargs["key_id"] = world["key"].pk
    if name in MEMBER_PAGES:
        kwargs["membership_id"] = world["member"].pk
    if name in INVITATION_PAGES:
        kwargs["invitation_id"] = world["invitation"].pk
    return reverse(name, kwargs=kwargs)


def sign_in_redirect(url: str) -> str:
    """Where access.py sends a visitor without both factors (``redirect_to_login`` keeps slashes as they are)."""
    query = QueryDict(mutable=True)
    query["next"] = url
    return f"{reverse('dashboard:sign-in')}?{query.urlencode(safe='/')}"


def become(client, visitor: str, world, owner):
    """Make ``client`` the visitor; return the user behind it, if any."""
    merchant = world["merchant"]
    if visitor == "anonymous":
        return None
    if visitor == "password only":
        user = helpers.create_member(merchant, Role.OWNER)
        client.post(reverse("dashboard:sign-in"), {"email": user.email, "password": helpers.PASSWORD})
        assert PENDING_SIGN_IN_KEY in client.session
        return user
    if visitor == "staff without 2FA":
        user = helpers.create_user(staff=True)
        client.force_login(user)
        return user
    if visitor == "owner":
        user = owner
    elif visitor == "owner of another merchant":
        user = world["other_owner"]
    elif visitor == "staff with 2FA":
        user = helpers.create_user(staff=True)
    else:
        user = helpers.create_member(merchant, Role(visitor))
    helpers.sign_in_verified(client, user)
    return user


def expected(visitor: str, name: str) -> int | str:
    if visitor in NOT_VERIFIED:
        return SIGN_IN
    if visitor in ("owner of another merchant", "staff with 2FA"):
        return 404  # not a member: the merchant's existence is not revealed, not even to staff
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
        assert response["Location"] == sign_in_redirect(url)
    else:
        assert response.status_code == answer, (visitor, name)
        if answer == 403:
            assert "needs the Owner role" in response.content.decode() or name == "dashboard:overview"


def key_rows():
    return list(ApiKey.objects.order_by("pk").values())


def key_action_events() -> int:
    return AuditEvent.objects.filter(action__startswith="key_").count()


def membership_rows():
    return [list(Membership.objects.order_by("pk").values()), list(Invitation.objects.order_by("pk").values())]


def member_change_events() -> int:
    return AuditEvent.objects.filter(
        action__in=[AuditAction.MEMBER_INVITED, AuditAction.INVITATION_WITHDRAWN], outcome=AuditOutcome.SUCCEEDED,
    ).count() + AuditEvent.objects.filter(action__startswith="membership_").count()


@pytest.mark.parametrize("visitor", [v for v in VISITORS if v != "owner"])
@pytest.mark.parametrize("name", MERCHANT_ACTIONS)
def test_a_refused_post_to_a_merchant_action_changes_nothing(client, clock, owner, world, visitor, name):
    user = become(client, visitor, world, owner)
    keys_before, events_before = key_rows(), key_action_events()
    members_before, member_events_before = membership_rows(), member_change_events()
    # A well-formed request with the visitor's own valid code: only the access rule stands in the way.
    code = helpers.current_code(user) if user is not None else "123456"
    data = {"name": "Taken over", "allowlist": "0.0.0.0/0", "code": code, "body": "{}", "signature": "0" * 128,
            "role": Role.RESTRICTED, "email": "taken.over@example.test"}
    url = url_for(name, world)

    response = client.post(url, data)

    answer = expected(visitor, name)
    if answer == SIGN_IN:
        # Back to the page with the form once signed in: the action itself answers POST only.
        form_page = url if name == "integration:signature-check" else url_for(f"{name}-form", world)
        assert response.status_code == 302
        assert response["Location"] == sign_in_redirect(form_page)
    elif visitor in NOT_OWNER_ROLES:
        assert response.status_code == 403
        assert "needs the Owner role" in response.content.decode()
    else:
        assert response.status_code == answer == 404
    assert key_rows() == keys_before
    assert key_action_events() == events_before
    assert membership_rows() == members_before
    assert member_change_events() == member_events_before


def account_answer(visitor: str, name: str, world) -> tuple[int, str | None]:
    """(status, Location) of a GET of an account URL, read off dashboard/views.py and dashboard/access.py."""
    sign_in = reverse("dashboard:sign-in")
    verified = visitor not in NOT_VERIFIED
    if name == "dashboard:sign-out":
        return 405, None  # an action: a GET signs nobody out, whoever sends it
    if name == "dashboard:sign-in":
        return (302, reverse("dashboard:home")) if verified else (200, None)
    if name == "dashboard:sign-in-code":
        return (200, None) if visitor == "password only" else (302, sign_in)
    if name == "dashboard:enrol":
        # Only a pending sign-in reaches enrolment, and this user already has an authenticator.
        return (302, reverse("dashboard:sign-in-code")) if visitor == "password only" else (302, sign_in)
    if not verified:
        return 302, sign_in_redirect(reverse(name))
    if name == "dashboard:home":
        if visitor == "staff with 2FA":
            return 200, None  # a member of no merchant
        merchant = world["other"] if visitor == "owner of another merchant" else world["merchant"]
        return 302, reverse("dashboard:merchant-home", args=[merchant.slug])
    if name == "dashboard:account-security":
        return 200, None
    return 405, None  # backup codes and time zone: actions whose form is on the account security page


@pytest.mark.parametrize("visitor", VISITORS)
@pytest.mark.parametrize("name", ACCOUNT_PAGES)
def test_each_visitor_gets_the_right_answer_on_each_account_url(client, owner, world, visitor, name):
    become(client, visitor, world, owner)
    session_before = dict(client.session)
    status, location = account_answer(visitor, name, world)

    response = client.get(reverse(name))

    assert response.status_code == status, (visitor, name)
    if location is not None:
        assert response["Location"] == location
    if status == 405:
        assert response["Allow"] == "POST"
    if visitor != "anonymous":
        # Nothing signs the visitor out or forgets the pending sign-in on a GET.
        assert client.session.get(SESSION_KEY) == session_before.get(SESSION_KEY)
        assert client.session.get(PENDING_SIGN_IN_KEY) == session_before.get(PENDING_SIGN_IN_KEY)


@pytest.mark.parametrize("visitor", VISITORS)
def test_the_admin_needs_a_staff_member_signed_in_with_both_factors(client, owner, world, visitor):
    become(client, visitor, world, owner)
    response = client.get("/admin/", follow=True)
    admin_sign_in = f"{reverse('admin:login')}?next=/admin/"
    if visitor == "staff with 2FA":
        assert response.status_code == 200
        assert response.redirect_chain == []
        assert b"Platform administration" in response.content
    elif visitor in NOT_VERIFIED:
        # The admin's own sign-in hands over to the dashboard's two-step one (admin_site.py).
        dashboard_sign_in = f"{reverse('dashboard:sign-in')}?{urlencode({'next': '/admin/'})}"
        assert response.redirect_chain == [(admin_sign_in, 302), (dashboard_sign_in, 302)]
        assert response.status_code == 200
        assert b"Sign in" in response.content
    else:
        # Signed in with both factors but not staff: the admin's sign-in refuses instead of asking again.
        assert response.redirect_chain == [(admin_sign_in, 302)]
        assert response.status_code == 403


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
