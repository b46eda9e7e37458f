"""The secret key is shown once: in the response to the first activation, and nowhere else, ever.

The fixture activates a key through the pages as an Owner would; each test then looks for the
secret somewhere it must not be (pages, admin, audit trail, emails, session, logs, database).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from unittest import mock

import pytest
from django.contrib.sessions.models import Session
from django.core import mail
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from dashboard.models import AuditEvent, Role
from dashboard.qr import qr_code_svg
from keys import crypto
from keys.models import ApiKey, KeyStatus
from keys.secret_store import open_secret

from . import helpers
from .helpers import fresh_code


@dataclass
class Activation:
    key: ApiKey
    secret: str
    response: object
    post_data: dict
    responses: list = field(default_factory=list)


def url(name, merchant, key=None) -> str:
    kwargs = {"merchant_slug": merchant.slug}
    if key is not None:
        kwargs["key_id"] = key.pk
    return reverse(name, kwargs=kwargs)


def contains(response, secret: str) -> bool:
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    return secret in response.content.decode() or secret in headers


@pytest.fixture
def activation(clock, merchant, owner, owner_client, django_capture_on_commit_callbacks, caplog) -> Activation:
    """Generate and activate a key through the pages, keeping every response and sending the emails."""
    caplog.set_level(logging.DEBUG)
    helpers.create_member(merchant, Role.OWNER, "second@acme.test")
    responses = [owner_client.get(url("keys:list", merchant)), owner_client.get(url("keys:generate-form", merchant))]
    responses.append(
        owner_client.post(url("keys:generate", merchant), {"name": "Checkout", "code": fresh_code(clock, owner)}, follow=True)
    )
    key = ApiKey.objects.for_merchant(merchant).get()
    responses.append(owner_client.get(url("keys:activate-form", merchant, key)))
    post_data = {"allowlist": "203.0.113.7", "code": fresh_code(clock, owner)}
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(url("keys:activate", merchant, key), post_data)
    responses.append(response)
    secret = response.context["secret"]
    key.refresh_from_db()
    return Activation(key=key, secret=secret, response=response, post_data=post_data, responses=responses)


def test_activation_response_shows_the_secret_with_warning_qr_code_and_done(activation, merchant):
    response = activation.response
    page = response.content.decode()

    assert response.status_code == 200
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", activation.secret)
    assert open_secret(activation.key.public_key, activation.key.encrypted_secret) == activation.secret
    assert page.count(activation.secret) == 1
    assert "no-store" in response["Cache-Control"]
    assert "Make sure no one can see or record your screen" in page
    assert activation.key.public_key in page
    assert activation.key.secret_fingerprint in page
    # The QR toggle works without JavaScript (<details>) and holds an inline SVG of this very secret.
    toggle = re.search(r"<details[^>]*>\s*<summary>Secret key QR code</summary>(.*?)</details>", page, re.S)
    assert toggle is not None
    assert "<svg" in toggle.group(1) and "</svg>" in toggle.group(1)
    assert qr_code_svg(activation.secret) in toggle.group(1)
    assert re.search(rf'<a [^>]*href="{re.escape(url("keys:list", merchant))}"[^>]*>Done</a>', page)
    # Never in a header (no redirect to a URL carrying it, no cookie).
    assert not any(activation.secret in value for value in response.headers.values())
    assert all(activation.secret not in morsel.value for morsel in response.cookies.values())


def test_secret_is_in_exactly_one_response(activation, clock, merchant, owner, owner_client):
    key, responses = activation.key, list(activation.responses)
    get = owner_client.get

    # Reload: the browser posts the same form again; then with a fresh code.
    responses.append(owner_client.post(url("keys:activate", merchant, key), activation.post_data))
    responses.append(
        owner_client.post(url("keys:activate", merchant, key), {"allowlist": "", "code": fresh_code(clock, owner)})
    )
    # Going back and every page afterwards.
    responses += [get(url(name, merchant)) for name in ("keys:list", "keys:archived", "keys:generate-form")]
    responses += [
        get(url(name, merchant, key))
        for name in ("keys:activate-form", "keys:deactivate-form", "keys:allowlist-form", "keys:rename-form",
                     "keys:archive-form")
    ]
    responses += [
        get(reverse("dashboard:activity", kwargs={"merchant_slug": merchant.slug})),
        get(reverse("dashboard:overview", kwargs={"merchant_slug": merchant.slug})),
        get(reverse("dashboard:account-security")),
        get(reverse("dashboard:home"), follow=True),
    ]
    responses.append(
        owner_client.post(url("keys:deactivate", merchant, key), {"code": fresh_code(clock, owner)}, follow=True)
    )
    responses.append(get(url("keys:activate-form", merchant, key)))
    reactivated = owner_client.post(
        url("keys:activate", merchant, key), {"allowlist": "", "code": fresh_code(clock, owner)}, follow=True
    )
    responses.append(reactivated)

    assert all(response.status_code == 200 for response in responses)
    assert [response for response in responses if contains(response, activation.secret)] == [activation.response]
    key.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE
    assert "is not shown again" in reactivated.content.decode()
    for response in responses:
        for redirect_url, _status in getattr(response, "redirect_chain", []):
            assert activation.secret not in redirect_url


def test_secret_is_not_in_the_admin(activation):
    staff = helpers.create_user("staff@platform.test", staff=True)
    staff_client = Client()
    helpers.sign_in_verified(staff_client, staff)
    key = activation.key
    pages = [
        reverse("admin:index"),
        reverse("admin:keys_apikey_changelist"),
        reverse("admin:keys_apikey_changelist") + f"?q={key.public_key}",
        reverse("admin:keys_apikey_change", args=[key.pk]),
        reverse("admin:keys_apikey_history", args=[key.pk]),
        reverse("admin:dashboard_auditevent_changelist"),
    ]
    pages += [reverse("admin:dashboard_auditevent_change", args=[event.pk]) for event in AuditEvent.objects.all()]

    for page in pages:
        response = staff_client.get(page)
        assert response.status_code == 200, page
        content = response.content.decode()
        assert activation.secret not in content, page
        assert key.encrypted_secret not in content, page
    # The admin does show the key itself, so the check above looked at the right page.
    assert key.public_key in staff_client.get(reverse("admin:keys_apikey_change", args=[key.pk])).content.decode()


def test_secret_is_not_in_the_audit_trail(activation):
    events = list(AuditEvent.objects.all())
    assert any(event.action == "key_activated" for event in events)
    for event in events:
        for value in (event.target, event.actor_email, event.user_agent, repr(event.details), str(event)):
            assert activation.secret not in value
            assert activation.key.encrypted_secret not in value


def test_secret_is_not_in_the_emails(activation):
    assert len(mail.outbox) == 2  # one per Owner, so there was something to look at
    for message in mail.outbox:
        assert activation.key.public_key in message.body
        assert activation.secret not in message.subject
        assert activation.secret not in message.body
        assert activation.key.encrypted_secret not in message.body
        assert all(activation.secret not in str(value) for value in message.extra_headers.values())


def test_secret_is_not_in_the_session_or_cookies(activation, owner_client):
    sessions = list(Session.objects.all())
    assert sessions
    for session in sessions:
        assert activation.secret not in session.session_data
        assert activation.secret not in repr(session.get_decoded())
    assert all(activation.secret not in morsel.value for morsel in owner_client.cookies.values())


def test_secret_is_not_in_the_logs(activation, caplog):
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert records  # the audit trail logs every event, so logging was captured
    for record in records:
        assert activation.secret not in record.getMessage()


def _text_columns(model) -> list[str]:
    return [
        column.name for column in model._meta.concrete_fields
        if column.get_internal_type() in {"CharField", "TextField", "JSONField", "SlugField", "EmailField"}
    ]


def test_secret_is_not_in_the_database_in_plain_text(activation):
    # The named tables, column by column.
    for model in (ApiKey, AuditEvent, Session):
        rows = list(model.objects.values_list(*_text_columns(model)))
        assert rows, model
        for row in rows:
            assert all(activation.secret not in str(value) for value in row), model
    # And every column of every table, in case the secret went somewhere unexpected.
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, (bytes, memoryview)):
                        value = bytes(value).decode("latin-1")
                    assert activation.secret not in str(value), table


def test_reactivation_does_not_show_the_secret_and_says_how_to_get_a_new_pair(activation, clock, merchant, owner, owner_client):
    key = activation.key
    owner_client.post(url("keys:deactivate", merchant, key), {"code": fresh_code(clock, owner)})

    page = owner_client.get(url("keys:activate-form", merchant, key)).content.decode()
    assert "is not shown again" in page
    assert "deactivate this key and generate a new pair" in page
    assert "Make sure no one can see or record your screen" not in page

    response = owner_client.post(url("keys:activate", merchant, key), {"allowlist": "", "code": fresh_code(clock, owner)})
    assert response.status_code == 302
    assert activation.secret not in response["Location"]
    assert not contains(owner_client.get(response["Location"]), activation.secret)


@pytest.mark.parametrize(
    "debug",
    [
        pytest.param(False, id="production 500 page"),
        pytest.param(True, id="DEBUG technical 500 page"),
    ],
)
def test_secret_is_not_on_an_error_page(clock, merchant, owner, caplog, debug):
    """If showing the secret fails, the error page (and its log line) must not show it instead."""
    made = []
    real_generate_secret = crypto.generate_secret

    def recording_generate_secret():
        made.append(real_generate_secret())
        return made[-1]

    key = ApiKey.objects.create(merchant=merchant, public_key=crypto.generate_public_key())
    browser = Client(raise_request_exception=False)
    helpers.sign_in_verified(browser, owner)
    with (
        override_settings(DEBUG=debug),
        mock.patch("keys.crypto.generate_secret", recording_generate_secret),
        mock.patch("keys.views.render", side_effect=RuntimeError("rendering failed")),
    ):
        response = browser.post(url("keys:activate", merchant, key), {"allowlist": "", "code": fresh_code(clock, owner)})

    assert response.status_code == 500
    assert len(made) == 1
    for record in caplog.records:
        assert made[0] not in record.getMessage()
        assert made[0] not in (caplog.handler.format(record) or "")
    assert made[0] not in response.content.decode()


def test_the_secret_is_still_shown_when_the_qr_code_cannot_be_drawn(clock, merchant, owner, owner_client):
    """The key is active by then; an error page would lose its secret for good."""
    key = ApiKey.objects.create(merchant=merchant, public_key=crypto.generate_public_key())
    with mock.patch("keys.views.qr_code_svg", side_effect=RuntimeError("QR drawing failed")):
        response = owner_client.post(url("keys:activate", merchant, key), {"allowlist": "", "code": fresh_code(clock, owner)})
    assert response.status_code == 200
    page = response.content.decode()
    assert "The QR code could not be drawn" in page
    key.refresh_from_db()
    assert open_secret(key.public_key, key.encrypted_secret) in page
