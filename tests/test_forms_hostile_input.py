"""Hostile input to the dashboard's forms: CSRF everywhere, codes and key names of any shape, never a 500."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.audit import RequestContext
from dashboard.forms import CodeForm
from dashboard.models import AuditEvent, Invitation, Membership, Role
from keys import services
from keys.allowlist import parse_allowlist
from keys.models import ApiKey, KeyStatus

from . import helpers

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def member(merchant, owner) -> Membership:
    """A View member, whom the Members tab's actions would change, and an invitation they could withdraw."""
    Invitation.objects.create(merchant=merchant, email="invited@example.test", role=Role.VIEW, token_digest="0" * 64,
                              invited_by=owner, expires_at=timezone.now() + timedelta(days=7))
    return Membership.objects.get(user=helpers.create_member(merchant, Role.VIEW, "viewer@acme.test"))


def memberships() -> list[list[dict]]:
    return [list(Membership.objects.order_by("pk").values()), list(Invitation.objects.order_by("pk").values())]


@pytest.fixture
def key(owner, merchant, clock):
    key = services.generate_key(actor=owner, merchant=merchant, code=helpers.current_code(owner),
                                context=RequestContext("198.51.100.7", "pytest"))
    clock.next_code_step()
    return key


FORMS = [
    ("dashboard:sign-in", "account", {"email": "owner@acme.test", "password": helpers.PASSWORD}),
    ("dashboard:sign-out", "account", {}),
    ("dashboard:backup-codes", "account", {"code": "123456"}),
    ("dashboard:time-zone", "account", {"time_zone": "UTC"}),
    ("keys:generate", "merchant", {"name": "x", "code": "123456"}),
    ("keys:activate", "key", {"allowlist": "", "code": "123456"}),
    ("keys:deactivate", "key", {"code": "123456"}),
    ("keys:allowlist", "key", {"allowlist": "", "code": "123456"}),
    ("keys:rename", "key", {"name": "renamed", "code": "123456"}),
    ("keys:archive", "key", {"code": "123456"}),
    ("integration:signature-check", "merchant", {"body": "{}", "signature": "00"}),
    ("dashboard:member-role", "member", {"role": "restricted", "code": "123456"}),
    ("dashboard:member-remove", "member", {"code": "123456"}),
    ("dashboard:member-invite", "merchant", {"email": "new@example.test", "role": "view", "code": "123456"}),
    ("dashboard:invitation-withdraw", "invitation", {"code": "123456"}),
]


@pytest.mark.parametrize("name, scope, data", FORMS, ids=[f[0] for f in FORMS])
def test_every_form_refuses_a_post_without_the_csrf_token(owner, merchant, key, member, name, scope, data):
    browser = Client(enforce_csrf_checks=True)
    helpers.sign_in_verified(browser, owner)
    args = _args(scope, merchant, key, member)
    before, members_before = list(ApiKey.objects.values()), memberships()

    response = browser.post(reverse(name, args=args), data)

    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()
    assert list(ApiKey.objects.values()) == before
    assert memberships() == members_before


@pytest.mark.parametrize("charset", ["latin-1", "utf-16"])
@pytest.mark.parametrize("name, scope, data", FORMS, ids=[f[0] for f in FORMS])
def test_every_form_answers_a_body_in_another_charset_than_utf8_with_the_400_page(owner, merchant, key, member, name,
                                                                                  scope, data, charset):
    browser = Client(enforce_csrf_checks=True, raise_request_exception=False)
    helpers.sign_in_verified(browser, owner)
    url = reverse(name, args=_args(scope, merchant, key, member))
    token = "a" * 32  # a valid CSRF secret, in the cookie and the form alike
    browser.cookies[django_settings.CSRF_COOKIE_NAME] = token
    before, members_before = list(ApiKey.objects.values()), memberships()

    response = browser.post(url, f"csrfmiddlewaretoken={token}&name=x",
                            content_type=f"application/x-www-form-urlencoded; charset={charset}")

    assert response.status_code == 400
    assert "We could not read that request" in response.content.decode()
    assert "Content-Security-Policy" in response
    assert list(ApiKey.objects.values()) == before
    assert memberships() == members_before


