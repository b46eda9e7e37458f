"""The "API keys" pages: what an Owner sees and does, and what everyone else is refused.

Every refused request is followed by a check that no key of the merchant changed.
"""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Role
from keys import crypto, services
from keys.models import ApiKey, KeyStatus
from keys.secret_store import seal_secret
from keys.views import ARCHIVED_PAGE_SIZE, KEYS_PAGE_SIZE

from . import helpers
from .helpers import fresh_code

PER_KEY_URLS = ["keys:activate", "keys:deactivate", "keys:allowlist", "keys:rename", "keys:archive"]
MERCHANT_URLS = ["keys:list", "keys:archived", "keys:generate"]


# Helpers


def make_key(merchant, status=KeyStatus.GENERATED, *, name="", allowed=()) -> ApiKey:
    public_key = crypto.generate_public_key()
    sealed = ""
    if status in (KeyStatus.ACTIVE, KeyStatus.DEACTIVATED):
        sealed = seal_secret(public_key, crypto.generate_secret())
    return ApiKey.objects.create(
        merchant=merchant, public_key=public_key, name=name, status=status, encrypted_secret=sealed,
        allowed_networks=list(allowed),
    )


def url(name, merchant, key=None, key_id=None) -> str:
    kwargs = {"merchant_slug": merchant.slug}
    if key is not None or key_id is not None:
        kwargs["key_id"] = key_id if key_id is not None else key.pk
    return reverse(name, kwargs=kwargs)


def snapshot(merchant) -> list[dict]:
    return list(ApiKey.objects.for_merchant(merchant).order_by("pk").values())


def key_events(merchant):
    return AuditEvent.objects.for_merchant(merchant).filter(action__startswith="key_")


def text(response) -> str:
    return response.content.decode()


def has_code_form(response) -> bool:
    return 'name="code"' in text(response)


# The list


def test_empty_list(clock, merchant, owner_client):
    response = owner_client.get(url("keys:list", merchant))

    assert response.status_code == 200
    assert "No API keys yet. Generate one to start calling the sandbox API." in text(response)
    assert "Generate API key" in text(response)
    assert f'href="{url("keys:generate-form", merchant)}"' in text(response)
    assert "Archived keys (0)" in text(response)


def test_list_shows_each_key_with_its_status_addresses_and_allowed_actions(clock, merchant, owner, owner_client):
    generated = make_key(merchant, KeyStatus.GENERATED, name="Staging")
    active = make_key(merchant, KeyStatus.ACTIVE, name="Checkout", allowed=["203.0.113.7", "2001:db8::/32"])
    deactivated = make_key(merchant, KeyStatus.DEACTIVATED)
    archived = make_key(merchant, KeyStatus.ARCHIVED, name="Old one")
    ApiKey.objects.filter(pk=active.pk).update(secret_fingerprint="abcd1234", created_by=owner)

    response = owner_client.get(url("keys:list", merchant))
    page = text(response)

    assert response.status_code == 200
    assert [key for key, _actions in response.context["rows"]] == [deactivated, active, generated]
    for key in (generated, active, deactivated):
        assert key.public_key in page
    assert "Staging" in page and "Checkout" in page
    assert archived.public_key not in page and "Old one" not in page
    assert "Archived keys (1)" in page
    assert "203.0.113.7, 2001:db8::/32" in page
    assert page.count("Any IP address") == 2
    assert "IP addresses" in page
    assert "Generate API key" in page and "Generated API keys" in page
    assert "badge-active" in page and "badge-generated" in page and "badge-deactivated" in page
    assert "owner@acme.test" in page
    assert "abcd1234" in page
    # Buttons are those the status allows, in the vendor's words.
    assert f'href="{url("keys:activate-form", merchant, generated)}">Activate<' in page
    assert f'href="{url("keys:activate-form", merchant, deactivated)}">Activate<' in page
    assert f'href="{url("keys:deactivate-form", merchant, active)}">Deactivate<' in page
    assert url("keys:activate-form", merchant, active) not in page
    assert url("keys:deactivate-form", merchant, generated) not in page
    assert url("keys:archive-form", merchant, active) not in page
    assert url("keys:archive-form", merchant, generated) in page


