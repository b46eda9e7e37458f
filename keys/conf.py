"""Settings of the keys app, with their defaults, read in one place."""
from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from . import crypto


def max_unarchived_keys() -> int:
    """KEYS_MAX_UNARCHIVED_PER_MERCHANT: how many keys a merchant may hold that are not archived."""
    return getattr(settings, "KEYS_MAX_UNARCHIVED_PER_MERCHANT", 20)


@lru_cache(maxsize=4)
def _parsed_keys(value: str, debug: bool, secret_key: str) -> tuple[bytes, ...]:
    if value.strip():
        return tuple(crypto.parse_encryption_keys(value))
    if debug:
        # Development convenience only: production must set KEYS_ENCRYPTION_KEYS (checked by keys.E001).
        return (crypto.derive_encryption_key(secret_key),)
    raise crypto.EncryptionKeyError(
        "KEYS_ENCRYPTION_KEYS is not set; it is required when DEBUG is off."
    )


def encryption_keys() -> tuple[bytes, ...]:
    """KEYS_ENCRYPTION_KEYS: comma-separated keys, the first encrypts and all decrypt (rotation)."""
    return _parsed_keys(getattr(settings, "KEYS_ENCRYPTION_KEYS", ""), settings.DEBUG, settings.SECRET_KEY)
