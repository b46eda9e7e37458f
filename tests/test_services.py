"""keys.services: every transition of the API-key lifecycle, its refusals, and the audit row each one leaves.

Each success leaves exactly one key event (after the 2FA check's own ``otp_verified`` row); each refusal
leaves the right refused row and no change to any key of the merchant.
"""
from __future__ import annotations

import re
from unittest import mock

import pytest
from django.db.models import Max
from django.test import override_settings
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from dashboard.audit import RequestContext
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Membership, Role
from dashboard.two_factor import CodeRefused, RefusalReason, verify_fresh_code
from keys import conf, crypto, services
from keys.allowlist import parse_allowlist
from keys.models import ApiKey, ApiKeyQuerySet, KeyStatus
from keys.secret_store import open_secret, seal_secret

from . import helpers
from .helpers import fresh_code

CTX = RequestContext("198.51.100.7", "pytest")
SECRET_FORM = re.compile(r"[A-Za-z0-9_-]{43}")


# Helpers


def make_key(merchant, status=KeyStatus.GENERATED, *, name="", allowed=(), created_by=None) -> ApiKey:
    """A key in ``status`` written directly (no audit rows, no codes used); keys that were active have a secret."""
    public_key = crypto.generate_public_key()
    sealed = ""
    if status in (KeyStatus.ACTIVE, KeyStatus.DEACTIVATED):
        sealed = seal_secret(public_key, crypto.generate_secret())
    return ApiKey.objects.create(
        merchant=merchant, public_key=public_key, name=name, status=status, encrypted_secret=sealed,
        allowed_networks=list(allowed), created_by=created_by,
    )


def snapshot(merchant) -> list[dict]:
    return list(ApiKey.objects.for_merchant(merchant).order_by("pk").values())


def last_event_id() -> int:
    return AuditEvent.objects.aggregate(last=Max("id"))["last"] or 0


def events_since(event_id: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=event_id).order_by("pk"))


def assert_one_success(events, action, *, actor, merchant, key, details) -> AuditEvent:
    """The 2FA check's row (if any) then exactly one successful key event with every field set."""
    key_events = [event for event in events if event.action.startswith("key_")]
    assert len(key_events) == 1, [event.action for event in events]
    event = key_events[0]
    assert event.action == action
    assert event.outcome == AuditOutcome.SUCCEEDED
    assert event.actor == actor
    assert event.actor_email == actor.email
    assert event.merchant == merchant
    assert event.target == f"api_key:{key.public_key}"
    assert event.ip_address == "198.51.100.7"
    assert event.user_agent == "pytest"
    assert event.created_at == timezone.now()
    assert event.details == details
    return event


def assert_one_refusal(events, action, *, actor, merchant, reason, target) -> AuditEvent:
    key_events = [event for event in events if event.action.startswith("key_")]
    assert len(key_events) == 1, [event.action for event in events]
    event = key_events[0]
    assert event.action == action
    assert event.outcome == AuditOutcome.REFUSED
    assert event.actor == actor
    assert event.merchant == merchant
    if target is not None:  # None: checked by a test of its own
        assert event.target == target
    assert event.ip_address == "198.51.100.7"
    assert event.details == {"reason": reason}
    return event


# What each action needs, so refusals can be tested over all of them with one table.
ACTION_EVENTS = {
    "generate": AuditAction.KEY_GENERATED,
    "activate": AuditAction.KEY_ACTIVATED,
    "deactivate": AuditAction.KEY_DEACTIVATED,
    "allowlist": AuditAction.KEY_ALLOWLIST_CHANGED,
    "rename": AuditAction.KEY_RENAMED,
    "archive": AuditAction.KEY_ARCHIVED,
}
# A status from which each action would succeed for an Owner.
STARTS_FROM = {
    "activate": KeyStatus.GENERATED,
    "deactivate": KeyStatus.ACTIVE,
    "allowlist": KeyStatus.ACTIVE,
    "rename": KeyStatus.GENERATED,
    "archive": KeyStatus.GENERATED,
}


