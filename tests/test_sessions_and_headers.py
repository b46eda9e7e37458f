"""Sessions end when they should; every dashboard page carries the security headers; production cookies."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import mail
from django.test import Client, override_settings
from django.urls import reverse

from keys.models import ApiKey, KeyStatus

from . import helpers

ROOT = Path(__file__).resolve().parent.parent


def keys_page(client, merchant):
    return client.get(reverse("keys:list", args=[merchant.slug]))


def test_a_session_idle_for_more_than_30_minutes_ends(owner_client, merchant, clock):
    assert keys_page(owner_client, merchant).status_code == 200
    clock.advance(29 * 60)
    assert keys_page(owner_client, merchant).status_code == 200
    clock.advance(29 * 60)
    assert keys_page(owner_client, merchant).status_code == 200, "activity keeps it alive"
    clock.advance(31 * 60)
    response = keys_page(owner_client, merchant)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:sign-in"))
    assert "_auth_user_id" not in owner_client.session


def test_a_form_sent_after_the_session_ended_says_so_and_signing_in_leads_back_to_the_form(owner_client, owner,
                                                                                         merchant, clock):
    key = ApiKey.objects.create(merchant=merchant, public_key="sbx_" + "b" * 40, created_by=owner)
    form_page = reverse("keys:archive-form", args=[merchant.slug, key.pk])
    assert owner_client.get(form_page).status_code == 200
    clock.advance(31 * 60)  # the form left open past the idle limit

    response = owner_client.post(reverse("keys:archive", args=[merchant.slug, key.pk]), {"code": "123456"},
                                 follow=True)

    assert response.redirect_chain[-1][0] == f"{reverse('dashboard:sign-in')}?next={form_page}"
    assert "Your session had ended, so that was not done." in response.content.decode()
    assert ApiKey.objects.get(pk=key.pk).status == KeyStatus.GENERATED
    owner_client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD,
                                                     "next": form_page})
    clock.next_code_step()
    signed_in = owner_client.post(reverse("dashboard:sign-in-code"), {"code": helpers.current_code(owner)})
    assert signed_in["Location"] == form_page
    assert owner_client.get(form_page).status_code == 200


def test_a_session_ends_after_12_hours_however_active(owner_client, merchant, clock):
    keys_page(owner_client, merchant)
    for _ in range(12 * 60 // 20):
        clock.advance(20 * 60)
        keys_page(owner_client, merchant)
    clock.advance(20 * 60)
    assert keys_page(owner_client, merchant).status_code == 302


def test_a_session_survives_a_secret_key_rotation_while_the_old_key_is_a_fallback(owner, merchant, settings):
    settings.SECRET_KEY = "the-secret-key-before-the-rotation"
    used_during_rotation, unused_during_rotation = Client(), Client()
    helpers.sign_in_verified(used_during_rotation, owner)
    helpers.sign_in_verified(unused_during_rotation, owner)
    settings.SECRET_KEY = "the-secret-key-after-the-rotation"

    settings.SECRET_KEY_FALLBACKS = ["the-secret-key-before-the-rotation"]
    assert keys_page(used_during_rotation, merchant).status_code == 200
    # Django moved that session to the new key as it accepted it; the other one still holds the old key's hash.
    settings.SECRET_KEY_FALLBACKS = []
    assert keys_page(used_during_rotation, merchant).status_code == 200
    assert keys_page(unused_during_rotation, merchant).status_code == 302


def test_sign_out_deletes_the_session_on_the_server(owner_client, merchant):
    from django.contrib.sessions.models import Session

    session_key = owner_client.session.session_key
    owner_client.post(reverse("dashboard:sign-out"))
    assert not Session.objects.filter(session_key=session_key).exists()


# Every kind of dashboard page: merchant pages, key forms, account pages, a 405, a 404, the sign-in pages.
HEADER_PAGES = [
    ("keys:list", "merchant"), ("keys:archived", "merchant"), ("keys:generate-form", "merchant"),
    ("keys:activate-form", "key"), ("keys:allowlist-form", "key"), ("keys:activate", "key"),
    ("dashboard:overview", "merchant"), ("dashboard:activity", "merchant"), ("dashboard:support", "merchant"),
    ("integration:request-log", "merchant"), ("integration:signature-check", "merchant"),
    ("dashboard:account-security", "account"), ("dashboard:time-zone", "account"), ("dashboard:sign-in", "account"),
]


def test_a_message_waits_through_api_requests_for_the_next_page(owner_client, owner, merchant, clock):
    generated = owner_client.post(reverse("keys:generate", args=[merchant.slug]),
                                  {"name": "", "code": helpers.fresh_code(clock, owner)})
    assert generated.status_code == 302

    ping = owner_client.get("/api/v2/ping")
    page = keys_page(owner_client, merchant)

    # The API sets up no message storage (it never shows one); the page after it shows the message.
    assert not hasattr(ping.wsgi_request, "_messages")
    assert "generated. Activate it to start using it." in page.content.decode()
    assert "generated. Activate it" not in keys_page(owner_client, merchant).content.decode()


@pytest.mark.parametrize("name, scope", HEADER_PAGES, ids=[page[0] for page in HEADER_PAGES])
def test_dashboard_pages_carry_the_security_headers(owner_client, owner, merchant, name, scope):
    key = ApiKey.objects.create(merchant=merchant, public_key="sbx_" + "c" * 40, created_by=owner)
    args = {"account": [], "merchant": [merchant.slug], "key": [merchant.slug, key.pk]}[scope]

    response = owner_client.get(reverse(name, args=args))

    assert response.status_code in (200, 302, 405)
    assert_security_headers(response)


def test_error_pages_carry_the_security_headers(owner_client, client):
    assert_security_headers(owner_client.get("/m/no-such-merchant/keys/"))
    assert_security_headers(client.get(reverse("dashboard:sign-in-code")))


def assert_security_headers(response):
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    if response.status_code == 200:
        assert "no-store" in response["Cache-Control"]


@override_settings(SECURE_HSTS_SECONDS=31536000, TRUSTED_PROXIES=["10.0.0.2"])
def test_hsts_is_sent_over_https_only_when_a_trusted_proxy_says_so(owner_client, merchant):
    url = reverse("keys:list", args=[merchant.slug])
    trusted = owner_client.get(url, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_PROTO="https")
    assert "max-age=31536000" in trusted["Strict-Transport-Security"]
    forged = owner_client.get(url, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_PROTO="https")
    assert "Strict-Transport-Security" not in forged


def production_settings(**extra) -> dict:
    env = {**os.environ, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 50, "DJANGO_ALLOWED_HOSTS": "example.com",
           "KEYS_ENCRYPTION_KEYS": "A" * 43, **extra}
    env.pop("DJANGO_HTTPS", None)
    code = ("import json, django; from django.conf import settings; django.setup(); print(json.dumps({k: getattr("
            "settings, k) for k in ['SESSION_COOKIE_NAME', 'CSRF_COOKIE_NAME', 'SESSION_COOKIE_SECURE', "
            "'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', 'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', "
            "'SECRET_KEY_FALLBACKS']}))")
    env["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(output.stdout)


def test_production_cookies_are_secure_host_only_and_http_only():
    values = production_settings()
    assert values["SESSION_COOKIE_NAME"] == "__Host-sessionid"
    assert values["CSRF_COOKIE_NAME"] == "__Host-csrftoken"
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"] and values["SESSION_COOKIE_HTTPONLY"]
    assert values["SECURE_SSL_REDIRECT"]
    assert values["SECURE_HSTS_SECONDS"] >= 31536000


def test_the_keys_a_rotated_secret_key_replaced_come_from_the_environment():
    assert production_settings()["SECRET_KEY_FALLBACKS"] == []
    rotated = production_settings(DJANGO_SECRET_KEY_FALLBACKS="older-key-one, older-key-two")
    assert rotated["SECRET_KEY_FALLBACKS"] == ["older-key-one", "older-key-two"]


def test_production_refuses_to_start_without_a_secret_key():
    env = {**os.environ, "DJANGO_DEBUG": "0", "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    env.pop("DJANGO_SECRET_KEY", None)
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


@override_settings(DEBUG=False, ADMINS=[("Ops", "ops@example.test")])
def test_a_forced_error_leaves_no_code_or_secret_in_the_log_or_the_error_email(owner, merchant, clock, caplog,
                                                                              monkeypatch):
    caplog.set_level(logging.DEBUG)
    key = ApiKey.objects.create(merchant=merchant, public_key="sbx_" + "b" * 40)
    secrets_made = []

    def seal_then_fail(public_key, secret):
        secrets_made.append(secret)
        raise RuntimeError("boom")

    monkeypatch.setattr("keys.services.seal_secret", seal_then_fail)
    browser = Client(raise_request_exception=False)
    helpers.sign_in_verified(browser, owner)
    code = helpers.current_code(owner)

    response = browser.post(reverse("keys:activate", args=[merchant.slug, key.pk]), {"allowlist": "", "code": code})

    assert response.status_code == 500
    assert mail.outbox, "the error email to ADMINS was sent"
    assert len(secrets_made) == 1
    logged = "\n".join(caplog.handler.format(record) for record in caplog.records)
    for text in [logged] + [message.body for message in mail.outbox]:
        assert not re.search(rf"(?<![0-9]){code}(?![0-9])", text)
        assert secrets_made[0] not in text
    assert "boom" in logged, "the error itself is logged"


@override_settings(DEBUG=False, ADMINS=[("Ops", "ops@example.test")])
def test_a_forced_error_in_the_api_leaves_no_body_or_signature_in_the_log_or_the_error_email(
    client, clock, key_pair, caplog, monkeypatch
):
    from keys.crypto import sign

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr("sandbox.views.accounts_list_body",
                        lambda balances: (_ for _ in ()).throw(RuntimeError("boom")))
    client.raise_request_exception = False
    body = b'{"marker":"api-body-must-not-leak-5d1a"}'
    signature = sign(key_pair.secret, body)

    response = client.post("/api/v2/accounts/list", body, content_type="application/json",
                           HTTP_X_PROCESSING_KEY=key_pair.public_key, HTTP_X_PROCESSING_SIGNATURE=signature)

    assert response.status_code == 500
    assert mail.outbox, "the error email to ADMINS was sent"
    logged = "\n".join(caplog.handler.format(record) for record in caplog.records)
    for text in [logged] + [message.body for message in mail.outbox]:
        assert "api-body-must-not-leak-5d1a" not in text
        assert signature not in text and key_pair.secret not in text
    assert "boom" in logged


@pytest.mark.parametrize(
    ("backend", "warned"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", True),
        ("django.core.cache.backends.dummy.DummyCache", True),
        ("django.core.cache.backends.redis.RedisCache", False),
    ],
)
def test_check_deploy_warns_when_the_cache_is_not_shared_between_workers(backend, warned):
    from django.core import checks

    with override_settings(CACHES={"default": {"BACKEND": backend, "LOCATION": "redis://127.0.0.1:6379/9"}}):
        found = [message.id for message in checks.run_checks(include_deployment_checks=True)
                 if message.id == "dashboard.W001"]

    assert found == (["dashboard.W001"] if warned else [])