# Each URL that changes something, and the page that holds its form.
ACTIONS = [
    ("dashboard:sign-out", "account", "dashboard:home"),
    ("dashboard:backup-codes", "account", "dashboard:account-security"),
    ("dashboard:time-zone", "account", "dashboard:account-security"),
    ("keys:generate", "merchant", "keys:generate-form"),
    ("keys:activate", "key", "keys:activate-form"),
    ("keys:deactivate", "key", "keys:deactivate-form"),
    ("keys:allowlist", "key", "keys:allowlist-form"),
    ("keys:rename", "key", "keys:rename-form"),
    ("keys:archive", "key", "keys:archive-form"),
    ("dashboard:member-role", "member", "dashboard:member-role-form"),
    ("dashboard:member-remove", "member", "dashboard:member-remove-form"),
    ("dashboard:member-invite", "merchant", "dashboard:member-invite-form"),
    ("dashboard:invitation-withdraw", "invitation", "dashboard:invitation-withdraw-form"),
]


def ready_for(action: str, owner, merchant, key, clock) -> None:
    """Bring the generated ``key`` to a status ``action`` is allowed from (active, or deactivated to archive)."""
    context = RequestContext("198.51.100.7", "pytest")
    if action in ("keys:deactivate", "keys:archive", "keys:allowlist"):
        services.activate_key(actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""),
                              code=helpers.current_code(owner), context=context)
        clock.next_code_step()
    if action == "keys:archive":
        services.deactivate_key(actor=owner, merchant=merchant, key_id=key.pk, code=helpers.current_code(owner),
                                context=context)
        clock.next_code_step()


def _args(scope, merchant, key, member=None):
    if scope == "member":
        return [merchant.slug, member.pk]
    if scope == "invitation":
        return [merchant.slug, Invitation.objects.get(merchant=merchant).pk]
    return {"account": [], "merchant": [merchant.slug], "key": [merchant.slug, key.pk]}[scope]


@pytest.mark.parametrize("method", ["get", "head", "put", "patch", "delete"])
@pytest.mark.parametrize("name, scope, form_page", ACTIONS, ids=[a[0] for a in ACTIONS])
def test_every_action_answers_any_method_but_post_with_405(owner, owner_client, merchant, key, member, name, scope,
                                                            form_page, method):
    owner_client.get(reverse("keys:list", args=[merchant.slug]))  # the merchant is already the one last opened
    before_keys, before_user = list(ApiKey.objects.values()), list(type(owner).objects.values())
    before_events, before_members = AuditEvent.objects.count(), memberships()

    response = getattr(owner_client, method)(reverse(name, args=_args(scope, merchant, key, member)))

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    if method != "head":
        form_url = reverse(form_page, args=_args(scope, merchant, key, member) if scope != "account" else [])
        assert f'href="{form_url}"' in response.content.decode()
    assert list(ApiKey.objects.values()) == before_keys
    assert list(type(owner).objects.values()) == before_user
    assert AuditEvent.objects.count() == before_events
    assert memberships() == before_members
    assert owner_client.get(reverse("keys:list", args=[merchant.slug])).status_code == 200  # still signed in


@pytest.mark.parametrize("name, scope, form_page", [a for a in ACTIONS if a[0].startswith("keys:")],
                         ids=[a[0] for a in ACTIONS if a[0].startswith("keys:")])
def test_each_form_page_posts_to_its_action_and_takes_no_post_itself(owner, owner_client, merchant, key, clock, name,
                                                                     scope, form_page):
    ready_for(name, owner, merchant, key, clock)
    args = _args(scope, merchant, key)

    page = owner_client.get(reverse(form_page, args=args))

    assert page.status_code == 200
    assert f'<form method="post" action="{reverse(name, args=args)}"' in page.content.decode()
    assert owner_client.post(reverse(form_page, args=args), {"name": "x", "code": "123456"}).status_code == 405


