"""keys.models: the transition table, the querysets, and the invariants the database itself enforces.

The database tests write rows directly, bypassing the services, to prove the rules hold whatever path
writes a key.
"""
from __future__ import annotations

import re

import pytest
from django.db import IntegrityError, transaction

from keys import crypto
from keys.models import ALLOWED_FROM, ApiKey, KeyAction, KeyStatus
from keys.secret_store import seal_secret

from . import helpers

ONE_ACTIVE_VIOLATION = re.compile(r"one_active_key_per_merchant|UNIQUE constraint failed: keys_apikey\.merchant_id")


def make_key(merchant, status=KeyStatus.GENERATED, *, name="") -> ApiKey:
    public_key = crypto.generate_public_key()
    sealed = ""
    if status in (KeyStatus.ACTIVE, KeyStatus.DEACTIVATED):
        sealed = seal_secret(public_key, crypto.generate_secret())
    return ApiKey.objects.create(
        merchant=merchant, public_key=public_key, name=name, status=status, encrypted_secret=sealed
    )


# The transition table, written out independently of ALLOWED_FROM

G, A, D, X = KeyStatus.GENERATED, KeyStatus.ACTIVE, KeyStatus.DEACTIVATED, KeyStatus.ARCHIVED
EXPECTED = {
    KeyAction.ACTIVATE: {G, D},
    KeyAction.DEACTIVATE: {A},
    KeyAction.EDIT_ALLOWLIST: {G, A, D},
    KeyAction.RENAME: {G, A, D},
    KeyAction.ARCHIVE: {G, D},
}


@pytest.mark.parametrize("action", list(KeyAction))
@pytest.mark.parametrize("status", list(KeyStatus))
def test_transition_table(action, status):
    key = ApiKey(status=status)
    assert key.allows(action) is (status in EXPECTED[action])


def test_every_action_has_a_row_and_nothing_leaves_archived():
    assert set(ALLOWED_FROM) == set(KeyAction)
    assert all(KeyStatus.ARCHIVED not in starts for starts in ALLOWED_FROM.values())


# One active key per merchant, in the database


def test_update_bypassing_the_service_cannot_make_a_second_active_key(merchant):
    make_key(merchant, KeyStatus.ACTIVE)
    second = make_key(merchant, KeyStatus.DEACTIVATED)  # has a secret, so only the one-active rule is at stake

    with pytest.raises(IntegrityError, match=ONE_ACTIVE_VIOLATION), transaction.atomic():
        ApiKey.objects.filter(pk=second.pk).update(status="active")

    second.refresh_from_db()
    assert second.status == KeyStatus.DEACTIVATED
    assert ApiKey.objects.for_merchant(merchant).active().count() == 1


def test_save_bypassing_the_service_cannot_make_a_second_active_key(merchant):
    make_key(merchant, KeyStatus.ACTIVE)
    second = make_key(merchant, KeyStatus.DEACTIVATED)
    second.status = KeyStatus.ACTIVE

    with pytest.raises(IntegrityError, match=ONE_ACTIVE_VIOLATION), transaction.atomic():
        second.save()

    assert ApiKey.objects.for_merchant(merchant).active().count() == 1


def test_insert_bypassing_the_service_cannot_add_a_second_active_key(merchant):
    make_key(merchant, KeyStatus.ACTIVE)

    with pytest.raises(IntegrityError, match=ONE_ACTIVE_VIOLATION), transaction.atomic():
        make_key(merchant, KeyStatus.ACTIVE)

    assert ApiKey.objects.for_merchant(merchant).count() == 1


def test_one_active_key_per_merchant_not_per_table(merchant):
    make_key(merchant, KeyStatus.ACTIVE)
    make_key(helpers.create_merchant(), KeyStatus.ACTIVE)
    assert ApiKey.objects.active().count() == 2


def test_once_the_active_key_is_deactivated_another_may_be_active(merchant):
    first = make_key(merchant, KeyStatus.ACTIVE)
    second = make_key(merchant, KeyStatus.DEACTIVATED)
    ApiKey.objects.filter(pk=first.pk).update(status=KeyStatus.DEACTIVATED)
    ApiKey.objects.filter(pk=second.pk).update(status=KeyStatus.ACTIVE)
    assert list(ApiKey.objects.for_merchant(merchant).active()) == [second]


def test_many_keys_may_share_every_other_status(merchant):
    for status in (G, G, D, D, X, X):
        make_key(merchant, status)
    assert ApiKey.objects.for_merchant(merchant).count() == 6


# Other invariants


@pytest.mark.parametrize("status", [KeyStatus.ACTIVE, KeyStatus.DEACTIVATED])
def test_a_key_that_was_active_must_have_a_secret(merchant, status):
    with pytest.raises(IntegrityError, match="apikey_activated_has_secret"), transaction.atomic():
        ApiKey.objects.create(merchant=merchant, public_key=crypto.generate_public_key(), status=status)


def test_unknown_status_is_refused_by_the_database(merchant):
    key = make_key(merchant)
    with pytest.raises(IntegrityError, match="apikey_status_is_known"), transaction.atomic():
        ApiKey.objects.filter(pk=key.pk).update(status="revoked")


def test_public_key_is_unique(merchant):
    key = make_key(merchant)
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.create(merchant=helpers.create_merchant(), public_key=key.public_key)


def test_public_key_has_at_least_128_bits_and_is_recognisable():
    public_key = crypto.generate_public_key()
    assert re.fullmatch(r"sbx_[0-9a-f]{40}", public_key)  # 160 random bits
    assert len(public_key) <= ApiKey._meta.get_field("public_key").max_length


def test_new_key_is_generated_with_no_secret_and_any_address(merchant):
    key = ApiKey.objects.create(merchant=merchant, public_key=crypto.generate_public_key())
    assert key.status == KeyStatus.GENERATED
    assert key.has_secret is False
    assert key.allowed_networks == []


# Querysets, used by the dashboard and the sandbox alike


def test_querysets(merchant):
    generated, active, deactivated, archived = (make_key(merchant, status) for status in (G, A, D, X))
    theirs = make_key(helpers.create_merchant(), KeyStatus.GENERATED)

    mine = ApiKey.objects.for_merchant(merchant)
    assert set(mine) == {generated, active, deactivated, archived}
    assert theirs not in mine
    assert list(mine.active()) == [active]
    assert set(mine.not_archived()) == {generated, active, deactivated}
    assert list(mine.archived()) == [archived]


def test_with_public_key_finds_a_key_whatever_its_status_and_only_usable_ones_are_usable(merchant):
    keys = {status: make_key(merchant, status) for status in (G, A, D, X)}

    for status, key in keys.items():
        found = ApiKey.objects.with_public_key(key.public_key)
        assert found == key
        assert found.status == status
        assert found.is_usable is (status == A)
    assert ApiKey.objects.with_public_key("sbx_" + "0" * 40) is None
    assert ApiKey.objects.with_public_key(keys[A].public_key.upper()) is None
    assert ApiKey.objects.with_public_key("") is None
    assert ApiKey.objects.with_public_key("' OR '1'='1") is None


# Representations


@pytest.mark.parametrize("name", ["", "Checkout server"])
def test_str_shows_the_public_key_never_the_secret(merchant, name):
    key = make_key(merchant, KeyStatus.ACTIVE, name=name)
    assert key.public_key in str(key)
    assert (name in str(key)) if name else str(key) == key.public_key
    assert key.encrypted_secret not in str(key)
    assert key.encrypted_secret not in repr(key)
