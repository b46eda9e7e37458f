"""The demo commands: `seed_demo` (idempotent, --json, DEBUG only unless --force) and `totp_code` (DEBUG only)."""
import json
from base64 import b32decode
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from dashboard.models import AuditEvent, Membership, Merchant, Role, User

from . import helpers

pytestmark = pytest.mark.django_db


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def seed_json() -> dict:
    with override_settings(DEBUG=True):
        return json.loads(run("seed_demo", "--json"))


def counts() -> dict:
    return {
        "users": User.objects.count(),
        "merchants": Merchant.objects.count(),
        "memberships": Membership.objects.count(),
        "devices": TOTPDevice.objects.count(),
        "confirmed devices": TOTPDevice.objects.filter(confirmed=True).count(),
    }


def secrets() -> dict:
    return dict(TOTPDevice.objects.values_list("user__email", "key"))


def key_of(secret: str) -> bytes:
    return b32decode(secret + "=" * (-len(secret) % 8))


# seed_demo


def test_seed_demo_json_has_the_documented_shape():
    data = seed_json()

    assert set(data) == {"merchant", "users", "staff"}
    assert data["merchant"] == {"name": "Demo Merchant", "slug": "demo-merchant"}
    assert [user["role"] for user in data["users"]] == ["Owner", "View", "Restricted"]
    for entry in [*data["users"], data["staff"]]:
        assert {"email", "password", "totp_secret"} <= set(entry)
        assert all(isinstance(entry[field], str) and entry[field] for field in ("email", "password", "totp_secret"))
        device = TOTPDevice.objects.get(user__email=entry["email"], confirmed=True)
        assert key_of(entry["totp_secret"]) == device.bin_key
        assert entry.get("otpauth_uri", device.config_url) == device.config_url
    assert "role" not in data["staff"]


def test_seed_demo_creates_the_demo_merchant_members_and_staff():
    data = seed_json()

    merchant = Merchant.objects.get(slug="demo-merchant")
    roles = dict(Membership.objects.filter(merchant=merchant).values_list("user__email", "role"))
    assert sorted(roles.values()) == sorted([Role.OWNER, Role.VIEW, Role.RESTRICTED])
    staff = User.objects.get(email=data["staff"]["email"])
    assert staff.is_staff and staff.is_superuser
    assert not Membership.objects.filter(user=staff).exists()
    for entry in [*data["users"], data["staff"]]:
        user = authenticate(email=entry["email"], password=entry["password"])
        assert user is not None and user.is_active
        assert entry["email"] in roles or user == staff
    assert not User.objects.filter(email__in=roles, is_staff=True).exists()


def test_seed_demo_run_twice_changes_nothing():
    first = seed_json()
    before, keys_before = counts(), secrets()

    second = seed_json()

    assert counts() == before == {
        "users": 4, "merchants": 1, "memberships": 3, "devices": 4, "confirmed devices": 4,
    }
    assert secrets() == keys_before
    assert second == first


def test_seed_demo_restores_what_was_changed_by_hand():
    data = seed_json()
    owner = User.objects.get(email=data["users"][0]["email"])
    Membership.objects.filter(user=owner).update(role=Role.VIEW)
    owner.set_password("changed by someone, long enough")
    owner.is_active = False
    owner.save()
    key_before = secrets()

    seed_json()

    owner.refresh_from_db()
    assert Membership.objects.get(user=owner).role == Role.OWNER
    assert owner.is_active and owner.check_password(data["users"][0]["password"])
    assert secrets() == key_before


def test_seed_demo_prints_how_to_sign_in():
    with override_settings(DEBUG=True):
        text = run("seed_demo")

    data = seed_json()
    for entry in [*data["users"], data["staff"]]:
        assert entry["email"] in text
        assert entry["password"] in text
        assert entry["totp_secret"] in text
        assert entry["otpauth_uri"] in text
    assert "totp_code" in text


def test_seed_demo_refuses_with_debug_off():
    with pytest.raises(CommandError, match="DEBUG"):
        run("seed_demo")

    assert counts() == {"users": 0, "merchants": 0, "memberships": 0, "devices": 0, "confirmed devices": 0}


def test_seed_demo_runs_with_debug_off_when_forced():
    data = json.loads(run("seed_demo", "--json", "--force"))

    assert data["merchant"]["slug"] == "demo-merchant"
    assert counts()["users"] == 4


def test_the_seeded_owner_signs_in_with_password_and_code_and_sees_the_tabs(clock):
    data = seed_json()
    owner = next(entry for entry in data["users"] if entry["role"] == "Owner")
    client = Client()

    client.post(reverse("dashboard:sign-in"), {"email": owner["email"], "password": owner["password"]})
    with override_settings(DEBUG=True):
        code = run("totp_code", owner["email"]).strip()
    response = client.post(reverse("dashboard:sign-in-code"), {"code": code}, follow=True)

    assert response.status_code == 200
    assert response.request["PATH_INFO"] == reverse("keys:list", args=["demo-merchant"])
    labels = [tab.label for tab in response.context["nav_tabs"]]
    assert {"API keys", "Activity", "Account security"} <= set(labels)


def test_the_seeded_restricted_user_lands_on_support(clock):
    data = seed_json()
    restricted = next(entry for entry in data["users"] if entry["role"] == "Restricted")
    client = Client()
    client.post(reverse("dashboard:sign-in"), {"email": restricted["email"], "password": restricted["password"]})
    user = User.objects.get(email=restricted["email"])

    response = client.post(reverse("dashboard:sign-in-code"), {"code": helpers.current_code(user)}, follow=True)

    assert response.request["PATH_INFO"] == reverse("dashboard:support", args=["demo-merchant"])


def test_seed_demo_writes_no_audit_rows_with_secrets():
    data = seed_json()

    text = " ".join(str(event.details) for event in AuditEvent.objects.all())
    for entry in [*data["users"], data["staff"]]:
        assert entry["password"] not in text and entry["totp_secret"] not in text


# totp_code


def test_totp_code_prints_the_current_code(owner, clock):
    with override_settings(DEBUG=True):
        printed = run("totp_code", "OWNER@acme.test")

    assert printed.strip() == helpers.current_code(owner)
    assert printed.strip().isdigit() and len(printed.strip()) == 6


def test_totp_code_follows_the_clock(owner, clock):
    clock.next_code_step()

    with override_settings(DEBUG=True):
        printed = run("totp_code", owner.email).strip()

    assert printed == helpers.current_code(owner)


def test_totp_code_refuses_with_debug_off(owner, clock):
    with pytest.raises(CommandError, match="DEBUG") as caught:
        run("totp_code", owner.email)

    assert helpers.current_code(owner) not in str(caught.value)


@pytest.mark.parametrize("email", ["nobody@acme.test", "no-device@acme.test"])
def test_totp_code_says_when_there_is_no_authenticator(owner, email):
    helpers.create_user("no-device@acme.test", with_device=False)

    with override_settings(DEBUG=True), pytest.raises(CommandError, match="No confirmed authenticator"):
        run("totp_code", email)