def test_archived_page_lists_only_archived_keys(clock, merchant, owner_client):
    archived = make_key(merchant, KeyStatus.ARCHIVED, name="Old one")
    kept = make_key(merchant, KeyStatus.GENERATED)

    response = owner_client.get(url("keys:archived", merchant))

    assert response.status_code == 200
    assert archived.public_key in text(response) and "Old one" in text(response)
    assert kept.public_key not in text(response)


def test_archived_page_empty_state(clock, merchant, owner_client):
    response = owner_client.get(url("keys:archived", merchant))
    assert "No archived keys." in text(response)


def test_list_shows_only_this_merchants_keys(clock, merchant, owner_client):
    theirs = make_key(helpers.create_merchant(), KeyStatus.ACTIVE)
    response = owner_client.get(url("keys:list", merchant))
    assert theirs.public_key not in text(response)


# Each action, GET then POST


def test_generate_page_and_post(clock, merchant, owner, owner_client):
    response = owner_client.get(url("keys:generate-form", merchant))
    assert response.status_code == 200
    assert "2FA code" in text(response)
    assert ">Generate</button>" in text(response)
    assert 'autocomplete="one-time-code"' in text(response)

    response = owner_client.post(
        url("keys:generate", merchant), {"name": "Checkout", "code": fresh_code(clock, owner)}, follow=True
    )

    key = ApiKey.objects.for_merchant(merchant).get()
    assert response.redirect_chain == [(url("keys:list", merchant), 302)]
    assert key.name == "Checkout" and key.status == KeyStatus.GENERATED and key.created_by == owner
    assert f"API key {key.public_key} generated." in text(response)
    assert key_events(merchant).get().action == AuditAction.KEY_GENERATED


def test_generate_refused_at_the_limit_shows_why(clock, merchant, owner, owner_client):
    make_key(merchant)
    before = snapshot(merchant)
    with override_settings(KEYS_MAX_UNARCHIVED_PER_MERCHANT=1):
        response = owner_client.post(url("keys:generate", merchant), {"code": fresh_code(clock, owner)})
    assert response.status_code == 200
    assert "already has 1 API keys that are not archived" in text(response)
    assert snapshot(merchant) == before


def test_activate_page_warns_before_the_first_activation(clock, merchant, owner_client):
    key = make_key(merchant, allowed=["203.0.113.7"])

    response = owner_client.get(url("keys:activate-form", merchant, key))

    page = text(response)
    assert response.status_code == 200
    assert "IP addresses" in page and "2FA code" in page
    assert ">Activate</button>" in page
    assert "Make sure no one can see or record your screen." in page
    assert "203.0.113.7" in page  # the current allowlist is filled in
    assert key.public_key in page


def test_activate_post_shows_the_secret_page(clock, merchant, owner, owner_client):
    key = make_key(merchant)

    response = owner_client.post(
        url("keys:activate", merchant, key), {"allowlist": "203.0.113.7", "code": fresh_code(clock, owner)}
    )

    key.refresh_from_db()
    assert response.status_code == 200
    assert key.status == KeyStatus.ACTIVE and key.activated_by == owner
    assert key.allowed_networks == ["203.0.113.7"]
    assert "Your secret key" in text(response)


def test_reactivation_page_says_the_secret_is_not_shown_again(clock, merchant, owner, owner_client):
    key = make_key(merchant, KeyStatus.DEACTIVATED)

    response = owner_client.get(url("keys:activate-form", merchant, key))
    assert "is not shown again" in text(response)
    assert "deactivate this key and generate a new pair" in text(response)

    response = owner_client.post(
        url("keys:activate", merchant, key), {"allowlist": "", "code": fresh_code(clock, owner)}, follow=True
    )
    key.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE
    assert response.redirect_chain == [(url("keys:list", merchant), 302)]
    assert "Its secret key is not shown again" in text(response)
    assert "deactivate this key and generate a new pair" in text(response)