def run_action(action: str, *, actor, merchant, key_id=None, code="000000"):
    if action == "generate":
        return services.generate_key(actor=actor, merchant=merchant, name="New", code=code, context=CTX)
    if action == "activate":
        return services.activate_key(
            actor=actor, merchant=merchant, key_id=key_id, allowlist=parse_allowlist("203.0.113.9"), code=code,
            context=CTX,
        )
    if action == "deactivate":
        return services.deactivate_key(actor=actor, merchant=merchant, key_id=key_id, code=code, context=CTX)
    if action == "allowlist":
        return services.update_allowlist(
            actor=actor, merchant=merchant, key_id=key_id, allowlist=parse_allowlist("203.0.113.9"), code=code,
            context=CTX,
        )
    if action == "rename":
        return services.rename_key(actor=actor, merchant=merchant, key_id=key_id, name="New", code=code, context=CTX)
    if action == "archive":
        return services.archive_key(actor=actor, merchant=merchant, key_id=key_id, code=code, context=CTX)
    raise AssertionError(action)


# Generate


@pytest.mark.parametrize("name", ["", "Checkout server"], ids=["without name", "with name"])
def test_generate_makes_a_generated_key_without_secret(clock, merchant, owner, name):
    since = last_event_id()

    key = services.generate_key(actor=owner, merchant=merchant, name=name, code=fresh_code(clock, owner), context=CTX)

    key.refresh_from_db()
    assert key.merchant == merchant
    assert key.status == KeyStatus.GENERATED
    assert key.name == name
    assert key.created_by == owner
    assert key.created_at == timezone.now()
    assert re.fullmatch(r"sbx_[0-9a-f]{40}", key.public_key)
    assert key.encrypted_secret == "" and key.secret_fingerprint == "" and key.first_activated_at is None
    assert key.allowed_networks == []
    events = events_since(since)
    assert [event.action for event in events] == [AuditAction.OTP_VERIFIED, AuditAction.KEY_GENERATED]
    assert_one_success(
        events, AuditAction.KEY_GENERATED, actor=owner, merchant=merchant, key=key, details={"name": name}
    )


def test_generated_public_keys_are_unique(clock, merchant, owner):
    keys = {
        services.generate_key(actor=owner, merchant=merchant, code=fresh_code(clock, owner), context=CTX).public_key
        for _ in range(3)
    }
    assert len(keys) == 3


def test_generate_is_limited_to_the_setting_and_archived_keys_do_not_count(clock, merchant, owner):
    with override_settings(KEYS_MAX_UNARCHIVED_PER_MERCHANT=3):
        make_key(merchant, KeyStatus.GENERATED)
        make_key(merchant, KeyStatus.ACTIVE)
        make_key(merchant, KeyStatus.DEACTIVATED)
        for _ in range(2):
            make_key(merchant, KeyStatus.ARCHIVED)
        before, since = snapshot(merchant), last_event_id()

        with pytest.raises(services.KeyActionRefused) as refused:
            services.generate_key(actor=owner, merchant=merchant, code=fresh_code(clock, owner), context=CTX)

        assert refused.value.code == "limit_reached"
        assert refused.value.message == (
            "This merchant already has 3 API keys that are not archived, the most allowed. "
            "Archive a key you no longer need, then generate a new one."
        )
        assert snapshot(merchant) == before
        assert_one_refusal(
            events_since(since), AuditAction.KEY_GENERATED, actor=owner, merchant=merchant, reason="limit_reached",
            target=None,
        )

        # Archiving one makes room: archived keys do not count.
        ApiKey.objects.filter(merchant=merchant, status=KeyStatus.GENERATED).update(status=KeyStatus.ARCHIVED)
        key = services.generate_key(actor=owner, merchant=merchant, code=fresh_code(clock, owner), context=CTX)
        assert key.status == KeyStatus.GENERATED


