"""Building blocks for tests: users with authenticators, codes computed from their keys, signed-in clients."""
from __future__ import annotations

import functools
import itertools
from importlib import import_module

from django.apps import apps
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.hashers import make_password
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from dashboard.models import Membership, Merchant, Role, User
from dashboard.two_factor import backup_code_digest

PASSWORD = "correct horse battery staple"
_numbers = itertools.count(1)


def create_merchant(name: str | None = None) -> Merchant:
    number = next(_numbers)
    name = name or f"Merchant {number}"
    return Merchant.objects.create(name=name, slug=f"merchant-{number}")


@functools.cache
def password_hash() -> str:
    """PASSWORD hashed once for every test user: the manager's validation and a salt per user are the product's
    business (tests of sign-in and invitations cover them), not each test's; they were a fifth of the access
    matrix's time."""
    return make_password(PASSWORD)


def create_user(email: str | None = None, *, with_device: bool = True, staff: bool = False) -> User:
    email = email or f"user{next(_numbers)}@example.test"
    user = User.objects.create(email=email.lower(), password=password_hash(), is_staff=staff, is_superuser=staff)
    if with_device:
        TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)
    return user


def create_member(merchant: Merchant, role: str = Role.OWNER, email: str | None = None) -> User:
    user = create_user(email)
    Membership.objects.create(user=user, merchant=merchant, role=role)
    return user


def totp_device(user: User) -> TOTPDevice:
    return TOTPDevice.objects.get(user=user, confirmed=True)


def current_code(user: User, *, steps_ahead: int = 0) -> str:
    """The code the user's app shows now (time is frozen by the ``clock`` fixture)."""
    device = totp_device(user)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift + steps_ahead)
    return f"{totp.token():0{device.digits}d}"


def fresh_code(clock, user: User) -> str:
    """A code no one has used yet: the next 30-second step's."""
    clock.next_code_step()
    return current_code(user)


def give_backup_codes(user: User, codes: list[str]) -> StaticDevice:
    device = StaticDevice.objects.create(user=user, name="Backup codes", confirmed=True)
    StaticToken.objects.bulk_create(StaticToken(device=device, token=backup_code_digest(code)) for code in codes)
    return device


def sign_in_verified(client, user: User) -> None:
    """A new session as after both factors, password and a device's code, in place of the client's: what
    ``login()`` and django-otp's ``login()`` put in it, written once (``force_login`` wrote it twice and
    updated ``last_login``)."""
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session[DEVICE_ID_SESSION_KEY] = totp_device(user).persistent_id
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key


def seed_currencies() -> None:
    """The currencies migration 0002 adds; a transactional test's flush removes them, so such tests add them back."""
    import_module("sandbox.migrations.0002_currencies").add_currencies(apps, None)


def kill_database_connection() -> None:
    """Kill this process's PostgreSQL connection from another session, as a database restart would, leaving
    Django unaware. Skips the test elsewhere: a SQLite connection cannot die this way."""
    import pytest
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL connection is killed from another session; SQLite's cannot die this way")
    import psycopg

    connection.ensure_connection()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
