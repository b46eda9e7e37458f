"""keys.crypto: ids, secrets, signatures and encryption at rest. No settings, no database."""

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from keys import crypto
from keys.crypto import (
    DecryptionError,
    SignatureVerifier,
    EncryptionKeyError,
    decrypt_secret,
    derive_encryption_key,
    encrypt_secret,
    fingerprint,
    generate_public_key,
    generate_secret,
    needs_reencryption,
    new_encryption_key,
    parse_encryption_keys,
    sign,
    signature_matches,
)

VECTOR_SECRET = "AbCdEfG123456"
VECTOR_BODY = b'{"currency":"BTC","foreign_id":"123456"}'
VECTOR_SIGNATURE = (
    "03c25fcf7cd35e7d995e402cd5d51edd72d48e1471e865907967809a0c189ba5"
    "5b90815f20e2bb10f82c7a9e9d865546fda58989c2ae9e8e2ff7bc29195fa1ec"
)

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))
OTHER_KEY = bytes(32)
PUBLIC_ID = b"sbx_0123456789abcdef0123456789abcdef01234567"
SECRET = "kF3q1w6yB0s8pZ-aVx7mN2cT9uJ4eR5hL_dG0iO1nYk"


def _encoded(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


# Signatures


def test_sign_reproduces_the_published_test_vector():
    assert sign(VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE


def test_signature_matches_accepts_the_test_vector():
    assert signature_matches(VECTOR_SECRET, VECTOR_BODY, VECTOR_SIGNATURE)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s, b, sig: (s, b, sig.upper()), id="upper-case hex"),
        pytest.param(
            lambda s, b, sig: (s, b, base64.b64encode(bytes.fromhex(sig)).decode()), id="base64 instead of hex"
        ),
        pytest.param(lambda s, b, sig: (s, b, sig[:-1]), id="truncated by one character"),
        pytest.param(lambda s, b, sig: (s, b, sig[:64]), id="truncated to sha256 length"),
        pytest.param(lambda s, b, sig: (s, b, ""), id="empty signature"),
        pytest.param(lambda s, b, sig: (s, b, sig + "\n"), id="trailing newline in signature"),
        pytest.param(lambda s, b, sig: (s, b + b"\n", sig), id="trailing newline in body"),
        pytest.param(lambda s, b, sig: (s, b.replace(b"BTC", b"ETH"), sig), id="different body"),
        pytest.param(lambda s, b, sig: (s + "x", b, sig), id="different secret"),
        pytest.param(lambda s, b, sig: (s, b, sig[:-1] + "é"), id="non-ASCII last character"),
        pytest.param(lambda s, b, sig: (s, b, "０" * 128), id="full-width digits"),
        pytest.param(lambda s, b, sig: (s, b, sig[:-1] + "\ud800"), id="lone surrogate"),
    ],
)
def test_signature_matches_refuses_tampered_input_without_raising(tamper):
    secret, body, signature = tamper(VECTOR_SECRET, VECTOR_BODY, VECTOR_SIGNATURE)

    assert signature_matches(secret, body, signature) is False


def test_a_verifier_checks_many_bodies_with_one_secret_as_signature_matches_does():
    verifier = SignatureVerifier(VECTOR_SECRET)
    other_body = b'{"currency":"ETH"}'

    assert verifier.matches(VECTOR_BODY, VECTOR_SIGNATURE)
    assert not verifier.matches(other_body, VECTOR_SIGNATURE)
    # Checking a body leaves the keyed state as it was: the first body is still accepted, the second too.
    assert verifier.matches(other_body, sign(VECTOR_SECRET, other_body))
    assert verifier.matches(VECTOR_BODY, VECTOR_SIGNATURE)
    assert not verifier.matches(VECTOR_BODY, VECTOR_SIGNATURE.upper())
    assert not verifier.matches(VECTOR_BODY, VECTOR_SIGNATURE[:-1] + "\ud800")