def test_activating_a_second_key_shows_the_vendor_message(clock, merchant, owner, owner_client):
    make_key(merchant, KeyStatus.ACTIVE)
    second = make_key(merchant)
    before = snapshot(merchant)

    response = owner_client.post(
        url("keys:activate", merchant, second), {"allowlist": "", "code": fresh_code(clock, owner)}
    )

    assert response.status_code == 200
    assert "Another API key is already active. Deactivate it first." in text(response)
    assert snapshot(merchant) == before


def test_a_refused_code_is_not_shown_back_in_its_field(merchant, owner_client):
    key = make_key(merchant)

    archive = owner_client.post(url("keys:archive", merchant, key), {"code": "654321"})

    field = re.search(r'<input[^>]*name="code"[^>]*>', text(archive)).group()
    assert "654321" not in field and "value=" not in field
    assert 'aria-invalid="true"' in field


def test_the_activate_page_names_the_key_already_active_before_asking_for_a_code(merchant, owner_client):
    active = make_key(merchant, KeyStatus.ACTIVE, name="Primary")
    second = make_key(merchant)

    page = text(owner_client.get(url("keys:activate-form", merchant, second)))

    assert f"Another API key is active: <span class=\"mono\">Primary ({active.public_key})</span>" in page
    assert f'href="{url("keys:deactivate-form", merchant, active)}">Deactivate it</a>' in page
    alone = text(owner_client.get(url("keys:activate-form", merchant, active)))
    assert "Another API key is active" not in alone


def test_a_key_form_page_marks_the_api_keys_tab_as_current(merchant, owner_client):
    key = make_key(merchant)
    for name in ("keys:activate-form", "keys:rename-form", "keys:archive-form"):
        page = text(owner_client.get(url(name, merchant, key)))
        assert f'<a href="{url("keys:list", merchant)}" aria-current="page">API keys</a>' in page, name
    assert f'<a href="{url("keys:list", merchant)}" aria-current="page">API keys</a>' in text(
        owner_client.get(url("keys:generate-form", merchant)))


def test_deactivate_page_and_post(clock, merchant, owner, owner_client):
    key = make_key(merchant, KeyStatus.ACTIVE)

    response = owner_client.get(url("keys:deactivate-form", merchant, key))
    assert response.status_code == 200
    assert "2FA code" in text(response) and ">Deactivate</button>" in text(response)

    response = owner_client.post(url("keys:deactivate", merchant, key), {"code": fresh_code(clock, owner)}, follow=True)

    key.refresh_from_db()
    assert key.status == KeyStatus.DEACTIVATED and key.deactivated_by == owner
    assert f"API key {key.public_key} is deactivated." in text(response)


def test_allowlist_page_and_post(clock, merchant, owner, owner_client):
    key = make_key(merchant, KeyStatus.ACTIVE, allowed=["203.0.113.7"])

    response = owner_client.get(url("keys:allowlist-form", merchant, key))
    assert response.status_code == 200
    assert "IP addresses" in text(response) and "2FA code" in text(response)
    assert "203.0.113.7" in text(response)

    response = owner_client.post(
        url("keys:allowlist", merchant, key),
        {"allowlist": "2001:DB8::1,\n 198.51.100.0/24, 198.51.100.0/24", "code": fresh_code(clock, owner)},
        follow=True,
    )

    key.refresh_from_db()
    assert key.allowed_networks == ["2001:db8::1", "198.51.100.0/24"]
    assert key.status == KeyStatus.ACTIVE
    assert "They apply from the next request." in text(response)


def test_rename_page_and_post(clock, merchant, owner, owner_client):
    key = make_key(merchant, KeyStatus.ACTIVE, name="Old")

    response = owner_client.get(url("keys:rename-form", merchant, key))
    assert response.status_code == 200
    assert has_code_form(response)
    assert 'value="Old"' in text(response)

    response = owner_client.post(
        url("keys:rename", merchant, key), {"name": "New", "code": fresh_code(clock, owner)}, follow=True
    )

    key.refresh_from_db()
    assert key.name == "New"
    assert "Name saved." in text(response)