def test_limit_is_per_merchant(clock, merchant, owner):
    other = helpers.create_merchant()
    with override_settings(KEYS_MAX_UNARCHIVED_PER_MERCHANT=1):
        make_key(other)
        key = services.generate_key(actor=owner, merchant=merchant, code=fresh_code(clock, owner), context=CTX)
    assert key.merchant == merchant


@pytest.mark.parametrize("cause", ["limit_reached", "not_owner"])
def test_refused_generate_has_no_key_as_target(clock, merchant, owner, cause):
    actor = owner if cause == "limit_reached" else helpers.create_member(merchant, Role.VIEW)
    since = last_event_id()
    with override_settings(KEYS_MAX_UNARCHIVED_PER_MERCHANT=0), pytest.raises(services.KeyActionRefused):
        services.generate_key(actor=actor, merchant=merchant, code=fresh_code(clock, actor), context=CTX)
    assert_one_refusal(
        events_since(since), AuditAction.KEY_GENERATED, actor=actor, merchant=merchant, reason=cause, target=""
    )


def test_default_limit_is_twenty():
    assert conf.max_unarchived_keys() == 20


# Activate


def test_first_activation_makes_and_returns_the_secret_once(clock, merchant, owner):
    key = make_key(merchant, created_by=owner)
    since = last_event_id()

    result = services.activate_key(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist("203.0.113.7, 2001:DB8::1"),
        code=fresh_code(clock, owner), context=CTX,
    )

    assert SECRET_FORM.fullmatch(result.secret)
    key.refresh_from_db()
    assert result.key.pk == key.pk
    assert key.status == KeyStatus.ACTIVE
    assert key.allowed_networks == ["203.0.113.7", "2001:db8::1"]
    assert key.activated_by == owner
    assert key.activated_at == key.first_activated_at == timezone.now()
    assert key.secret_fingerprint == crypto.fingerprint(result.secret)
    assert re.fullmatch(r"[0-9a-f]{8}", key.secret_fingerprint)
    # Stored sealed, readable only with the encryption keys.
    assert result.secret not in key.encrypted_secret
    assert open_secret(key.public_key, key.encrypted_secret) == result.secret
    assert ApiKey.objects.with_public_key(key.public_key).is_usable
    events = events_since(since)
    assert [event.action for event in events] == [AuditAction.OTP_VERIFIED, AuditAction.KEY_ACTIVATED]
    event = assert_one_success(
        events, AuditAction.KEY_ACTIVATED, actor=owner, merchant=merchant, key=key,
        details={"first_activation": True, "allowed_networks": ["203.0.113.7", "2001:db8::1"]},
    )
    assert result.secret not in str(event.details)


def test_secrets_differ_between_keys(clock, merchant, owner):
    first, second = make_key(merchant), make_key(merchant)
    secret_one = services.activate_key(
        actor=owner, merchant=merchant, key_id=first.pk, allowlist=parse_allowlist(""),
        code=fresh_code(clock, owner), context=CTX,
    ).secret
    services.deactivate_key(actor=owner, merchant=merchant, key_id=first.pk, code=fresh_code(clock, owner), context=CTX)
    secret_two = services.activate_key(
        actor=owner, merchant=merchant, key_id=second.pk, allowlist=parse_allowlist(""),
        code=fresh_code(clock, owner), context=CTX,
    ).secret
    assert secret_one != secret_two


def test_reactivation_returns_no_secret_and_keeps_the_sealed_one(clock, merchant, owner):
    key = make_key(merchant)
    first = services.activate_key(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""),
        code=fresh_code(clock, owner), context=CTX,
    )
    first_activated_at = timezone.now()
    services.deactivate_key(actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner), context=CTX)
    key.refresh_from_db()
    sealed, fingerprint = key.encrypted_secret, key.secret_fingerprint
    other_owner = helpers.create_member(merchant, Role.OWNER, "second@acme.test")
    since = last_event_id()

    result = services.activate_key(
        actor=other_owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist("198.51.100.0/24"),
        code=fresh_code(clock, other_owner), context=CTX,
    )

    assert result.secret is None
    key.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE
    assert key.encrypted_secret == sealed
    assert key.secret_fingerprint == fingerprint
    assert open_secret(key.public_key, key.encrypted_secret) == first.secret
    assert key.first_activated_at == first_activated_at
    assert key.activated_at == timezone.now() and key.activated_at > first_activated_at
    assert key.activated_by == other_owner
    assert key.allowed_networks == ["198.51.100.0/24"]
    assert_one_success(
        events_since(since), AuditAction.KEY_ACTIVATED, actor=other_owner, merchant=merchant, key=key,
        details={"first_activation": False, "allowed_networks": ["198.51.100.0/24"]},
    )


