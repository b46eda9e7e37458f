"""Who opens which merchant page: roles, 403 naming the Owner role, 404 for non-members, landing, the switcher."""
import re

import pytest
from django.test import Client
from django.urls import get_resolver, reverse

from dashboard.access import ActionMixin, VerifiedUserRequiredMixin
from dashboard.models import Membership, Role

from . import helpers

NOT_OWNER_ROLES = [Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED]
OWNER_ONLY_PAGES = ["keys:list", "keys:archived", "keys:generate-form", "dashboard:activity"]
MERCHANT_PAGES = ["dashboard:merchant-home", "dashboard:overview", "dashboard:support", *OWNER_ONLY_PAGES]


def page(name, merchant_or_slug):
    slug = getattr(merchant_or_slug, "slug", merchant_or_slug)
    return reverse(name, kwargs={"merchant_slug": slug})


def signed_in_member(merchant, role, email=None) -> tuple[Client, object]:
    user = helpers.create_member(merchant, role, email)
    client = Client()
    helpers.sign_in_verified(client, user)
    return client, user


def without_csrf_tokens(html: str) -> str:
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)


# Owner-only pages


@pytest.mark.parametrize("role", NOT_OWNER_ROLES)
def test_other_roles_get_403_naming_the_owner_role_on_owner_pages(merchant, role):
    client, user = signed_in_member(merchant, role)
    expected = f"This page needs the Owner role. Your role at Acme Payments is {Role(role).label}."

    for name in OWNER_ONLY_PAGES:
        response = client.get(page(name, merchant))

        assert response.status_code == 403, name
        assert expected in response.content.decode(), name
    user.refresh_from_db()
    assert user.last_merchant is None  # a refused page is not remembered as the merchant worked on


@pytest.mark.parametrize("role", NOT_OWNER_ROLES)
def test_other_roles_cannot_generate_a_key_by_post(merchant, role):
    from keys.models import ApiKey

    client, _ = signed_in_member(merchant, role)

    response = client.post(page("keys:generate", merchant), {"name": "Mine now", "code": "123456"})

    assert response.status_code == 403
    assert ApiKey.objects.count() == 0


def test_an_owner_opens_owner_pages(owner_client, owner, merchant):
    for name in OWNER_ONLY_PAGES:
        assert owner_client.get(page(name, merchant)).status_code == 200, name
    owner.refresh_from_db()
    assert owner.last_merchant == merchant


def test_a_demoted_owner_is_refused_on_the_very_next_request(owner_client, owner, merchant):
    assert owner_client.get(page("keys:list", merchant)).status_code == 200
    Membership.objects.filter(user=owner, merchant=merchant).update(role=Role.VIEW)

    response = owner_client.get(page("keys:list", merchant))

    assert response.status_code == 403
    assert "Your role at Acme Payments is View." in response.content.decode()
    assert owner_client.get(page("dashboard:overview", merchant)).status_code == 200


def test_a_removed_member_gets_404_on_the_very_next_request(owner_client, owner, merchant):
    Membership.objects.filter(user=owner, merchant=merchant).delete()

    assert owner_client.get(page("keys:list", merchant)).status_code == 404


# Restricted


def test_restricted_sees_only_the_support_page(merchant):
    client, _ = signed_in_member(merchant, Role.RESTRICTED)

    assert client.get(page("dashboard:support", merchant)).status_code == 200
    overview = client.get(page("dashboard:overview", merchant))
    assert overview.status_code == 403
    assert "Your role at Acme Payments is Restricted." in overview.content.decode()
    for name in OWNER_ONLY_PAGES:
        assert client.get(page(name, merchant)).status_code == 403


@pytest.mark.parametrize("role", [Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.OWNER])
def test_every_other_role_opens_overview_and_support(merchant, owner, role):
    client, _ = signed_in_member(merchant, role)

    overview = client.get(page("dashboard:overview", merchant))

    assert overview.status_code == 200
    assert overview.context["membership"].role == role
    assert client.get(page("dashboard:support", merchant)).status_code == 200
    # Who to ask for a key, and how to reach them; an Owner is sent to the keys instead.
    html = overview.content.decode()
    assert f'<a href="mailto:{owner.email}">{owner.email}</a>' in html
    if role == Role.OWNER:
        assert f'href="{page("keys:list", merchant)}">open API keys</a>' in html and "write to one of them" not in html
    else:
        assert "write to one of them" in html and "open API keys" not in html


OWNER_TABS = {"API keys", "Activity"}


@pytest.mark.parametrize(
    ("role", "shown", "hidden"),
    [
        (Role.OWNER, {"Overview", *OWNER_TABS, "Contact support", "Account security"}, set()),
        (Role.VIEW, {"Overview", "Contact support", "Account security"}, OWNER_TABS),
        (Role.EXCHANGE, {"Overview", "Contact support", "Account security"}, OWNER_TABS),
        (Role.LIMITS, {"Overview", "Contact support", "Account security"}, OWNER_TABS),
        (Role.RESTRICTED, {"Contact support", "Account security"}, {"Overview", *OWNER_TABS}),
    ],
)
def test_each_role_sees_only_tabs_it_may_open(merchant, role, shown, hidden):
    client, _ = signed_in_member(merchant, role)

    response = client.get(page("dashboard:support", merchant))

    labels = {tab.label for tab in response.context["nav_tabs"]}
    assert shown <= labels
    assert not hidden & labels
    for tab in response.context["nav_tabs"]:
        assert client.get(tab.url).status_code == 200, tab.label