@given(secret=st.one_of(st.text(max_size=60), st.text(min_size=100, max_size=300)), body=st.binary(max_size=600))
@example(secret="s" * 128, body=b"{}")  # a key of exactly one block is used as it is
@example(secret="s" * 129, body=b"{}")  # one byte more, and it is hashed first
def test_a_verifier_agrees_with_the_standard_librarys_hmac_for_any_secret_and_body(secret, body):
    # Secrets past SHA-512's 128-byte block are hashed first (RFC 2104); bodies cross block boundaries.
    expected = hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()
    verifier = SignatureVerifier(secret)

    assert verifier.matches(body, expected)
    assert not verifier.matches(body + b"x", expected)
    assert not verifier.matches(body, expected[:-1] + ("0" if expected[-1] != "0" else "1"))


def test_a_verifier_shows_nothing_of_its_secret():
    verifier = SignatureVerifier(VECTOR_SECRET)

    assert VECTOR_SECRET not in repr(verifier) and VECTOR_SECRET not in str(verifier)


# Ids and secrets


def test_public_key_is_prefixed_160_bit_hex():
    assert re.fullmatch(r"sbx_[0-9a-f]{40}", generate_public_key())


def test_secret_is_43_characters_of_unpadded_urlsafe_base64_holding_256_bits():
    secret = generate_secret()

    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    assert "=" not in secret
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32


def test_generated_keys_and_secrets_do_not_repeat():
    assert len({generate_secret() for _ in range(200)}) == 200
    assert len({generate_public_key() for _ in range(200)}) == 200


def test_fingerprint_is_first_8_hex_characters_of_sha256():
    assert fingerprint(SECRET) == hashlib.sha256(SECRET.encode()).hexdigest()[:8]
    assert re.fullmatch(r"[0-9a-f]{8}", fingerprint(SECRET))
    assert fingerprint(SECRET) != fingerprint(SECRET + "x")


# Encryption at rest


def test_encrypt_then_decrypt_returns_the_plaintext():
    token = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[NEW_KEY])

    assert decrypt_secret(token, associated_data=PUBLIC_ID, keys=[NEW_KEY]) == SECRET


def test_token_names_version_and_key_id_and_hides_the_plaintext():
    token = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[NEW_KEY])

    key_id = hashlib.sha256(NEW_KEY).hexdigest()[:8]
    assert re.fullmatch(rf"v1\${key_id}\$[A-Za-z0-9_-]+", token)
    assert SECRET not in token


def test_encrypting_twice_gives_different_tokens():
    first = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[NEW_KEY])
    second = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[NEW_KEY])

    assert first != second


def test_decrypt_with_other_associated_data_fails():
    token = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[NEW_KEY])

    with pytest.raises(DecryptionError):
        decrypt_secret(token, associated_data=b"sbx_another_key", keys=[NEW_KEY])


def _flip_payload_byte(token: str, index: int) -> str:
    version, key_id, encoded = token.split("$")
    payload = bytearray(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    payload[index] ^= 0x01
    return f"{version}${key_id}${base64.urlsafe_b64encode(bytes(payload)).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: _flip_payload_byte(t, 0), id="nonce byte flipped"),
        pytest.param(lambda t: _flip_payload_byte(t, 12), id="ciphertext byte flipped"),
        pytest.param(lambda t: _flip_payload_byte(t, -1), id="tag byte flipped"),
        pytest.param(lambda t: t[:-4], id="truncated"),
        pytest.param(lambda t: t + "AAAA", id="extended"),
        pytest.param(lambda t: "v2" + t[2:], id="unknown version"),
        pytest.param(lambda t: t.replace("$", "#"), id="wrong separator"),
        pytest.param(lambda t: t + "$", id="extra field"),
        pytest.param(lambda t: t[:-1] + "!", id="not base64"),
        pytest.param(lambda t: t[:-1] + "é", id="non-ASCII"),
        pytest.param(lambda t: "v1$" + t.split("$")[1] + "$AAAA", id="payload too short for a tag"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_decrypt_refuses_tampered_token(tamper):
    token = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[NEW_KEY])

    with pytest.raises(DecryptionError):
        decrypt_secret(tamper(token), associated_data=PUBLIC_ID, keys=[NEW_KEY])


def test_decrypt_without_the_key_that_encrypted_fails():
    token = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[OLD_KEY])

    with pytest.raises(DecryptionError):
        decrypt_secret(token, associated_data=PUBLIC_ID, keys=[NEW_KEY, OTHER_KEY])