@HYPOTHESIS
@given(raw=st.text(max_size=60))
def test_any_text_in_a_code_field_is_a_form_error_or_a_well_formed_code(raw):
    form = CodeForm({"code": raw})
    if form.is_valid():
        code = form.cleaned_data["code"]
        assert code.isascii() and code.isdigit() and len(code) in (6, 10)
    else:
        assert form.errors["code"]


@HYPOTHESIS
@given(name=st.text(max_size=300))
def test_any_key_name_is_saved_escaped_or_refused_never_a_500(owner_client, owner, merchant, key, clock, name):
    response = owner_client.post(reverse("keys:rename", args=[merchant.slug, key.pk]),
                                 {"name": name, "code": helpers.fresh_code(clock, owner)})
    assert response.status_code in (200, 302)
    key.refresh_from_db()
    if response.status_code == 302:
        assert key.name == name.strip()
        page = owner_client.get(reverse("keys:list", args=[merchant.slug])).content.decode()
        assert "<script" not in page.lower() or "<script" not in name.lower()
    else:
        assert "name" in response.context["form"].errors


@pytest.mark.parametrize("raw", [b"%ff%fe", b"Checkout%ED%A0%80", b"%C0%80"])
def test_a_key_name_whose_bytes_are_not_utf8_is_refused_not_saved_as_replacement_characters(owner_client, owner,
                                                                                            merchant, key, raw):
    response = owner_client.post(reverse("keys:rename", args=[merchant.slug, key.pk]),
                                 b"name=" + raw + b"&code=" + helpers.current_code(owner).encode(),
                                 content_type="application/x-www-form-urlencoded")

    assert response.context["form"].errors["name"] == ["The name arrived with bytes that are not UTF-8 text; type it again."]
    key.refresh_from_db()
    assert key.name == ""


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"])
def test_html_in_a_key_name_is_escaped_in_the_dashboard_and_the_admin(owner_client, owner, merchant, key, name):
    response = owner_client.post(reverse("keys:rename", args=[merchant.slug, key.pk]),
                                 {"name": name, "code": helpers.current_code(owner)})
    assert response.status_code == 302
    client = Client()
    helpers.sign_in_verified(client, helpers.create_user(staff=True))
    pages = {
        "dashboard": owner_client.get(reverse("keys:list", args=[merchant.slug])),
        "admin list": client.get(reverse("admin:keys_apikey_changelist")),
        "admin page": client.get(reverse("admin:keys_apikey_change", args=[key.pk])),
    }
    for where, page in pages.items():
        html = page.content.decode()
        assert name not in html, where
        assert "&lt;" in html, where


@pytest.mark.parametrize("field", ["merchant", "status", "secret", "encrypted_secret", "public_key"])
def test_extra_fields_posted_to_generate_are_ignored(owner, owner_client, merchant, clock, field):
    other = helpers.create_merchant()
    owner_client.post(reverse("keys:generate", args=[merchant.slug]),
                      {"name": "n", "code": helpers.current_code(owner), field: {"merchant": other.pk}.get(field, "active")})
    created = ApiKey.objects.get()
    assert created.merchant == merchant
    assert created.status == KeyStatus.GENERATED
    assert created.encrypted_secret == ""
    assert created.public_key != "active"


EXTRA_FIELDS = {"merchant": "0", "status": "archived", "secret": "A" * 43, "encrypted_secret": "x",
                "public_key": "sbx_planted", "allowed_networks": "0.0.0.0/0", "created_by": "0"}


