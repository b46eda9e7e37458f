"""System checks for what the keys app needs configured (run by `manage.py check`)."""
from django.conf import settings
from django.core import checks

from . import crypto


@checks.register(checks.Tags.security, deploy=False)
def encryption_keys_configured(app_configs, **kwargs):
    value = getattr(settings, "KEYS_ENCRYPTION_KEYS", "")
    if not value.strip():
        if settings.DEBUG:
            return []
        return [
            checks.Error(
                "KEYS_ENCRYPTION_KEYS is not set.",
                hint="Set it to one or more keys made by `python manage.py new_encryption_key`, comma-separated.",
                id="keys.E001",
            )
        ]
    try:
        crypto.parse_encryption_keys(value)
    except crypto.EncryptionKeyError as error:
        return [checks.Error(str(error), id="keys.E002")]
    return []