@pytest.mark.parametrize("second_status", [KeyStatus.GENERATED, KeyStatus.DEACTIVATED])
def test_activating_a_second_key_is_refused_while_one_is_active(clock, merchant, owner, second_status):
    active = make_key(merchant, KeyStatus.ACTIVE)
    second = make_key(merchant, second_status)
    before, since = snapshot(merchant), last_event_id()

    with pytest.raises(services.KeyActionRefused) as refused:
        services.activate_key(
            actor=owner, merchant=merchant, key_id=second.pk, allowlist=parse_allowlist("203.0.113.7"),
            code=fresh_code(clock, owner), context=CTX,
        )

    assert refused.value.message == "Another API key is already active. Deactivate it first."
    assert refused.value.code == "another_key_active"
    assert snapshot(merchant) == before
    assert list(ApiKey.objects.for_merchant(merchant).active()) == [active]
    assert_one_refusal(
        events_since(since), AuditAction.KEY_ACTIVATED, actor=owner, merchant=merchant, reason="another_key_active",
        target=f"api_key:{second.public_key}",
    )


def test_database_catches_a_second_active_key_the_check_missed(clock, merchant, owner):
    """A race the service's check cannot see ends as the same clear refusal, not an integrity error."""
    make_key(merchant, KeyStatus.ACTIVE)
    second = make_key(merchant, KeyStatus.DEACTIVATED)
    before, since = snapshot(merchant), last_event_id()

    # Blind the service's own check, as if the other key became active just after it looked.
    with mock.patch.object(ApiKeyQuerySet, "active", lambda self: self.none()):
        assert not ApiKey.objects.for_merchant(merchant).active().exists()
        with pytest.raises(services.KeyActionRefused) as refused:
            services.activate_key(
                actor=owner, merchant=merchant, key_id=second.pk, allowlist=parse_allowlist(""),
                code=fresh_code(clock, owner), context=CTX,
            )

    assert refused.value.code == "another_key_active"
    assert refused.value.message == "Another API key is already active. Deactivate it first."
    assert snapshot(merchant) == before
    assert_one_refusal(
        events_since(since), AuditAction.KEY_ACTIVATED, actor=owner, merchant=merchant, reason="another_key_active",
        target=f"api_key:{second.public_key}",
    )
    # The connection is still usable after the constraint fired.
    assert ApiKey.objects.for_merchant(merchant).active().count() == 1


def test_another_merchants_active_key_does_not_block_activation(clock, merchant, owner):
    make_key(helpers.create_merchant(), KeyStatus.ACTIVE)
    key = make_key(merchant)
    result = services.activate_key(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""),
        code=fresh_code(clock, owner), context=CTX,
    )
    assert result.key.status == KeyStatus.ACTIVE


# Deactivate


def test_deactivate_stops_the_key_at_once_and_keeps_its_secret(clock, merchant, owner):
    key = make_key(merchant, KeyStatus.ACTIVE, allowed=["203.0.113.7"])
    sealed = key.encrypted_secret
    since = last_event_id()

    services.deactivate_key(actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner), context=CTX)

    key.refresh_from_db()
    assert key.status == KeyStatus.DEACTIVATED
    assert key.deactivated_by == owner
    assert key.deactivated_at == timezone.now()
    assert key.encrypted_secret == sealed
    assert key.allowed_networks == ["203.0.113.7"]
    # The very next API request looks the key up and finds nothing usable.
    assert not ApiKey.objects.with_public_key(key.public_key).is_usable
    events = events_since(since)
    assert [event.action for event in events] == [AuditAction.OTP_VERIFIED, AuditAction.KEY_DEACTIVATED]
    assert_one_success(events, AuditAction.KEY_DEACTIVATED, actor=owner, merchant=merchant, key=key, details={})


