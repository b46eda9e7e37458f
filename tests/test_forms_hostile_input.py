"""Hostile input to the dashboard's forms: CSRF everywhere, codes and key names of any shape, never a 500."""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.audit import RequestContext
from dashboard.forms import CodeForm
from keys import services
from keys.models import ApiKey, KeyStatus

from . import helpers

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def key(owner, merchant, clock):
    key = services.generate_key(actor=owner, merchant=merchant, code=helpers.current_code(owner),
                                context=RequestContext("198.51.100.7", "pytest"))
    clock.next_code_step()
    return key


FORMS = [
    ("dashboard:sign-in", "account", {"email": "owner@acme.test", "password": helpers.PASSWORD}),
    ("dashboard:sign-out", "account", {}),
    ("dashboard:account-security", "account", {"code": "123456"}),
    ("keys:generate", "merchant", {"name": "x", "code": "123456"}),
    ("keys:activate", "key", {"allowlist": "", "code": "123456"}),
    ("keys:deactivate", "key", {"code": "123456"}),
    ("keys:allowlist", "key", {"allowlist": "", "code": "123456"}),
    ("keys:rename", "key", {"name": "renamed"}),
    ("keys:archive", "key", {"code": "123456"}),
    ("integration:signature-check", "merchant", {"body": "{}", "signature": "00"}),
]


@pytest.mark.parametrize("name, scope, data", FORMS, ids=[f[0] for f in FORMS])
def test_every_form_refuses_a_post_without_the_csrf_token(owner, merchant, key, name, scope, data):
    browser = Client(enforce_csrf_checks=True)
    helpers.sign_in_verified(browser, owner)
    args = {"account": [], "merchant": [merchant.slug], "key": [merchant.slug, key.pk]}[scope]
    before = list(ApiKey.objects.values())

    response = browser.post(reverse(name, args=args), data)

    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()
    assert list(ApiKey.objects.values()) == before


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
def test_any_key_name_is_saved_escaped_or_refused_never_a_500(owner_client, merchant, key, name):
    response = owner_client.post(reverse("keys:rename", args=[merchant.slug, key.pk]), {"name": name})
    assert response.status_code in (200, 302)
    key.refresh_from_db()
    if response.status_code == 302:
        assert key.name == name.strip()
        page = owner_client.get(reverse("keys:list", args=[merchant.slug])).content.decode()
        assert "<script" not in page.lower() or "<script" not in name.lower()
    else:
        assert "name" in response.context["form"].errors


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"])
def test_html_in_a_key_name_is_escaped_in_the_dashboard_and_the_admin(owner_client, merchant, key, name):
    assert owner_client.post(reverse("keys:rename", args=[merchant.slug, key.pk]), {"name": name}).status_code == 302
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
