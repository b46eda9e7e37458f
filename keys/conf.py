"""Settings of the keys app, with their defaults, read in one place."""
from __future__ import annotations

from django.conf import settings

from dashboard.settings_cache import until_settings_change

from . import crypto


def max_unarchived_keys() -> int:
    """KEYS_MAX_UNARCHIVED_PER_MERCHANT: how many keys a merchant may hold that are not archived."""
    return getattr(settings, "KEYS_MAX_UNARCHIVED_PER_MERCHANT", 20)


@until_settings_change
def encryption_keys() -> tuple[bytes, ...]:
    """KEYS_ENCRYPTION_KEYS: comma-separated keys, the first encrypts and all decrypt (rotation).

    Kept until a setting changes: every signed API request asks, and reading the three settings cost it 11,300
    instructions (dashboard.settings_cache).
    """
    value = getattr(settings, "KEYS_ENCRYPTION_KEYS", "")
    if value.strip():
        return tuple(crypto.parse_encryption_keys(value))
    if settings.DEBUG:
        # Development convenience only: production must set KEYS_ENCRYPTION_KEYS (checked by keys.E001).
        return (crypto.derive_encryption_key(settings.SECRET_KEY),)
    raise crypto.EncryptionKeyError(
        "KEYS_ENCRYPTION_KEYS is not set; it is required when DEBUG is off."
    )
