"""Encryption of secrets at rest: rotating the key-encryption key, binding to the row, and the system checks."""
from __future__ import annotations

import base64
from io import StringIO

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.test import override_settings

from keys import conf, crypto
from keys.models import ApiKey, KeyStatus
from keys.secret_store import needs_resealing, open_secret, seal_secret, signature_verifier

# The two keys of tests/settings.py (32 zero bytes, then 32 0x01 bytes), and a third one to rotate to.
KEY_A = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
KEY_B = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"
KEY_NEW = base64.urlsafe_b64encode(bytes([2]) * 32).rstrip(b"=").decode()


def keys_setting(*keys: str):
    return override_settings(KEYS_ENCRYPTION_KEYS=",".join(keys))


def make_sealed_key(merchant, status=KeyStatus.DEACTIVATED, *, under: tuple[str, ...]) -> tuple[ApiKey, str]:
    """A key whose secret is sealed with the first of ``under``; returns the key and its plaintext secret."""
    public_key, secret = crypto.generate_public_key(), crypto.generate_secret()
    with keys_setting(*under):
        sealed = seal_secret(public_key, secret)
    key = ApiKey.objects.create(merchant=merchant, public_key=public_key, status=status, encrypted_secret=sealed)
    return key, secret


def run_rotation() -> str:
    out = StringIO()
    call_command("rotate_secret_encryption", stdout=out)
    return out.getvalue()


def test_test_settings_have_the_two_keys():
    assert [base64.urlsafe_b64encode(key).rstrip(b"=").decode() for key in conf.encryption_keys()] == [KEY_A, KEY_B]


def test_secret_sealed_under_the_second_key_opens(merchant):
    key, secret = make_sealed_key(merchant, under=(KEY_B,))

    assert open_secret(key.public_key, key.encrypted_secret) == secret  # settings: [A, B]
    assert needs_resealing(key.encrypted_secret)


def test_new_secrets_are_sealed_with_the_first_key(merchant):
    key, secret = make_sealed_key(merchant, under=(KEY_A, KEY_B))
    with keys_setting(KEY_A):
        assert open_secret(key.public_key, key.encrypted_secret) == secret
    with keys_setting(KEY_B), pytest.raises(crypto.DecryptionError):
        open_secret(key.public_key, key.encrypted_secret)


def test_a_kept_verifier_is_not_used_once_its_encryption_key_is_gone(merchant):
    key, secret = make_sealed_key(merchant, under=(KEY_A,))
    body = b"{}"
    with keys_setting(KEY_A):
        assert signature_verifier(key.public_key, key.encrypted_secret).matches(body, crypto.sign(secret, body))
    with keys_setting(KEY_B), pytest.raises(crypto.DecryptionError):
        signature_verifier(key.public_key, key.encrypted_secret)


def test_a_verifier_is_bound_to_its_key_like_the_secret(merchant):
    key, _secret = make_sealed_key(merchant, under=(KEY_A,))
    other, _ = make_sealed_key(merchant, under=(KEY_A,))
    signature_verifier(key.public_key, key.encrypted_secret)

    with pytest.raises(crypto.DecryptionError):
        signature_verifier(other.public_key, key.encrypted_secret)


def test_rotation_reseals_every_secret_with_the_new_first_key(merchant):
    secrets_by_key = dict(
        [
            make_sealed_key(merchant, KeyStatus.ACTIVE, under=(KEY_A,)),
            make_sealed_key(merchant, KeyStatus.DEACTIVATED, under=(KEY_B,)),
            make_sealed_key(merchant, KeyStatus.ARCHIVED, under=(KEY_A,)),
            make_sealed_key(merchant, KeyStatus.DEACTIVATED, under=(KEY_NEW,)),
        ]
    )
    never_activated = ApiKey.objects.create(merchant=merchant, public_key=crypto.generate_public_key())

    with keys_setting(KEY_NEW, KEY_A, KEY_B):
        output = run_rotation()

    assert "Re-encrypted 3 secret(s); 1 already used the current key." in output
    # The old keys can now be removed: every secret opens with the new key alone.
    with keys_setting(KEY_NEW):
        for key, secret in secrets_by_key.items():
            key.refresh_from_db()
            assert open_secret(key.public_key, key.encrypted_secret) == secret
            assert not needs_resealing(key.encrypted_secret)
            assert secret not in output
    never_activated.refresh_from_db()
    assert never_activated.encrypted_secret == ""

    # Running it again changes nothing.
    with keys_setting(KEY_NEW, KEY_A, KEY_B):
        sealed = dict(ApiKey.objects.values_list("pk", "encrypted_secret"))
        assert "Re-encrypted 0 secret(s); 4 already used the current key." in run_rotation()
        assert dict(ApiKey.objects.values_list("pk", "encrypted_secret")) == sealed