def test_decryption_errors_reveal_neither_plaintext_nor_key():
    token = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[OLD_KEY])
    messages = []
    for keys, associated_data in [([NEW_KEY], PUBLIC_ID), ([OLD_KEY], b"other")]:
        with pytest.raises(DecryptionError) as caught:
            decrypt_secret(token, associated_data=associated_data, keys=keys)
        messages.append(str(caught.value))

    for message in messages:
        assert SECRET not in message
        assert _encoded(OLD_KEY).rstrip("=") not in message
        assert OLD_KEY.hex() not in message


def test_rotation_reads_old_tokens_and_reencrypts_them_with_the_new_key():
    old_token = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[OLD_KEY])
    rotated_keys = [NEW_KEY, OLD_KEY]

    assert decrypt_secret(old_token, associated_data=PUBLIC_ID, keys=rotated_keys) == SECRET
    assert needs_reencryption(old_token, rotated_keys)

    plaintext = decrypt_secret(old_token, associated_data=PUBLIC_ID, keys=rotated_keys)
    new_token = encrypt_secret(plaintext, associated_data=PUBLIC_ID, keys=rotated_keys)

    assert not needs_reencryption(new_token, rotated_keys)
    assert decrypt_secret(new_token, associated_data=PUBLIC_ID, keys=[NEW_KEY]) == SECRET
    with pytest.raises(DecryptionError):
        decrypt_secret(old_token, associated_data=PUBLIC_ID, keys=[NEW_KEY])


def test_needs_reencryption_refuses_a_malformed_token():
    with pytest.raises(DecryptionError):
        needs_reencryption("plaintext-secret", [NEW_KEY])


@pytest.mark.parametrize("keys", [[], [b"too short"]], ids=["no key", "short key"])
def test_encrypt_refuses_unusable_keys(keys):
    with pytest.raises(EncryptionKeyError):
        encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=keys)


def test_derived_development_key_is_32_stable_bytes_that_encrypt():
    key = derive_encryption_key("django-insecure-example")

    assert len(key) == 32
    assert key == derive_encryption_key("django-insecure-example")
    assert key != derive_encryption_key("django-insecure-other")
    token = encrypt_secret(SECRET, associated_data=PUBLIC_ID, keys=[key])
    assert decrypt_secret(token, associated_data=PUBLIC_ID, keys=[key]) == SECRET


# Configured encryption keys


def test_parse_encryption_keys_keeps_order_and_tolerates_padding_whitespace_and_empty_items():
    value = f" {_encoded(NEW_KEY)} ,, \n{_encoded(OLD_KEY).rstrip('=')},"

    assert parse_encryption_keys(value) == [NEW_KEY, OLD_KEY]


def test_new_encryption_key_parses_to_32_fresh_bytes():
    first, second = new_encryption_key(), new_encryption_key()

    keys = parse_encryption_keys(f"{first},{second}")

    assert [len(key) for key in keys] == [32, 32]
    assert keys[0] != keys[1]


@pytest.mark.parametrize(
    "bad_entry",
    [
        pytest.param(_encoded(bytes(31)), id="31 bytes"),
        pytest.param(_encoded(bytes(33)), id="33 bytes"),
        pytest.param(_encoded(bytes(32))[:-2] + "!!", id="not base64"),
        pytest.param(base64.b64encode(b"\xfb" * 32).decode(), id="standard alphabet"),
        pytest.param("é" * 43, id="non-ASCII"),
        pytest.param(NEW_KEY.hex(), id="hex"),
    ],
)
def test_parse_encryption_keys_names_the_position_of_a_bad_entry_not_its_value(bad_entry):
    with pytest.raises(EncryptionKeyError) as caught:
        parse_encryption_keys(f"{_encoded(NEW_KEY)}, ,{bad_entry}")

    assert "#3" in str(caught.value)
    assert bad_entry not in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("value", ["", "  ", " , ,\n"], ids=["empty", "blank", "only separators"])
def test_parse_encryption_keys_refuses_an_empty_list(value):
    with pytest.raises(EncryptionKeyError, match="No encryption key"):
        parse_encryption_keys(value)


def test_a_secret_never_starts_with_a_hyphen_so_command_lines_take_it_as_a_value(monkeypatch):
    draws = iter(["-" + "a" * 42, "-" + "b" * 42, "c" * 43])
    monkeypatch.setattr(crypto.secrets, "token_urlsafe", lambda nbytes: next(draws))
    assert crypto.generate_secret() == "c" * 43