def test_archive_page_and_post(clock, merchant, owner, owner_client):
    key = make_key(merchant, KeyStatus.DEACTIVATED)

    response = owner_client.get(url("keys:archive-form", merchant, key))
    assert response.status_code == 200
    assert "Archiving is permanent" in text(response) and "2FA code" in text(response)

    response = owner_client.post(url("keys:archive", merchant, key), {"code": fresh_code(clock, owner)}, follow=True)

    key.refresh_from_db()
    assert key.status == KeyStatus.ARCHIVED and key.archived_by == owner
    assert key.public_key not in text(response).split("is archived.")[1]  # gone from the list itself
    assert "Archived keys (1)" in text(response)


# Allowlist input


@pytest.mark.parametrize("view", ["keys:activate", "keys:allowlist"])
def test_invalid_allowlist_names_each_bad_entry_and_changes_nothing(clock, merchant, owner, owner_client, view):
    key = make_key(merchant, allowed=["203.0.113.7"])
    before, events = snapshot(merchant), key_events(merchant).count()
    code = fresh_code(clock, owner)

    response = owner_client.post(
        url(view, merchant, key), {"allowlist": "300.1.2.3, 198.51.100.9, nonsense, 10.0.0.1/8", "code": code}
    )

    assert response.status_code == 200
    errors = response.context["form"].errors["allowlist"]
    assert errors == [
        "'300.1.2.3' is not an IPv4 or IPv6 address or network",
        "'nonsense' is not an IPv4 or IPv6 address or network",
        "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?",
    ]
    for error in errors:
        assert escape(error) in text(response)
    assert snapshot(merchant) == before
    assert key_events(merchant).count() == events
    # The code was not spent on a form that did not validate.
    response = owner_client.post(url(view, merchant, key), {"allowlist": "198.51.100.9", "code": code})
    key.refresh_from_db()
    assert key.allowed_networks == ["198.51.100.9"]


def test_too_many_allowlist_entries_are_refused(clock, merchant, owner, owner_client):
    key = make_key(merchant, KeyStatus.ACTIVE)
    before = snapshot(merchant)
    entries = ", ".join(f"8.8.{i // 256}.{i % 256}" for i in range(101))
    response = owner_client.post(
        url("keys:allowlist", merchant, key), {"allowlist": entries, "code": fresh_code(clock, owner)}
    )
    assert response.status_code == 200
    assert response.context["form"].errors["allowlist"]
    assert snapshot(merchant) == before


def test_non_public_address_is_accepted_with_a_warning(clock, merchant, owner, owner_client):
    key = make_key(merchant, KeyStatus.ACTIVE)

    response = owner_client.post(
        url("keys:allowlist", merchant, key), {"allowlist": "10.0.0.5, 203.0.113.7", "code": fresh_code(clock, owner)},
        follow=True,
    )

    key.refresh_from_db()
    assert key.allowed_networks == ["10.0.0.5", "203.0.113.7"]
    assert "10.0.0.5 is not a public address" in text(response)
    assert "message-warning" in text(response)


def test_non_public_address_warning_on_the_secret_page(clock, merchant, owner, owner_client):
    key = make_key(merchant)
    response = owner_client.post(
        url("keys:activate", merchant, key), {"allowlist": "127.0.0.1", "code": fresh_code(clock, owner)}
    )
    key.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE and key.allowed_networks == ["127.0.0.1"]
    assert "127.0.0.1 is not a public address" in text(response)


# 2FA codes in the forms


def _wrong(clock, user):
    clock.next_code_step()
    return helpers.current_code(user, steps_ahead=10)


