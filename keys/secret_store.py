"""Sealing a key's secret for the database and opening it again, bound to that key."""
from __future__ import annotations

import functools

from . import conf, crypto


def _associated_data(public_key: str) -> bytes:
    # SECURITY: binds the ciphertext to its key's row; copied onto another key it does not decrypt.
    return f"api-key:{public_key}".encode()


def seal_secret(public_key: str, secret: str) -> str:
    return crypto.encrypt_secret(secret, associated_data=_associated_data(public_key), keys=conf.encryption_keys())


def open_secret(public_key: str, sealed: str) -> str:
    """The plaintext secret; raises crypto.DecryptionError (or EncryptionKeyError) rather than guess."""
    return _open(public_key, sealed, conf.encryption_keys())


def _open(public_key: str, sealed: str, keys: tuple[bytes, ...]) -> str:
    return crypto.decrypt_secret(sealed, associated_data=_associated_data(public_key), keys=keys)


def needs_resealing(sealed: str) -> bool:
    return crypto.needs_reencryption(sealed, conf.encryption_keys())


def signature_verifier(public_key: str, sealed: str) -> crypto.SignatureVerifier:
    """A verifier keyed with the key's secret; raises as ``open_secret`` does.

    Kept per process for the same sealed secret and encryption keys: opening the secret took 6–8 µs of each
    signed request, checking the signature 3–6 µs (in a loop). A new secret is a new sealed value, so it is
    never checked against an old one. What is kept is the keyed HMAC state, which signs as the secret does; a
    process that holds it also holds KEYS_ENCRYPTION_KEYS, which open every secret.
    """
    return _verifier(public_key, sealed, conf.encryption_keys())


@functools.lru_cache(maxsize=4096)
def _verifier(public_key: str, sealed: str, keys: tuple[bytes, ...]) -> crypto.SignatureVerifier:
    return crypto.SignatureVerifier(_open(public_key, sealed, keys))
