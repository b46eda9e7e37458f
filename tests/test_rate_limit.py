"""About AUTH_FAILURES_PER_HOUR failed sign-in or 2FA attempts per account in the last 60 minutes are processed."""
import threading
from datetime import timedelta

import hypothesis
import pytest
import time_machine
from django.core import checks
from django.core.cache import cache
from django.test import override_settings
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from dashboard import rate_limit
from dashboard.audit import RequestContext
from dashboard.models import AuditAction, AuditEvent
from dashboard.two_factor import CodeRefused, RefusalReason, verify_fresh_code

from . import helpers

CONTEXT = RequestContext("198.51.100.7", "pytest")


def processed(email: str) -> bool:
    """Begin an attempt for ``email``: whether the ceiling lets it be processed (it then counts as a failure)."""
    return rate_limit.begin_attempt(email).retry_at is None


def sign_in(client, email: str, password: str = helpers.PASSWORD):
    return client.post(reverse("dashboard:sign-in"), {"email": email, "password": password})


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_wrong_passwords_beyond_the_hourly_limit_are_refused_unprocessed(client, owner, clock):
    for _ in range(3):
        sign_in(client, owner.email, "wrong")
    response = sign_in(client, owner.email)
    assert response.status_code == 200
    # Three failures at 12:00 weigh as three until 13:00, then less as 13:00–14:00 slides over them: at 13:20, two.
    assert "Too many failed attempts for this account. Try again after 13:20 UTC." in response.content.decode()
    assert "pending_sign_in" not in client.session
    refused = AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED, details__reason="hourly limit")
    assert refused.count() == 1


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_the_limit_lifts_as_the_failures_slide_out_of_the_last_60_minutes(client, owner, clock):
    for _ in range(3):
        sign_in(client, owner.email, "wrong")
    clock.advance(3600)  # 13:00: a new clock hour does not wipe the slate
    assert "Too many failed attempts" in sign_in(client, owner.email).content.decode()
    clock.advance(20 * 60 - 1)
    assert "Too many failed attempts" in sign_in(client, owner.email).content.decode()
    clock.advance(1)  # 13:20, the time the refusal named
    assert sign_in(client, owner.email).status_code == 302


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_the_end_of_a_clock_hour_does_not_let_a_second_ceiling_through(owner, clock):
    clock.advance(3600 - 1)  # 12:59:59
    passed = sum(processed(owner.email) for _ in range(10))
    clock.advance(1)  # 13:00:00
    passed += sum(processed(owner.email) for _ in range(10))
    assert passed == 3


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_refused_attempts_do_not_count(owner, clock):
    for _ in range(3):
        assert processed(owner.email)
    for _ in range(50):
        clock.advance(60)
        assert not processed(owner.email)
    clock.advance(30 * 60)  # 13:20, as for the three failures; for 53 it would be 13:58
    assert processed(owner.email)


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_unknown_and_known_emails_are_limited_alike(client, owner, clock):
    for email in ("nobody@acme.test", owner.email):
        for _ in range(3):
            sign_in(client, email, "wrong")
        response = sign_in(client, email, "wrong")
        assert "Too many failed attempts" in response.content.decode()


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_wrong_codes_count_towards_the_limit_and_then_even_a_right_code_is_refused(owner, clock):
    for _ in range(3):
        with pytest.raises(CodeRefused):
            verify_fresh_code(owner, "000000", context=CONTEXT, purpose="test")
        clock.advance(600)  # past django-otp's own growing delay, which is not what this test is about
    with pytest.raises(CodeRefused) as refused:
        verify_fresh_code(owner, helpers.current_code(owner), context=CONTEXT, purpose="test")
    assert refused.value.reason is RefusalReason.TOO_MANY_FAILURES
    assert refused.value.message.startswith("Too many wrong codes for this account. Try again in ")
    device = helpers.totp_device(owner)
    assert device.last_t == -1, "the right code must not have been processed"
    assert AuditEvent.objects.filter(action=AuditAction.OTP_THROTTLED, details__reason="hourly limit").count() == 1


def test_counts_are_kept_per_account_case_insensitively(clock):
    with override_settings(AUTH_FAILURES_PER_HOUR=1):
        assert processed("Someone@Example.test")
        assert not processed("someone@example.test")
        assert processed("other@example.test")


def test_the_ceiling_is_100_failures_an_hour_by_default(client, owner, clock):
    for _ in range(100):
        assert processed(owner.email)
    response = sign_in(client, owner.email)
    # Room for one more once 1 % of them has slid out: 36 s into the next hour, named as the minute after.
    assert "Too many failed attempts for this account. Try again after 13:01 UTC." in response.content.decode()


@override_settings(AUTH_FAILURES_PER_HOUR=3)
def test_successes_do_not_count_towards_the_ceiling(client, owner, clock):
    for _ in range(5):
        response = sign_in(client, owner.email)
        assert response.status_code == 302
    for _ in range(3):
        sign_in(client, owner.email, "wrong")
    response = sign_in(client, owner.email)
    assert "Too many failed attempts" in response.content.decode()


@override_settings(AUTH_FAILURES_PER_HOUR=5)
def test_attempts_at_the_same_moment_cannot_pass_the_ceiling_together(owner, clock):
    """Twenty threads begin an attempt at once, as twenty workers would: five are processed, not twenty."""
    start = threading.Barrier(20)
    answers = []

    def attempt():
        start.wait()
        answers.append(processed(owner.email))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(answers) == 5


@hypothesis.settings(max_examples=200, database=None, deadline=None)
@given(limit=st.integers(1, 20), previous=st.integers(0, 40), current=st.integers(0, 40),
       second=st.integers(0, 3599))
def test_the_time_a_refusal_names_is_the_first_second_an_attempt_is_processed(limit, previous, current, second):
    """Whatever the counts of this hour and the last, a second before the named time the next attempt is refused,
    and at that time it is processed."""
    email = "someone@example.test"
    now = 1_800_000_000 - 1_800_000_000 % 3600 + second
    window = now // 3600
    cache.clear()
    cache.set(rate_limit._key(email, window - 1), previous, timeout=None)
    cache.set(rate_limit._key(email, window), current, timeout=None)
    with override_settings(AUTH_FAILURES_PER_HOUR=limit), time_machine.travel(now, tick=False) as traveller:
        until = rate_limit.begin_attempt(email).retry_at
        if until is None:
            return
        traveller.move_to(until - timedelta(seconds=1))
        assert not processed(email)
        traveller.move_to(until)
        assert processed(email)


def test_a_success_that_ends_after_the_hour_turned_is_taken_back_from_the_hour_it_began_in(owner, clock):
    clock.advance(3600 - 1)  # 12:59:59
    right_password = rate_limit.begin_attempt(owner.email)
    clock.advance(1)  # 13:00:00: a failure begins while the password check of the first attempt ends
    wrong_password = rate_limit.begin_attempt(owner.email)
    rate_limit.attempt_succeeded(right_password)
    assert cache.get(right_password.counter) == 0
    assert cache.get(wrong_password.counter) == 1


@pytest.mark.parametrize("limit", [0, -1, 2.5, True, "100"])
def test_a_ceiling_that_is_not_a_whole_number_of_at_least_one_fails_the_system_check(limit):
    with override_settings(AUTH_FAILURES_PER_HOUR=limit):
        assert [message.id for message in checks.run_checks() if message.id.startswith("dashboard.E")] == ["dashboard.E001"]
    assert not [message for message in checks.run_checks() if message.id == "dashboard.E001"]