@pytest.mark.parametrize(
    ("view", "status"),
    [("keys:activate", KeyStatus.GENERATED), ("keys:deactivate", KeyStatus.ACTIVE), ("keys:archive", KeyStatus.GENERATED),
     ("keys:allowlist", KeyStatus.ACTIVE), ("keys:rename", KeyStatus.ACTIVE)],
)
def test_wrong_reused_and_malformed_codes_say_which_and_change_nothing(clock, merchant, owner, owner_client, view, status):
    key = make_key(merchant, status)
    data = {"allowlist": "203.0.113.9", "name": "Renamed"}

    before = snapshot(merchant)
    response = owner_client.post(url(view, merchant, key), {**data, "code": _wrong(clock, owner)})
    assert "That code is not right." in text(response)
    assert snapshot(merchant) == before
    # Straight after a wrong code, even the right one is throttled.
    response = owner_client.post(url(view, merchant, key), {**data, "code": helpers.current_code(owner)})
    assert "After a wrong code the next one must wait." in text(response)
    assert snapshot(merchant) == before

    # Spend a code on something else, then try it here.
    code = fresh_code(clock, owner)
    owner_client.post(url("keys:generate", merchant), {"code": code})
    before = snapshot(merchant)
    response = owner_client.post(url(view, merchant, key), {**data, "code": code})
    assert "That code has already been used." in text(response)
    assert snapshot(merchant) == before

    response = owner_client.post(url(view, merchant, key), {**data, "code": "12a456"})
    assert "Enter the 6-digit code from your authenticator app" in text(response)
    response = owner_client.post(url(view, merchant, key), {**data, "code": ""})
    assert "Enter your 2FA code." in text(response)
    assert snapshot(merchant) == before
    assert not key_events(merchant).filter(outcome=AuditOutcome.SUCCEEDED).exclude(
        action=AuditAction.KEY_GENERATED
    ).exists()


# Who may open the pages


# For each per-key page, a status from which its action is allowed, so only the role can refuse it.
ALLOWING_STATUS = {
    "keys:activate": KeyStatus.GENERATED,
    "keys:deactivate": KeyStatus.ACTIVE,
    "keys:allowlist": KeyStatus.ACTIVE,
    "keys:rename": KeyStatus.GENERATED,
    "keys:archive": KeyStatus.DEACTIVATED,
}


def _all_urls(merchant, keys):
    """Every page of the tab, and each action both at its own URL and at its form page's."""
    return [url(name, merchant) for name in MERCHANT_URLS] + [
        url(name + suffix, merchant, keys[status]) for name, status in ALLOWING_STATUS.items() for suffix in ("", "-form")
    ]


@pytest.fixture
def keys_in_every_state(merchant):
    return {status: make_key(merchant, status, name="Kept") for status in KeyStatus}


@pytest.mark.parametrize("role", [Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED])
def test_other_roles_get_403_on_every_page_and_action(clock, client, merchant, keys_in_every_state, role):
    member = helpers.create_member(merchant, role)
    helpers.sign_in_verified(client, member)
    before, events = snapshot(merchant), AuditEvent.objects.count()

    for address in _all_urls(merchant, keys_in_every_state):
        response = client.get(address)
        assert response.status_code == 403, address
        assert "This page needs the Owner role." in text(response)
        response = client.post(
            address, {"name": "Hijack", "allowlist": "", "code": fresh_code(clock, member)}
        )
        assert response.status_code == 403, address

    assert snapshot(merchant) == before
    assert AuditEvent.objects.count() == events


def test_non_member_gets_404_on_every_page_and_action(clock, client, merchant, keys_in_every_state):
    stranger = helpers.create_member(helpers.create_merchant(), Role.OWNER)
    helpers.sign_in_verified(client, stranger)
    before = snapshot(merchant)

    for address in _all_urls(merchant, keys_in_every_state):
        assert client.get(address).status_code == 404, address
        assert client.post(address, {"name": "Hijack", "code": fresh_code(clock, stranger)}).status_code == 404

    assert snapshot(merchant) == before


def test_signed_out_visitor_is_sent_to_sign_in(clock, client, merchant, keys_in_every_state):
    before = snapshot(merchant)
    for address in _all_urls(merchant, keys_in_every_state):
        response = client.post(address, {"name": "Hijack"})
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("dashboard:sign-in"))
    assert snapshot(merchant) == before


def test_another_merchants_key_ids_answer_404(clock, merchant, owner, owner_client):
    other = helpers.create_merchant()
    theirs = {status: make_key(other, status, name="Theirs") for status in KeyStatus}
    before = snapshot(other)

    for name, status in ALLOWING_STATUS.items():
        address = url(name, merchant, theirs[status])
        assert owner_client.get(url(f"{name}-form", merchant, theirs[status])).status_code == 404, address
        response = owner_client.post(address, {"name": "Hijack", "allowlist": "", "code": fresh_code(clock, owner)})
        assert response.status_code == 404, address
        assert owner_client.get(url(f"{name}-form", merchant, theirs[KeyStatus.ARCHIVED])).status_code == 404
        assert owner_client.get(url(f"{name}-form", merchant, key_id=999_999)).status_code == 404

    assert snapshot(other) == before
    assert not key_events(merchant).exists() and not key_events(other).exists()


