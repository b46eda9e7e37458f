from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from django.core.cache import cache

from dashboard.models import Role
from keys import crypto
from keys.models import ApiKey, KeyStatus
from keys.secret_store import seal_secret
from sandbox import refusal_log, request_log
from sandbox.key_lookup_cache import close_listeners

from . import helpers
from .sandbox_support import ALLOWED_IP, VECTOR_SECRET, KeyPair, activate_new_key

START = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    """Frozen time that tests move forward explicitly, e.g. to the next 30-second TOTP step."""

    def __init__(self, traveller):
        self._traveller = traveller

    def advance(self, seconds: float) -> None:
        self._traveller.shift(timedelta(seconds=seconds))

    def next_code_step(self) -> None:
        self.advance(30)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, and then: the API's listening connections closed, or they would keep the PostgreSQL test
    database from being dropped."""
    yield
    close_listeners()


@pytest.fixture(autouse=True)
def empty_cache():
    """Rate-limit counters live in the cache, kept key lookups, last-use writes and the refusals whose lines
    were folded in the process; each test starts with none."""
    cache.clear()
    request_log._marked_at.clear()
    request_log._trim_cutoffs.clear()
    refusal_log._last_lines.clear()
    yield
    cache.clear()
    request_log._marked_at.clear()
    request_log._trim_cutoffs.clear()
    refusal_log._last_lines.clear()


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield Clock(traveller)


@pytest.fixture
def merchant(db):
    return helpers.create_merchant("Acme Payments")


@pytest.fixture
def owner(merchant):
    return helpers.create_member(merchant, Role.OWNER, "owner@acme.test")


@pytest.fixture
def owner_client(client, owner):
    helpers.sign_in_verified(client, owner)
    return client


@pytest.fixture
def key_pair(clock, owner, merchant) -> KeyPair:
    """The merchant's active key, any address allowed, with its secret."""
    return activate_new_key(clock, owner, merchant)


@pytest.fixture
def fenced_pair(clock, owner, merchant) -> KeyPair:
    """The merchant's active key, allowed only from ALLOWED_IP."""
    return activate_new_key(clock, owner, merchant, allowlist=ALLOWED_IP)


@pytest.fixture
def vector_key(merchant) -> ApiKey:
    """An active key whose secret is the reference's test-vector secret."""
    public_key = crypto.generate_public_key()
    return ApiKey.objects.create(
        merchant=merchant, public_key=public_key, status=KeyStatus.ACTIVE,
        encrypted_secret=seal_secret(public_key, VECTOR_SECRET), secret_fingerprint=crypto.fingerprint(VECTOR_SECRET),
    )