# IP allowlist


@pytest.mark.parametrize("status", [KeyStatus.GENERATED, KeyStatus.ACTIVE, KeyStatus.DEACTIVATED])
def test_update_allowlist_in_every_state_but_archived(clock, merchant, owner, status):
    key = make_key(merchant, status, allowed=["203.0.113.7"])
    sealed = key.encrypted_secret
    since = last_event_id()

    services.update_allowlist(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist("::ffff:198.51.100.7, 2001:db8::/32"),
        code=fresh_code(clock, owner), context=CTX,
    )

    key.refresh_from_db()
    assert key.status == status
    assert key.encrypted_secret == sealed
    assert key.allowed_networks == ["198.51.100.7", "2001:db8::/32"]
    assert key.allowlist_changed_by == owner
    assert key.allowlist_changed_at == timezone.now()
    assert_one_success(
        events_since(since), AuditAction.KEY_ALLOWLIST_CHANGED, actor=owner, merchant=merchant, key=key,
        details={"from": ["203.0.113.7"], "to": ["198.51.100.7", "2001:db8::/32"]},
    )


def test_blank_allowlist_means_any_address(clock, merchant, owner):
    key = make_key(merchant, KeyStatus.ACTIVE, allowed=["203.0.113.7"])
    services.update_allowlist(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist("  "),
        code=fresh_code(clock, owner), context=CTX,
    )
    key.refresh_from_db()
    assert key.allowed_networks == []


# Rename


@pytest.mark.parametrize("status", [KeyStatus.GENERATED, KeyStatus.ACTIVE, KeyStatus.DEACTIVATED])
def test_rename_with_a_fresh_code_in_any_status_but_archived(clock, merchant, owner, status):
    key = make_key(merchant, status, name="Old")
    since = last_event_id()

    services.rename_key(
        actor=owner, merchant=merchant, key_id=key.pk, name="Checkout server", code=fresh_code(clock, owner), context=CTX,
    )

    key.refresh_from_db()
    assert key.name == "Checkout server"
    assert key.status == status
    assert_one_success(
        events_since(since), AuditAction.KEY_RENAMED, actor=owner, merchant=merchant, key=key,
        details={"from": "Old", "to": "Checkout server"},
    )


# Archive


@pytest.mark.parametrize("status", [KeyStatus.GENERATED, KeyStatus.DEACTIVATED])
def test_archive_from_generated_or_deactivated(clock, merchant, owner, status):
    key = make_key(merchant, status)
    since = last_event_id()

    services.archive_key(actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner), context=CTX)

    key.refresh_from_db()
    assert key.status == KeyStatus.ARCHIVED
    assert key.archived_by == owner
    assert key.archived_at == timezone.now()
    assert list(ApiKey.objects.for_merchant(merchant).not_archived()) == []
    assert list(ApiKey.objects.for_merchant(merchant).archived()) == [key]
    assert_one_success(events_since(since), AuditAction.KEY_ARCHIVED, actor=owner, merchant=merchant, key=key, details={})


# Refused transitions


ARCHIVED_MESSAGE = "This API key is archived; archived keys cannot be changed."


