"""Print a fresh key for KEYS_ENCRYPTION_KEYS."""
from django.core.management.base import BaseCommand

from keys.crypto import new_encryption_key


class Command(BaseCommand):
    help = "Print a new random key-encryption key for KEYS_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        self.stdout.write(new_encryption_key())
