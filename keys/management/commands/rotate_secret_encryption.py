"""Re-encrypt every stored secret key with the first key of KEYS_ENCRYPTION_KEYS."""
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from keys import crypto
from keys.models import ApiKey
from keys.secret_store import needs_resealing, open_secret, seal_secret


class Command(BaseCommand):
    help = ("Re-encrypt every secret key with the first of KEYS_ENCRYPTION_KEYS. Run after putting a new key "
            "first in the list; remove the old key only after this succeeds.")

    def handle(self, *args, **options):
        resealed = unchanged = 0
        failed = []
        for key_id in ApiKey.objects.exclude(encrypted_secret="").values_list("pk", flat=True).iterator():
            with transaction.atomic():
                key = ApiKey.objects.select_for_update(no_key=True).get(pk=key_id)
                try:
                    if not needs_resealing(key.encrypted_secret):
                        unchanged += 1
                        continue
                    secret = open_secret(key.public_key, key.encrypted_secret)
                except (crypto.DecryptionError, crypto.EncryptionKeyError) as error:
                    failed.append(f"{key.public_key}: {error}")
                    continue
                key.encrypted_secret = seal_secret(key.public_key, secret)
                key.save(update_fields=["encrypted_secret"])
                resealed += 1
        self.stdout.write(f"Re-encrypted {resealed} secret(s); {unchanged} already used the current key.")
        if failed:
            raise CommandError("Could not read these secrets (is an old key missing?):\n  " + "\n  ".join(failed))