@pytest.mark.parametrize(
    ("action", "status", "message"),
    [
        pytest.param("activate", KeyStatus.ARCHIVED, ARCHIVED_MESSAGE, id="activate archived"),
        pytest.param("activate", KeyStatus.ACTIVE, services.ALREADY_ACTIVE_MESSAGE, id="activate active"),
        pytest.param(
            "deactivate", KeyStatus.GENERATED, "You cannot deactivate an API key that is generated.",
            id="deactivate generated",
        ),
        pytest.param(
            "deactivate", KeyStatus.DEACTIVATED, "You cannot deactivate an API key that is deactivated.",
            id="deactivate deactivated",
        ),
        pytest.param("deactivate", KeyStatus.ARCHIVED, ARCHIVED_MESSAGE, id="deactivate archived"),
        pytest.param("archive", KeyStatus.ACTIVE, "You cannot archive an API key that is active.", id="archive active"),
        pytest.param("archive", KeyStatus.ARCHIVED, ARCHIVED_MESSAGE, id="archive archived"),
        pytest.param("allowlist", KeyStatus.ARCHIVED, ARCHIVED_MESSAGE, id="allowlist of archived"),
        pytest.param("rename", KeyStatus.ARCHIVED, ARCHIVED_MESSAGE, id="rename archived"),
    ],
)
def test_transition_from_a_status_that_does_not_allow_it_is_refused(clock, merchant, owner, action, status, message):
    key = make_key(merchant, status, name="Kept", allowed=["203.0.113.7"])
    before, since = snapshot(merchant), last_event_id()

    with pytest.raises(services.KeyActionRefused) as refused:
        run_action(action, actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner))

    assert refused.value.code == "wrong_status"
    assert refused.value.message == message
    assert snapshot(merchant) == before
    assert_one_refusal(
        events_since(since), ACTION_EVENTS[action], actor=owner, merchant=merchant, reason="wrong_status",
        target=f"api_key:{key.public_key}",
    )


def test_archived_key_never_comes_back(clock, merchant, owner):
    key = make_key(merchant, KeyStatus.DEACTIVATED)
    services.archive_key(actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner), context=CTX)
    for action in ["activate", "deactivate", "allowlist", "rename", "archive"]:
        with pytest.raises(services.KeyActionRefused):
            run_action(action, actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner))
    key.refresh_from_db()
    assert key.status == KeyStatus.ARCHIVED


# Who may act


NOT_OWNERS = [Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED, None]


@pytest.mark.parametrize("action", list(ACTION_EVENTS))
@pytest.mark.parametrize("role", NOT_OWNERS, ids=lambda role: role or "non-member")
def test_only_owners_may_act(clock, merchant, owner, action, role):
    user = helpers.create_member(merchant, role) if role else helpers.create_user()
    key = make_key(merchant, STARTS_FROM.get(action, KeyStatus.GENERATED), name="Kept")
    device = helpers.totp_device(user)
    before, since = snapshot(merchant), last_event_id()

    with pytest.raises(services.KeyActionRefused) as refused:
        run_action(action, actor=user, merchant=merchant, key_id=key.pk, code=fresh_code(clock, user))

    assert refused.value.code == "not_owner"
    assert refused.value.message == "Managing API keys needs the Owner role."
    assert snapshot(merchant) == before
    events = events_since(since)
    # Refused before the code is looked at: the code is not spent and no 2FA row is written.
    assert [event.action for event in events] == [ACTION_EVENTS[action]]
    assert_one_refusal(
        events, ACTION_EVENTS[action], actor=user, merchant=merchant, reason="not_owner",
        target=None if action == "generate" else f"api_key:#{key.pk}",
    )
    assert TOTPDevice.objects.get(pk=device.pk).last_t == device.last_t


def test_owner_demoted_is_refused_on_the_next_call(clock, merchant, owner):
    key = make_key(merchant)
    Membership.objects.filter(user=owner, merchant=merchant).update(role=Role.VIEW)
    with pytest.raises(services.KeyActionRefused) as refused:
        run_action("archive", actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner))
    assert refused.value.code == "not_owner"
    key.refresh_from_db()
    assert key.status == KeyStatus.GENERATED


def test_owner_of_another_merchant_is_refused(clock, merchant, owner):
    other_owner = helpers.create_member(helpers.create_merchant(), Role.OWNER)
    key = make_key(merchant)
    before = snapshot(merchant)
    with pytest.raises(services.KeyActionRefused) as refused:
        run_action("activate", actor=other_owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, other_owner))
    assert refused.value.code == "not_owner"
    assert snapshot(merchant) == before


