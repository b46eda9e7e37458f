"""Faults: a transition interrupted half-way changes nothing; no database or no key-encryption key fails closed."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, OperationalError, connection
from django.test import override_settings
from django.urls import reverse

from dashboard.audit import RequestContext
from dashboard.models import AuditAction, AuditEvent, AuditOutcome
from keys import crypto, services
from keys.allowlist import parse_allowlist
from keys.models import ApiKey, KeyStatus
from sandbox.models import ApiRequest

from . import helpers
from .sandbox_support import api

User = get_user_model()

CONTEXT = RequestContext("198.51.100.7", "pytest")


class Injected(Exception):
    pass


def raise_injected(*args, **kwargs):
    raise Injected("injected fault")


@pytest.fixture
def generated_key(owner, merchant, clock):
    key = services.generate_key(actor=owner, merchant=merchant, code=helpers.current_code(owner), context=CONTEXT)
    clock.next_code_step()
    return key


def snapshot(key: ApiKey) -> dict:
    key.refresh_from_db()
    return {field.name: getattr(key, field.attname) for field in ApiKey._meta.concrete_fields}


@pytest.fixture
def failing_client(owner_client):
    owner_client.raise_request_exception = False
    return owner_client


@pytest.mark.parametrize(
    "where",
    [
        "keys.services.seal_secret",  # after the secret is made, before it is stored
        "keys.services.record",  # after the key left "generated", before the success event is written
        "keys.notifications.notify_owners",  # after everything but the emails are queued
    ],
)
def test_a_fault_inside_activation_leaves_the_database_as_it_was(failing_client, owner, merchant, generated_key,
                                                                 monkeypatch, where):
    before = snapshot(generated_key)
    events_before = AuditEvent.objects.filter(action=AuditAction.KEY_ACTIVATED).count()
    monkeypatch.setattr(where, raise_injected)

    response = failing_client.post(
        reverse("keys:activate", args=[merchant.slug, generated_key.pk]),
        {"allowlist": "203.0.113.5", "code": helpers.current_code(owner)},
    )

    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page
    assert "Traceback" not in page and "Injected" not in page
    assert snapshot(generated_key) == before
    assert AuditEvent.objects.filter(action=AuditAction.KEY_ACTIVATED).count() == events_before


def test_a_fault_inside_deactivation_leaves_the_key_active(owner, merchant, generated_key, clock, monkeypatch):
    services.activate_key(actor=owner, merchant=merchant, key_id=generated_key.pk, allowlist=parse_allowlist(""),
                          code=helpers.current_code(owner), context=CONTEXT)
    clock.next_code_step()
    before = snapshot(generated_key)
    monkeypatch.setattr("keys.services.record", raise_injected)
    with pytest.raises(Injected):
        services.deactivate_key(actor=owner, merchant=merchant, key_id=generated_key.pk,
                                code=helpers.current_code(owner), context=CONTEXT)
    assert snapshot(generated_key) == before
    assert before["status"] == KeyStatus.ACTIVE


@pytest.fixture
def active_key(owner, merchant, generated_key):
    result = services.activate_key(actor=owner, merchant=merchant, key_id=generated_key.pk,
                                   allowlist=parse_allowlist(""), code=helpers.current_code(owner), context=CONTEXT)
    return result.key, result.secret


def signed_post(client, key, secret, body=b"{}"):
    return client.generic(
        "POST", "/api/v2/accounts/list", body, content_type="application/json",
        HTTP_X_PROCESSING_KEY=key.public_key, HTTP_X_PROCESSING_SIGNATURE=crypto.sign(secret, body),
    )


def test_the_api_answers_json_503_when_the_database_is_unreachable(client, active_key, monkeypatch):
    key, secret = active_key
    def unreachable(*args, **kwargs):
        raise OperationalError("could not connect to server")

    with monkeypatch.context() as patched:
        patched.setattr("django.db.backends.utils.CursorWrapper.execute", unreachable)
        response = signed_post(client, key, secret)
    assert response.status_code == 503
    assert response.json() == {"error": "Service temporarily unavailable", "code": "service_unavailable"}


@pytest.mark.parametrize("configured", [pytest.param("", id="missing"),
                                        pytest.param(crypto.new_encryption_key(), id="another key")])
def test_a_secret_that_cannot_be_decrypted_authenticates_nothing(client, active_key, configured):
    """With the key-encryption key missing (DEBUG off) or replaced by another, the API fails closed."""
    key, secret = active_key
    with override_settings(KEYS_ENCRYPTION_KEYS=configured):
        response = signed_post(client, key, secret)
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"


def test_a_sealed_secret_copied_onto_another_key_does_not_decrypt(client, owner, merchant, active_key):
    key, secret = active_key
    other = ApiKey.objects.create(merchant=merchant, public_key=crypto.generate_public_key(),
                                  status=KeyStatus.GENERATED)
    ApiKey.objects.filter(pk=key.pk).update(status=KeyStatus.DEACTIVATED)
    ApiKey.objects.filter(pk=other.pk).update(status=KeyStatus.ACTIVE, encrypted_secret=key.encrypted_secret)
    other.refresh_from_db()
    response = signed_post(client, other, secret)
    assert response.status_code == 503
    assert AuditEvent.objects.filter(outcome=AuditOutcome.SUCCEEDED, action=AuditAction.KEY_ACTIVATED).count() == 1


def test_the_dashboard_shows_an_error_page_without_details_when_the_database_fails(failing_client, merchant,
                                                                                   monkeypatch):
    monkeypatch.setattr("keys.views.ApiKey.objects.for_merchant",
                        lambda merchant: (_ for _ in ()).throw(DatabaseError("connection refused")))
    response = failing_client.get(reverse("keys:list", args=[merchant.slug]))
    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()
    assert "connection refused" not in response.content.decode()


@pytest.mark.parametrize("configured", ["", "not-a-key"], ids=["missing", "malformed"])
def test_activation_without_a_usable_key_encryption_key_shows_an_error_page_and_changes_nothing(
    failing_client, owner, merchant, clock, configured
):
    key = services.generate_key(actor=owner, merchant=merchant, code=helpers.current_code(owner),
                                context=RequestContext("198.51.100.7", "pytest"))
    clock.next_code_step()

    with override_settings(DEBUG=False, KEYS_ENCRYPTION_KEYS=configured):
        response = failing_client.post(reverse("keys:activate", args=[merchant.slug, key.pk]),
                                       {"allowlist": "", "code": helpers.current_code(owner)})

    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in page and "Traceback" not in page and "KEYS_ENCRYPTION_KEYS" not in page
    key.refresh_from_db()
    assert key.status == KeyStatus.GENERATED and key.encrypted_secret == ""
    assert not AuditEvent.objects.filter(action=AuditAction.KEY_ACTIVATED).exists()


# Transactional tests (a real connection, no test transaction around it) start with the currencies flushed: a
# signed call is accepted with an empty list.


def start_of_a_request() -> None:
    """What Django does to a persistent connection when a request starts (the test client skips it)."""
    connection.close_if_unusable_or_obsolete()


@pytest.mark.django_db(transaction=True)
def test_the_api_lookup_stands_in_for_the_connection_health_check(client, clock, key_pair, monkeypatch,
                                                                  django_assert_num_queries, settings):
    # The key is read, not kept from the first request (sandbox.key_lookup_cache): that read is what is tested.
    settings.SANDBOX_KEEP_KEY_LOOKUPS = False
    assert api(client, pair=key_pair).status_code == 200
    assert connection.health_check_enabled, "CONN_HEALTH_CHECKS is on, as in production"
    checks = []
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(1) or True)
    start_of_a_request()

    # Key with balances, and (unbatched in the tests) the request-log row; no SELECT 1 before them.
    with django_assert_num_queries(2):
        assert api(client, pair=key_pair).status_code == 200
    assert checks == []

    # A page still gets Django's health check before its first query.
    start_of_a_request()
    client.get(reverse("dashboard:sign-in"))
    User.objects.exists()
    assert checks == [1]


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_between_requests_costs_the_api_no_failed_request(client, clock, key_pair):
    """A database restart or an idle timeout kills a persistent connection; the next signed call still succeeds."""
    assert api(client, pair=key_pair).status_code == 200
    dead = connection.connection
    helpers.kill_database_connection()
    start_of_a_request()

    assert api(client, pair=key_pair).status_code == 200
    assert connection.connection is not dead
    assert ApiRequest.objects.filter(status=200).count() == 2