# Actions the status does not allow


@pytest.mark.parametrize(
    ("view", "status", "reason"),
    [
        ("keys:activate", KeyStatus.ACTIVE, services.ALREADY_ACTIVE_MESSAGE),
        ("keys:activate", KeyStatus.ARCHIVED, "This API key is archived; archived keys cannot be changed."),
        ("keys:deactivate", KeyStatus.GENERATED, "You cannot deactivate an API key that is generated."),
        ("keys:deactivate", KeyStatus.DEACTIVATED, "You cannot deactivate an API key that is deactivated."),
        ("keys:archive", KeyStatus.ACTIVE, "You cannot archive an API key that is active."),
        ("keys:allowlist", KeyStatus.ARCHIVED, "This API key is archived; archived keys cannot be changed."),
        ("keys:rename", KeyStatus.ARCHIVED, "This API key is archived; archived keys cannot be changed."),
    ],
)
def test_action_not_allowed_shows_the_reason_and_no_form(clock, merchant, owner, owner_client, view, status, reason):
    key = make_key(merchant, status, name="Kept")
    before = snapshot(merchant)

    response = owner_client.get(url(f"{view}-form", merchant, key))

    assert response.status_code == 200
    assert reason in text(response)
    assert not has_code_form(response) and 'name="name"' not in text(response)
    assert "Back to API keys" in text(response)

    response = owner_client.post(url(view, merchant, key), {"name": "New", "allowlist": "", "code": fresh_code(clock, owner)})
    assert response.status_code == 200
    assert reason in text(response)
    assert snapshot(merchant) == before
    refused = key_events(merchant).get()
    assert refused.outcome == AuditOutcome.REFUSED and refused.details == {"reason": "wrong_status"}


# Key names


def test_name_with_markup_is_escaped(clock, merchant, owner, owner_client):
    name = '<script>alert("x")</script><b>bold</b>'
    owner_client.post(url("keys:generate", merchant), {"name": name, "code": fresh_code(clock, owner)})
    key = ApiKey.objects.for_merchant(merchant).get()
    assert key.name == name

    for address in [url("keys:list", merchant), url("keys:activate-form", merchant, key), url("keys:rename-form", merchant, key)]:
        page = text(owner_client.get(address))
        assert "<script>alert" not in page and "<b>bold</b>" not in page, address
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page, address

    ApiKey.objects.filter(pk=key.pk).update(status=KeyStatus.ARCHIVED)
    page = text(owner_client.get(url("keys:archived", merchant)))
    assert "<script>alert" not in page and "&lt;script&gt;" in page


