from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from django.core.cache import cache

from dashboard.models import Role

from . import helpers

START = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    """Frozen time that tests move forward explicitly, e.g. to the next 30-second TOTP step."""

    def __init__(self, traveller):
        self._traveller = traveller

    def advance(self, seconds: float) -> None:
        self._traveller.shift(timedelta(seconds=seconds))

    def next_code_step(self) -> None:
        self.advance(30)


@pytest.fixture(autouse=True)
def empty_cache():
    """Rate-limit counters live in the cache; each test starts with none."""
    cache.clear()
    yield
    cache.clear()


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