def test_extra_fields_posted_to_rename_are_ignored(owner_client, owner, merchant, key):
    before = ApiKey.objects.values().get(pk=key.pk)

    owner_client.post(reverse("keys:rename", args=[merchant.slug, key.pk]),
                      {"name": "Renamed", "code": helpers.current_code(owner), **EXTRA_FIELDS})

    after = ApiKey.objects.values().get(pk=key.pk)
    assert after["name"] == "Renamed"
    assert {field: value for field, value in after.items() if field not in ("name", "updated_at")} == \
        {field: value for field, value in before.items() if field not in ("name", "updated_at")}


def test_extra_fields_posted_to_activate_are_ignored(owner, owner_client, merchant, key):
    response = owner_client.post(reverse("keys:activate", args=[merchant.slug, key.pk]),
                                 {"allowlist": "203.0.113.7", "code": helpers.current_code(owner), **EXTRA_FIELDS})

    key.refresh_from_db()
    assert response.status_code == 200
    assert key.status == KeyStatus.ACTIVE
    assert key.merchant == merchant and key.created_by == owner
    assert key.allowed_networks == ["203.0.113.7"]
    assert key.public_key != "sbx_planted"
    assert "A" * 43 not in response.content.decode()


def _pending_sign_in(user) -> Client:
    """A browser that enforces CSRF, past the password step (with its token), before the 2FA step."""
    browser = Client(enforce_csrf_checks=True)
    browser.get(reverse("dashboard:sign-in"))
    token = browser.cookies[django_settings.CSRF_COOKIE_NAME].value
    response = browser.post(reverse("dashboard:sign-in"),
                            {"email": user.email, "password": helpers.PASSWORD, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    return browser


@pytest.mark.parametrize("with_device, name", [(True, "dashboard:sign-in-code"), (False, "dashboard:enrol")])
def test_the_2fa_steps_of_sign_in_refuse_a_post_without_the_csrf_token(merchant, with_device, name):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = helpers.create_user("csrf@acme.test", with_device=with_device)
    browser = _pending_sign_in(user)
    devices, events = list(TOTPDevice.objects.values()), AuditEvent.objects.count()

    response = browser.post(reverse(name), {"code": helpers.current_code(user) if with_device else "123456"})

    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()
    assert list(TOTPDevice.objects.values()) == devices
    assert AuditEvent.objects.count() == events
    assert browser.get(reverse("dashboard:home")).status_code == 302  # still not signed in


@pytest.mark.parametrize("action", ["keys:allowlist", "keys:deactivate", "keys:archive"])
def test_extra_fields_posted_to_the_other_key_actions_are_ignored(owner, owner_client, merchant, key, clock, action):
    ready_for(action, owner, merchant, key, clock)
    before = ApiKey.objects.values("merchant_id", "public_key", "encrypted_secret", "name", "created_by_id").get()

    response = owner_client.post(reverse(action, args=[merchant.slug, key.pk]),
                                 {"allowlist": "203.0.113.7", "code": helpers.current_code(owner), **EXTRA_FIELDS})

    assert response.status_code == 302
    key.refresh_from_db()
    expected_status = {"keys:allowlist": KeyStatus.ACTIVE, "keys:deactivate": KeyStatus.DEACTIVATED,
                       "keys:archive": KeyStatus.ARCHIVED}[action]
    assert key.status == expected_status
    assert ApiKey.objects.values("merchant_id", "public_key", "encrypted_secret", "name", "created_by_id").get() == before


def test_extra_fields_posted_with_a_time_zone_change_nothing_else(owner, owner_client):
    before = type(owner).objects.values("email", "is_staff", "is_superuser", "password", "last_merchant_id").get(pk=owner.pk)

    owner_client.post(reverse("dashboard:time-zone"),
                      {"time_zone": "Europe/Berlin", "email": "taken@evil.test", "is_staff": "1", "is_superuser": "on"})

    owner.refresh_from_db()
    assert owner.time_zone == "Europe/Berlin"
    assert type(owner).objects.values("email", "is_staff", "is_superuser", "password", "last_merchant_id").get(
        pk=owner.pk) == before
