"""A ceiling on failed sign-in and 2FA attempts per account, shared by every worker through the cache.

django-otp's per-device throttle slows guessing down; this ceiling stops it: once an account has about
AUTH_FAILURES_PER_HOUR failures in the last 60 minutes, further attempts are refused unprocessed until
enough of them have aged. "The last 60 minutes" is the sliding-window estimate: this clock hour's count
plus the previous hour's, weighted by the share of the last 60 minutes that fell in it. With plain clock
hours, twice the ceiling passed within two seconds (the end of one hour and the start of the next).

An attempt counts as a failure until it has succeeded, so the ceiling holds for attempts processed at the
same moment by different workers; a refused attempt is not processed, so it does not count. Accounts are
keyed by a hash of the email typed, so an unknown email is limited exactly like a known one and the limit
reveals nothing about which accounts exist.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from django.conf import settings
from django.core.cache import cache

WINDOW_SECONDS = 3600
# A count is read during its own hour and the next one, as the previous hour's.
COUNT_TIMEOUT = 2 * WINDOW_SECONDS + 60


def failure_ceiling() -> int:
    """AUTH_FAILURES_PER_HOUR: failures an account may have in the last 60 minutes (a system check holds it ≥ 1)."""
    return getattr(settings, "AUTH_FAILURES_PER_HOUR", 100)


def _key(email: str, window: int) -> str:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"auth-failures:{digest}:{window}"


@dataclass(frozen=True)
class Attempt:
    """An attempt counted against an account's ceiling; ``retry_at`` is set when it was refused."""

    counter: str  # the cache key it was counted in, to take it back from the same one
    retry_at: datetime | None = None


def begin_attempt(email: str) -> Attempt:
    """Count an attempt for the account before it is processed, and refuse it if it is over the ceiling.

    The attempt is counted as a failure from the start, so parallel attempts (several workers at once)
    cannot all pass the check before any failure is recorded; ``attempt_succeeded`` takes it back.
    """
    now = int(time.time())
    window = now // WINDOW_SECONDS
    key = _key(email, window)
    # add() is a no-op when the key exists, so concurrent workers never reset each other's count.
    cache.add(key, 0, timeout=COUNT_TIMEOUT)
    try:
        failures_with_this_one = cache.incr(key)
    except ValueError:
        # The key expired between add() and incr(): this attempt opens a new count.
        cache.add(key, 1, timeout=COUNT_TIMEOUT)
        failures_with_this_one = 1
    previous = cache.get(_key(email, window - 1), 0)
    # In whole seconds and integers (the estimate times WINDOW_SECONDS): floats put 9 × 1/9 + 1 above 2.
    still_covered = WINDOW_SECONDS - (now - window * WINDOW_SECONDS)
    if previous * still_covered + failures_with_this_one * WINDOW_SECONDS <= failure_ceiling() * WINDOW_SECONDS:
        return Attempt(key)
    _uncount(key)
    return Attempt(key, retry_at=_retry_at(window, previous, failures_with_this_one - 1))


def _retry_at(window: int, previous: int, failures: int) -> datetime:
    """The first second the estimate leaves room for one more failure, if none comes meanwhile."""
    limit = failure_ceiling()
    if failures + 1 <= limit:
        # Later this hour, once enough of the previous hour has slid out of the last 60 minutes.
        start, weighted_count, room = window * WINDOW_SECONDS, previous, limit - failures - 1
    else:
        # Next hour, when this hour's count is the previous one.
        start, weighted_count, room = (window + 1) * WINDOW_SECONDS, failures, limit - 1
    # The least seconds into the hour at which weighted_count × (WINDOW_SECONDS − seconds) ≤ room × WINDOW_SECONDS.
    seconds = WINDOW_SECONDS - room * WINDOW_SECONDS // weighted_count
    return datetime.fromtimestamp(start + seconds, tz=timezone.utc)


def _uncount(key: str) -> None:
    try:
        cache.decr(key)
    except ValueError:
        pass  # the count expired meanwhile: nothing left to take back


def attempt_succeeded(attempt: Attempt) -> None:
    """The attempt begun with ``begin_attempt`` was not a failure: it no longer counts."""
    # From the count it went into, even if the hour has turned since.
    _uncount(attempt.counter)


def retry_message(until: datetime) -> str:
    # Rounded up: "after 13:20" must not name a minute at which the attempt is still refused.
    minute = until.replace(second=0, microsecond=0)
    if minute < until:
        minute += timedelta(minutes=1)
    return f"Too many failed attempts for this account. Try again after {minute:%H:%M} UTC."