@pytest.mark.parametrize("action", [action for action in ACTION_EVENTS if action != "generate"])
def test_key_of_another_merchant_is_not_found(clock, merchant, owner, action):
    other = helpers.create_merchant()
    foreign = make_key(other, STARTS_FROM[action], name="Theirs")
    before_theirs, before_ours, since = snapshot(other), snapshot(merchant), last_event_id()

    with pytest.raises(services.KeyNotFound) as refused:
        run_action(action, actor=owner, merchant=merchant, key_id=foreign.pk, code=fresh_code(clock, owner))

    assert refused.value.code == "not_found"
    assert refused.value.message == "No such API key for this merchant."
    assert snapshot(other) == before_theirs and snapshot(merchant) == before_ours
    # The refusal is recorded against the acting merchant, without naming the other merchant's key.
    event = assert_one_refusal(
        events_since(since), ACTION_EVENTS[action], actor=owner, merchant=merchant, reason="not_found",
        target=f"api_key:#{foreign.pk}",
    )
    assert foreign.public_key not in event.target


def test_unknown_key_id_is_not_found(clock, merchant, owner):
    with pytest.raises(services.KeyNotFound):
        run_action("deactivate", actor=owner, merchant=merchant, key_id=999_999, code=fresh_code(clock, owner))


# The 2FA code


def _wrong_code(clock, user):
    clock.next_code_step()
    # A code ten steps ahead: far outside the one-step tolerance.
    return helpers.current_code(user, steps_ahead=10)


def _reused_code(clock, user):
    code = fresh_code(clock, user)
    verify_fresh_code(user, code, context=CTX, purpose="an earlier action")
    return code


CODE_ATTACKS = [
    pytest.param(_wrong_code, RefusalReason.WRONG, id="wrong"),
    pytest.param(_reused_code, RefusalReason.REUSED, id="reused"),
    pytest.param(lambda clock, user: "12345", RefusalReason.MALFORMED, id="five digits"),
    pytest.param(lambda clock, user: "abcdef", RefusalReason.MALFORMED, id="letters"),
    pytest.param(lambda clock, user: "１２３４５６", RefusalReason.MALFORMED, id="full-width digits"),
    pytest.param(lambda clock, user: "", RefusalReason.MALFORMED, id="empty"),
    pytest.param(lambda clock, user: "1" * 40, RefusalReason.MALFORMED, id="too long"),
]


# Every action, renaming included: the platform asks a fresh code for any change in the dashboard.
@pytest.mark.parametrize("action", list(ACTION_EVENTS))
@pytest.mark.parametrize(("make_code", "reason"), CODE_ATTACKS)
def test_refused_code_changes_nothing(clock, merchant, owner, action, make_code, reason):
    key = make_key(merchant, STARTS_FROM.get(action, KeyStatus.GENERATED), name="Kept")
    code = make_code(clock, owner)
    before, since = snapshot(merchant), last_event_id()

    with pytest.raises(CodeRefused) as refused:
        run_action(action, actor=owner, merchant=merchant, key_id=key.pk, code=code)

    assert refused.value.reason is reason
    assert snapshot(merchant) == before
    # The 2FA check audits the refusal itself; no key event is written.
    events = events_since(since)
    assert [(event.action, event.outcome) for event in events] == [(AuditAction.OTP_FAILED, AuditOutcome.REFUSED)]
    assert events[0].details["reason"] == reason.value
    assert events[0].actor == owner and events[0].merchant == merchant


