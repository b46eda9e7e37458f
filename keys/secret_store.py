"""Sealing a key's secret for the database and opening it again, bound to that key."""
from __future__ import annotations

from . import conf, crypto


def _associated_data(public_key: str) -> bytes:
    # SECURITY: binds the ciphertext to its key's row; copied onto another key it does not decrypt.
    return f"api-key:{public_key}".encode()


def seal_secret(public_key: str, secret: str) -> str:
    return crypto.encrypt_secret(secret, associated_data=_associated_data(public_key), keys=conf.encryption_keys())


def open_secret(public_key: str, sealed: str) -> str:
    """The plaintext secret; raises crypto.DecryptionError (or EncryptionKeyError) rather than guess."""
    return crypto.decrypt_secret(sealed, associated_data=_associated_data(public_key), keys=conf.encryption_keys())


def needs_resealing(sealed: str) -> bool:
    return crypto.needs_reencryption(sealed, conf.encryption_keys())