# Non-members: 404, the same for an existing merchant and a missing one


def test_a_non_member_gets_the_same_404_for_an_existing_and_a_missing_merchant(owner_client):
    other = helpers.create_merchant("Secret Rival Ltd")

    for name in MERCHANT_PAGES:
        existing = owner_client.get(page(name, other))
        missing = owner_client.get(page(name, "no-such-merchant"))

        assert existing.status_code == missing.status_code == 404, name
        assert without_csrf_tokens(existing.content.decode()) == without_csrf_tokens(missing.content.decode()), name
        assert "Secret Rival" not in existing.content.decode()


def test_a_non_member_post_gets_404_and_changes_nothing(owner_client):
    from keys.models import ApiKey

    other = helpers.create_merchant("Secret Rival Ltd")

    response = owner_client.post(page("keys:generate", other), {"name": "Planted", "code": "123456"})

    assert response.status_code == 404
    assert ApiKey.objects.count() == 0


def test_membership_in_one_merchant_opens_nothing_of_another(merchant):
    other = helpers.create_merchant("Other Co")
    client, user = signed_in_member(merchant, Role.OWNER)
    helpers.create_member(other, Role.OWNER)

    assert client.get(page("keys:list", other)).status_code == 404
    user.refresh_from_db()
    assert user.last_merchant is None


# Landing and the merchant switcher


@pytest.mark.parametrize(
    ("role", "landing"),
    [
        (Role.OWNER, "keys:list"),
        (Role.VIEW, "dashboard:overview"),
        (Role.EXCHANGE, "dashboard:overview"),
        (Role.LIMITS, "dashboard:overview"),
        (Role.RESTRICTED, "dashboard:support"),
    ],
)
def test_the_merchant_landing_depends_on_the_role(merchant, role, landing):
    client, _ = signed_in_member(merchant, role)

    response = client.get(page("dashboard:merchant-home", merchant))

    assert response.status_code == 302
    assert response["Location"] == page(landing, merchant)
    assert client.get(response["Location"]).status_code == 200


def test_the_switcher_lists_every_merchant_of_the_user(merchant, owner, owner_client):
    second = helpers.create_merchant("Beta Exchange")
    Membership.objects.create(user=owner, merchant=second, role=Role.RESTRICTED)
    stranger = helpers.create_merchant("Gamma Not Mine")

    response = owner_client.get(page("dashboard:support", second))

    html = response.content.decode()
    assert [m.merchant for m in response.context["nav_memberships"]] == [merchant, second]
    assert response.context["nav_current"].merchant == second
    for m in (merchant, second):
        assert f'href="{page("dashboard:merchant-home", m)}"' in html
    assert stranger.name not in html
    assert page("dashboard:merchant-home", stranger) not in html


def test_the_last_merchant_opened_is_remembered_and_home_opens_it(merchant, owner, owner_client):
    second = helpers.create_merchant("Beta Exchange")
    Membership.objects.create(user=owner, merchant=second, role=Role.VIEW)

    owner_client.get(page("dashboard:overview", second))

    owner.refresh_from_db()
    assert owner.last_merchant == second
    assert owner_client.get(reverse("dashboard:home"))["Location"] == page("dashboard:merchant-home", second)
    # A new session, after signing in again, opens the same merchant.
    later = Client()
    helpers.sign_in_verified(later, owner)
    assert later.get(reverse("dashboard:home"))["Location"] == page("dashboard:merchant-home", second)

    owner_client.get(page("keys:list", merchant))
    assert owner_client.get(reverse("dashboard:home"))["Location"] == page("dashboard:merchant-home", merchant)


def test_home_falls_back_to_a_merchant_the_user_still_belongs_to(merchant, owner, owner_client):
    second = helpers.create_merchant("Beta Exchange")
    Membership.objects.create(user=owner, merchant=second, role=Role.VIEW)
    owner_client.get(page("dashboard:overview", second))
    Membership.objects.filter(user=owner, merchant=second).delete()

    assert owner_client.get(reverse("dashboard:home"))["Location"] == page("dashboard:merchant-home", merchant)


def test_home_without_any_membership_says_so(client, db):
    user = helpers.create_user("loner@acme.test")
    helpers.sign_in_verified(client, user)

    response = client.get(reverse("dashboard:home"))

    assert response.status_code == 200
    assert "You are not a member of a merchant yet" in response.content.decode()


def test_dashboard_pages_are_not_cached(owner_client, merchant):
    response = owner_client.get(page("dashboard:overview", merchant))

    assert "no-store" in response["Cache-Control"]


def _view_classes(resolver=None):
    for pattern in (resolver or get_resolver()).url_patterns:
        if hasattr(pattern, "url_patterns"):
            yield from _view_classes(pattern)
        elif hasattr(pattern.callback, "view_class"):
            yield pattern.callback.view_class


def test_every_action_view_returns_to_its_form_page_after_sign_in():
    """page_to_return_to is ActionMixin's only where it comes before the access mixin in the view's bases."""
    actions = {view for view in _view_classes() if issubclass(view, ActionMixin)
               and issubclass(view, VerifiedUserRequiredMixin)}
    assert actions, "no action view found"
    for view in actions:
        assert view.page_to_return_to is ActionMixin.page_to_return_to, view