def test_throttled_code_changes_nothing_until_the_delay_passes(clock, merchant, owner):
    key = make_key(merchant)
    with pytest.raises(CodeRefused):
        run_action("activate", actor=owner, merchant=merchant, key_id=key.pk, code=_wrong_code(clock, owner))
    before, since = snapshot(merchant), last_event_id()

    # Right away, even the right code is refused.
    with pytest.raises(CodeRefused) as refused:
        run_action("activate", actor=owner, merchant=merchant, key_id=key.pk, code=helpers.current_code(owner))

    assert refused.value.reason is RefusalReason.THROTTLED
    assert snapshot(merchant) == before
    assert [event.action for event in events_since(since)] == [AuditAction.OTP_THROTTLED]
    result = run_action("activate", actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner))
    assert result.key.status == KeyStatus.ACTIVE


def test_a_code_accepted_for_one_action_is_refused_for_the_next(clock, merchant, owner):
    key = make_key(merchant)
    code = fresh_code(clock, owner)
    services.activate_key(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""), code=code, context=CTX
    )
    before = snapshot(merchant)
    with pytest.raises(CodeRefused) as refused:
        services.deactivate_key(actor=owner, merchant=merchant, key_id=key.pk, code=code, context=CTX)
    assert refused.value.reason is RefusalReason.REUSED
    assert snapshot(merchant) == before


def test_backup_code_works_for_one_action_only(clock, merchant, owner):
    helpers.give_backup_codes(owner, ["1234567890"])
    clock.next_code_step()
    since = last_event_id()

    key = services.generate_key(actor=owner, merchant=merchant, code="12345-67890", context=CTX)

    assert key.status == KeyStatus.GENERATED
    events = events_since(since)
    assert [event.action for event in events] == [AuditAction.OTP_VERIFIED, AuditAction.KEY_GENERATED]
    assert events[0].details["kind"] == "backup"
    before = snapshot(merchant)
    with pytest.raises(CodeRefused) as refused:
        services.generate_key(actor=owner, merchant=merchant, code="1234567890", context=CTX)
    assert refused.value.reason is RefusalReason.WRONG
    assert snapshot(merchant) == before


# The whole lifecycle, as an Owner would go through it


def test_full_lifecycle_with_a_replacement_key(clock, merchant, owner):
    first = services.generate_key(actor=owner, merchant=merchant, name="v1", code=fresh_code(clock, owner), context=CTX)
    services.activate_key(
        actor=owner, merchant=merchant, key_id=first.pk, allowlist=parse_allowlist(""), code=fresh_code(clock, owner),
        context=CTX,
    )
    second = services.generate_key(actor=owner, merchant=merchant, name="v2", code=fresh_code(clock, owner), context=CTX)
    services.deactivate_key(actor=owner, merchant=merchant, key_id=first.pk, code=fresh_code(clock, owner), context=CTX)
    result = services.activate_key(
        actor=owner, merchant=merchant, key_id=second.pk, allowlist=parse_allowlist("203.0.113.7"),
        code=fresh_code(clock, owner), context=CTX,
    )
    services.archive_key(actor=owner, merchant=merchant, key_id=first.pk, code=fresh_code(clock, owner), context=CTX)

    assert result.secret is not None
    assert ApiKey.objects.with_public_key(second.public_key).is_usable
    assert not ApiKey.objects.with_public_key(first.public_key).is_usable
    assert dict(ApiKey.objects.for_merchant(merchant).values_list("name", "status")) == {
        "v1": KeyStatus.ARCHIVED, "v2": KeyStatus.ACTIVE,
    }
    assert list(
        AuditEvent.objects.for_merchant(merchant).filter(action__startswith="key_").order_by("pk")
        .values_list("action", "outcome")
    ) == [
        (AuditAction.KEY_GENERATED, AuditOutcome.SUCCEEDED),
        (AuditAction.KEY_ACTIVATED, AuditOutcome.SUCCEEDED),
        (AuditAction.KEY_GENERATED, AuditOutcome.SUCCEEDED),
        (AuditAction.KEY_DEACTIVATED, AuditOutcome.SUCCEEDED),
        (AuditAction.KEY_ACTIVATED, AuditOutcome.SUCCEEDED),
        (AuditAction.KEY_ARCHIVED, AuditOutcome.SUCCEEDED),
    ]
