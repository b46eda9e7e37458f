"""A ceiling on failed sign-in and 2FA attempts per account, shared by every worker through the cache.

django-otp's per-device throttle slows guessing down; this ceiling stops it: once an account has
AUTH_FAILURES_PER_HOUR failures in the current clock hour, further attempts are refused unprocessed
until the hour ends. An attempt counts as a failure until it has succeeded, so the ceiling holds for
attempts processed at the same moment by different workers. Accounts are keyed by a hash of the email
typed, so an unknown email is limited exactly like a known one and the limit reveals nothing about
which accounts exist.
"""
from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone

from django.conf import settings
from django.core.cache import cache

WINDOW_SECONDS = 3600


def _limit() -> int:
    return getattr(settings, "AUTH_FAILURES_PER_HOUR", 100)


def _window() -> int:
    return int(time.time()) // WINDOW_SECONDS


def _key(email: str, window: int) -> str:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"auth-failures:{digest}:{window}"


def begin_attempt(email: str) -> datetime | None:
    """Count an attempt for the account before it is processed; when to retry if it is over the ceiling.

    The attempt is counted as a failure from the start, so parallel attempts (several workers at once)
    cannot all pass the check before any failure is recorded; ``attempt_succeeded`` takes it back.
    Returns None when the attempt may be processed.
    """
    window = _window()
    key = _key(email, window)
    # add() is a no-op when the key exists, so concurrent workers never reset each other's count.
    cache.add(key, 0, timeout=WINDOW_SECONDS + 60)
    try:
        count = cache.incr(key)
    except ValueError:
        # The key expired between add() and incr(): this attempt opens a new count.
        cache.add(key, 1, timeout=WINDOW_SECONDS + 60)
        count = 1
    if count > _limit():
        return datetime.fromtimestamp((window + 1) * WINDOW_SECONDS, tz=timezone.utc)
    return None


def attempt_succeeded(email: str) -> None:
    """The attempt begun with ``begin_attempt`` was not a failure: it no longer counts."""
    try:
        cache.decr(_key(email, _window()))
    except ValueError:
        pass  # the hour turned meanwhile: the new count never included this attempt


def retry_message(until: datetime) -> str:
    return f"Too many failed attempts for this account. Try again after {until:%H:%M} UTC."
