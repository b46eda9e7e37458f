"""A ceiling on failed sign-in and 2FA attempts per account, shared by every worker through the cache.

django-otp's per-device throttle slows guessing down; this ceiling stops it: once an account has
AUTH_FAILURES_PER_HOUR failures in the current clock hour, further attempts are refused unprocessed
until the hour ends. Accounts are keyed by a hash of the email typed, so an unknown email is limited
exactly like a known one and the limit reveals nothing about which accounts exist.
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


def blocked_until(email: str) -> datetime | None:
    """When the account may try again, or None if it may try now."""
    window = _window()
    if (cache.get(_key(email, window)) or 0) >= _limit():
        return datetime.fromtimestamp((window + 1) * WINDOW_SECONDS, tz=timezone.utc)
    return None


def record_failure(email: str) -> None:
    key = _key(email, _window())
    # add() is a no-op when the key exists, so concurrent workers never reset each other's count.
    cache.add(key, 0, timeout=WINDOW_SECONDS + 60)
    try:
        cache.incr(key)
    except ValueError:
        # The key expired between add() and incr(): this failure opens a new count.
        cache.add(key, 1, timeout=WINDOW_SECONDS + 60)


def retry_message(until: datetime) -> str:
    return f"Too many failed attempts for this account. Try again after {until:%H:%M} UTC."