def test_rotation_with_an_old_key_missing_fails_loudly_and_changes_nothing(merchant):
    key, secret = make_sealed_key(merchant, under=(KEY_A,))
    before = key.encrypted_secret

    with keys_setting(KEY_NEW), pytest.raises(CommandError) as failed:
        run_rotation()

    assert key.public_key in str(failed.value)
    assert secret not in str(failed.value)
    key.refresh_from_db()
    assert key.encrypted_secret == before
    assert open_secret(key.public_key, key.encrypted_secret) == secret


def test_ciphertext_copied_onto_another_row_does_not_decrypt(merchant):
    victim, victim_secret = make_sealed_key(merchant, KeyStatus.ACTIVE, under=(KEY_A,))
    attacker_key, _ = make_sealed_key(merchant, KeyStatus.DEACTIVATED, under=(KEY_A,))
    ApiKey.objects.filter(pk=attacker_key.pk).update(encrypted_secret=victim.encrypted_secret)
    attacker_key.refresh_from_db()

    with pytest.raises(crypto.DecryptionError) as refused:
        open_secret(attacker_key.public_key, attacker_key.encrypted_secret)
    assert victim_secret not in str(refused.value)

    # Rotation does not launder it either: the row is reported and left as it was.
    with keys_setting(KEY_NEW, KEY_A), pytest.raises(CommandError) as failed:
        run_rotation()
    assert attacker_key.public_key in str(failed.value)
    attacker_key.refresh_from_db()
    assert attacker_key.encrypted_secret == victim.encrypted_secret
    with keys_setting(KEY_NEW):
        victim.refresh_from_db()
        assert open_secret(victim.public_key, victim.encrypted_secret) == victim_secret


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda token: token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), id="last bytes changed"),
        pytest.param(lambda token: token[:-10], id="truncated"),
        pytest.param(lambda token: token.replace("v1$", "v2$", 1), id="other version"),
        pytest.param(lambda token: "v1$00000000$" + token.split("$")[2], id="other key id"),
        pytest.param(lambda token: "", id="empty"),
    ],
)
def test_tampered_ciphertext_does_not_decrypt(merchant, tamper):
    key, _secret = make_sealed_key(merchant, under=(KEY_A,))
    with pytest.raises(crypto.DecryptionError):
        open_secret(key.public_key, tamper(key.encrypted_secret))


# Configuration and system checks


def _key_errors() -> list:
    return [message for message in run_checks() if message.id.startswith("keys.")]


def test_check_passes_with_valid_keys():
    assert _key_errors() == []


@override_settings(DEBUG=False, KEYS_ENCRYPTION_KEYS="")
def test_check_requires_keys_when_debug_is_off():
    errors = _key_errors()
    assert [error.id for error in errors] == ["keys.E001"]
    assert errors[0].is_serious()
    with pytest.raises(crypto.EncryptionKeyError):
        conf.encryption_keys()


@override_settings(DEBUG=True, KEYS_ENCRYPTION_KEYS="")
def test_debug_without_keys_uses_a_development_key(merchant):
    assert _key_errors() == []
    key, secret = make_sealed_key(merchant, under=())
    assert open_secret(key.public_key, key.encrypted_secret) == secret


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("not-a-key", id="garbage"),
        pytest.param("AAAA", id="too short"),
        pytest.param(KEY_A + "AAAA", id="too long"),
        pytest.param(f"{KEY_A},s3cr3t+/value==", id="second key malformed"),
        pytest.param(KEY_A.replace("A", "!", 1), id="not base64"),
    ],
)
@pytest.mark.parametrize("debug", [False, True])
def test_check_reports_a_malformed_key_without_echoing_it(value, debug):
    with override_settings(DEBUG=debug, KEYS_ENCRYPTION_KEYS=value):
        errors = _key_errors()
    assert [error.id for error in errors] == ["keys.E002"]
    for item in value.split(","):
        assert item not in errors[0].msg
