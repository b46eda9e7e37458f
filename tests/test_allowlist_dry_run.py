"""The allowlist dry run ("would 2001:db8::5 pass this key's allowlist?") and "your address as the sandbox sees it".

The dry run must agree with the API itself, change nothing, and refuse input that is not an address.
"""
from __future__ import annotations

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils.html import escape

from dashboard.models import AuditEvent, Role
from keys.models import ApiKey

from . import helpers
from .sandbox_support import ALLOWED_IP, OTHER_IP, activate_new_key, api, generate_key

ALLOWLIST = "198.51.100.0/24, 2001:DB8::/32, ::ffff:192.0.2.1"
NORMALISED = "198.51.100.0/24, 2001:db8::/32, 192.0.2.1"

ACCEPTED_TEXT = "would be accepted."
REFUSED_TEXT = "would be refused with"


def allowlist_url(key, **query) -> str:
    url = reverse("keys:allowlist-form", kwargs={"merchant_slug": key.merchant.slug, "key_id": key.pk})
    return url + ("?" + "&".join(f"{name}={value}" for name, value in query.items()) if query else "")


@pytest.fixture
def fenced(client, clock, owner, merchant):
    """An active key with an allowlist of IPv4, IPv6 and mapped entries, and the Owner signed in."""
    pair = activate_new_key(clock, owner, merchant, allowlist=ALLOWLIST)
    helpers.sign_in_verified(client, owner)
    return pair


DRY_RUNS = [
    ("198.51.100.7", True),
    ("198.51.100.255", True),
    ("198.51.101.7", False),
    ("2001:db8::5", True),
    ("2001:DB8:0::5", True),
    ("2001:db9::5", False),
    ("192.0.2.1", True),
    ("::ffff:192.0.2.1", True),
    ("::ffff:198.51.100.7", True),
    ("192.0.2.2", False),
    (OTHER_IP, False),
    (" 198.51.100.7 ", True),
]


@pytest.mark.parametrize("address, allowed", DRY_RUNS)
def test_dry_run_says_whether_an_address_would_pass_as_the_api_does(client, fenced, address, allowed):
    before = list(ApiKey.objects.values())
    events = AuditEvent.objects.count()

    response = client.get(allowlist_url(fenced.key), {"address": address})

    assert response.status_code == 200
    assert response.context["address_allowed"] is allowed
    page = response.content.decode()
    assert f"{escape(address.strip())}</span> {ACCEPTED_TEXT if allowed else REFUSED_TEXT}" in page
    assert (ACCEPTED_TEXT in page) is allowed and (REFUSED_TEXT in page) is not allowed
    # The normalised list it was checked against, and nothing changed by looking.
    assert f"Checked against the saved list: <span class=\"mono\">{NORMALISED}</span>" in page
    assert list(ApiKey.objects.values()) == before
    assert AuditEvent.objects.count() == events
    # And the API itself agrees with the dry run.
    sandbox_answer = api(client, pair=fenced, REMOTE_ADDR=address.strip())
    assert (sandbox_answer.status_code == 200) is allowed
    if not allowed:
        assert sandbox_answer.json()["code"] == "ip_not_allowed"


@pytest.mark.parametrize(
    "address, message",
    [
        ("not-an-ip", "&#x27;not-an-ip&#x27; is not an IPv4 or IPv6 address."),
        ("198.51.100.0/24", "&#x27;198.51.100.0/24&#x27; is not an IPv4 or IPv6 address."),
        ("256.1.1.1", "is not an IPv4 or IPv6 address."),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("１９８.51.100.7", "is not an IPv4 or IPv6 address."),
        ("", "Enter an IPv4 or IPv6 address."),
        ("1" * 65, "That is not an IP address."),
    ],
)
def test_dry_run_refuses_what_is_not_an_address(client, fenced, address, message):
    response = client.get(allowlist_url(fenced.key), {"address": address})

    assert response.status_code == 200
    assert response.context["address_allowed"] is None
    page = response.content.decode()
    assert message in page
    assert "<script>alert(1)</script>" not in page
    assert ACCEPTED_TEXT not in page and REFUSED_TEXT not in page


def test_page_without_a_dry_run_shows_no_verdict_and_no_error(client, fenced):
    response = client.get(allowlist_url(fenced.key))

    assert response.status_code == 200
    assert response.context["address_allowed"] is None
    assert not response.context["address_form"].is_bound
    assert "Enter an IPv4 or IPv6 address." not in response.content.decode()


def test_empty_allowlist_lets_every_address_pass(client, clock, owner, merchant):
    pair = activate_new_key(clock, owner, merchant)
    helpers.sign_in_verified(client, owner)

    for address in ("203.0.113.9", "2001:db8::5", "::ffff:10.0.0.1"):
        response = client.get(allowlist_url(pair.key), {"address": address})
        assert response.context["address_allowed"] is True
        assert "Checked against the saved list: <span class=\"mono\">Any IP address</span>" in response.content.decode()


def test_dry_run_works_for_a_key_not_yet_active(client, clock, owner, merchant):
    key = generate_key(clock, owner, merchant)
    ApiKey.objects.filter(pk=key.pk).update(allowed_networks=["203.0.113.0/24"])
    helpers.sign_in_verified(client, owner)

    assert client.get(allowlist_url(key), {"address": "203.0.113.5"}).context["address_allowed"] is True
    assert client.get(allowlist_url(key), {"address": "203.0.114.5"}).context["address_allowed"] is False


# Your address as the sandbox sees it


@pytest.mark.parametrize("page", ["keys:list", "keys:allowlist-form"])
def test_pages_show_the_address_the_sandbox_sees(client, fenced, page):
    kwargs = {"merchant_slug": fenced.key.merchant.slug}
    if page == "keys:allowlist-form":
        kwargs["key_id"] = fenced.key.pk
    url = reverse(page, kwargs=kwargs)

    direct = client.get(url, REMOTE_ADDR="2001:db8::77", HTTP_X_FORWARDED_FOR=ALLOWED_IP).content.decode()
    with override_settings(TRUSTED_PROXIES=["127.0.0.1"]):
        proxied = client.get(url, HTTP_X_FORWARDED_FOR=f"{OTHER_IP}, {ALLOWED_IP}").content.decode()

    label = 'Your address as the sandbox sees it: <span class="mono">'
    assert label + "2001:db8::77</span>" in direct
    assert label + ALLOWED_IP + "</span>" in proxied


# Who may look


def test_members_who_are_not_owners_cannot_dry_run(client, clock, owner, merchant):
    pair = activate_new_key(clock, owner, merchant, allowlist=ALLOWED_IP)
    for role in (Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED):
        helpers.sign_in_verified(client, helpers.create_member(merchant, role))

        response = client.get(allowlist_url(pair.key), {"address": ALLOWED_IP})

        assert response.status_code == 403, role
        assert ALLOWED_IP.encode() not in response.content


def test_another_merchants_key_is_not_found(client, clock, owner, merchant, fenced):
    other = helpers.create_merchant()
    other_pair = activate_new_key(clock, helpers.create_member(other, Role.OWNER), other, allowlist=OTHER_IP)
    own_url_other_key = reverse("keys:allowlist", kwargs={"merchant_slug": merchant.slug, "key_id": other_pair.key.pk})

    assert client.get(own_url_other_key, {"address": OTHER_IP}).status_code == 404
    assert client.get(allowlist_url(other_pair.key), {"address": OTHER_IP}).status_code == 404
