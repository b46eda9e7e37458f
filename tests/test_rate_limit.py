"""At most AUTH_FAILURES_PER_HOUR failed sign-in or 2FA attempts per account per hour are processed."""
import threading

import pytest
from django.test import override_settings
from django.urls import reverse

from dashboard import rate_limit
from dashboard.audit import RequestContext
from dashboard.models import AuditAction, AuditEvent
from dashboard.two_factor import CodeRefused, RefusalReason, verify_fresh_code

from . import helpers

CONTEXT = RequestContext("198.51.100.7", "pytest")


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_wrong_passwords_beyond_the_hourly_limit_are_refused_unprocessed(client, owner, clock):
    for _ in range(3):
        client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": "wrong"})
    response = client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD})
    assert response.status_code == 200
    assert "Too many failed attempts for this account. Try again after 13:00 UTC." in response.content.decode()
    assert "pending_sign_in" not in client.session
    refused = AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED, details__reason="hourly limit")
    assert refused.count() == 1


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_the_limit_lifts_when_the_hour_ends(client, owner, clock):
    for _ in range(3):
        client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": "wrong"})
    clock.advance(3600)
    response = client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD})
    assert response.status_code == 302


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_unknown_and_known_emails_are_limited_alike(client, owner, clock):
    for email in ("nobody@acme.test", owner.email):
        for _ in range(3):
            client.post(reverse("dashboard:sign-in"), {"email": email, "password": "wrong"})
        response = client.post(reverse("dashboard:sign-in"), {"email": email, "password": "wrong"})
        assert "Too many failed attempts" in response.content.decode()


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_wrong_codes_count_towards_the_limit_and_then_even_a_right_code_is_refused(owner, clock):
    for _ in range(3):
        with pytest.raises(CodeRefused):
            verify_fresh_code(owner, "000000", context=CONTEXT, purpose="test")
        clock.advance(600)  # past django-otp's own growing delay, which is not what this test is about
    with pytest.raises(CodeRefused) as refused:
        verify_fresh_code(owner, helpers.current_code(owner), context=CONTEXT, purpose="test")
    assert refused.value.reason is RefusalReason.THROTTLED
    device = helpers.totp_device(owner)
    assert device.last_t == -1, "the right code must not have been processed"
    assert AuditEvent.objects.filter(action=AuditAction.OTP_THROTTLED, details__reason="hourly limit").count() == 1


def test_counts_are_kept_per_account_case_insensitively(clock):
    with override_settings(AUTH_FAILURES_PER_HOUR=1):
        assert rate_limit.begin_attempt("Someone@Example.test") is None
        assert rate_limit.begin_attempt("someone@example.test") is not None
        assert rate_limit.begin_attempt("other@example.test") is None


def test_the_ceiling_is_100_failures_an_hour_by_default(client, owner, clock):
    for _ in range(100):
        assert rate_limit.begin_attempt(owner.email) is None
    response = client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD})
    assert "Too many failed attempts for this account. Try again after 13:00 UTC." in response.content.decode()


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_successes_do_not_count_towards_the_ceiling(client, owner, clock):
    for _ in range(5):
        response = client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD})
        assert response.status_code == 302
    for _ in range(3):
        client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": "wrong"})
    response = client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD})
    assert "Too many failed attempts" in response.content.decode()


@override_settings(AUTH_FAILURES_PER_HOUR=5)
def test_attempts_at_the_same_moment_cannot_pass_the_ceiling_together(owner, clock):
    """Twenty threads begin an attempt at once, as twenty workers would: five are processed, not twenty."""
    start = threading.Barrier(20)
    answers = []

    def attempt():
        start.wait()
        answers.append(rate_limit.begin_attempt(owner.email))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(answer is None for answer in answers) == 5