BAD_NAMES = [
    pytest.param("Checkout\u202egnp.exe", id="right-to-left override"),
    pytest.param("bad\x00name", id="NUL"),
    pytest.param("bell\x07", id="control character"),
    pytest.param("two\nlines", id="new line"),
    pytest.param("zero\u200bwidth", id="zero-width space"),
    pytest.param("esc\x1b[31m", id="escape sequence"),
    pytest.param("x" * 101, id="101 characters"),
    pytest.param("<b>" * 3334, id="10,000 characters of markup"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_is_refused_on_generate(clock, merchant, owner, owner_client, name):
    response = owner_client.post(url("keys:generate", merchant), {"name": name, "code": fresh_code(clock, owner)})
    assert response.status_code == 200
    assert response.context["form"].errors["name"]
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_is_refused_on_rename(clock, merchant, owner, owner_client, name):
    key = make_key(merchant, name="Kept")
    before = snapshot(merchant)
    response = owner_client.post(url("keys:rename", merchant, key), {"name": name, "code": fresh_code(clock, owner)})
    assert response.status_code == 200
    assert response.context["form"].errors["name"]
    assert 'class="errorlist' in text(response)
    assert snapshot(merchant) == before
    assert not key_events(merchant).exists()


def test_name_of_100_characters_is_accepted(clock, merchant, owner, owner_client):
    key = make_key(merchant)
    owner_client.post(url("keys:rename", merchant, key), {"name": "é" * 100, "code": fresh_code(clock, owner)})
    key.refresh_from_db()
    assert key.name == "é" * 100


# Extra fields are ignored


def test_extra_post_fields_are_ignored_on_generate(clock, merchant, owner, owner_client):
    other = helpers.create_merchant()
    owner_client.post(
        url("keys:generate", merchant),
        {
            "name": "Mine", "code": fresh_code(clock, owner), "merchant": other.pk, "status": "active",
            "secret": "chosen-by-attacker", "encrypted_secret": "v1$x$y", "public_key": "sbx_chosen",
            "allowed_networks": "0.0.0.0/0",
        },
    )
    key = ApiKey.objects.get()
    assert key.merchant == merchant
    assert key.status == KeyStatus.GENERATED
    assert key.public_key != "sbx_chosen"
    assert key.encrypted_secret == "" and key.allowed_networks == []


def test_extra_post_fields_are_ignored_on_activate_and_rename(clock, merchant, owner, owner_client):
    key = make_key(merchant, name="Old")
    public_key = key.public_key
    response = owner_client.post(
        url("keys:activate", merchant, key),
        {"allowlist": "", "code": fresh_code(clock, owner), "secret": "chosen-by-attacker", "status": "archived",
         "merchant": helpers.create_merchant().pk, "name": "Changed"},
    )
    assert "chosen-by-attacker" not in text(response)
    key.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE and key.public_key == public_key and key.name == "Old"
    assert key.merchant == merchant

    owner_client.post(
        url("keys:rename", merchant, key),
        {"name": "New", "code": fresh_code(clock, owner), "status": "archived", "allowed_networks": "0.0.0.0/0"},
    )
    key.refresh_from_db()
    assert key.name == "New" and key.status == KeyStatus.ACTIVE and key.allowed_networks == []



def test_warning_on_the_secret_page_is_shown_once(clock, merchant, owner, owner_client):
    key = make_key(merchant)
    response = owner_client.post(
        url("keys:activate", merchant, key), {"allowlist": "10.0.0.5", "code": fresh_code(clock, owner)}
    )
    assert "Your secret key" in text(response)
    assert text(response).count("10.0.0.5 is not a public address") == 1


# The activity tab


def test_activity_tab_shows_key_events_with_who_and_from_where(clock, merchant, owner, owner_client):
    key = make_key(merchant)
    owner_client.post(url("keys:activate", merchant, key), {"allowlist": "", "code": fresh_code(clock, owner)})
    owner_client.post(url("keys:archive", merchant, key), {"code": fresh_code(clock, owner)})  # refused: active

    page = text(owner_client.get(reverse("dashboard:activity", kwargs={"merchant_slug": merchant.slug})))

    assert "API key activated" in page
    assert "API key archived" in page and "(not allowed for a key in that status)" in page
    assert f"API key {key.public_key}" in page
    assert "owner@acme.test" in page and "127.0.0.1" in page


def test_list_shows_when_and_where_a_key_was_last_used(clock, merchant, owner_client):
    key = make_key(merchant, KeyStatus.ACTIVE)
    ApiKey.objects.filter(pk=key.pk).update(
        last_used_at=timezone.now() - timedelta(days=2, minutes=17), last_used_ip="203.0.113.44"
    )
    page = text(owner_client.get(url("keys:list", merchant)))
    assert "2026-11-25 11:43" in page and "203.0.113.44" in page


@pytest.mark.parametrize(("view", "status"), [("keys:list", KeyStatus.GENERATED), ("keys:archived", KeyStatus.ARCHIVED)])
def test_page_zero_of_the_key_lists_shows_the_first_page(view, status, clock, merchant, owner_client):
    for number in range(max(KEYS_PAGE_SIZE, ARCHIVED_PAGE_SIZE) + 1):
        make_key(merchant, status, name=f"key {number}")

    for requested in ("0", "-1"):
        assert owner_client.get(url(view, merchant) + f"?page={requested}").context["page"].number == 1
