"""API keys of a merchant, and the one table of which action is allowed from which status."""
from __future__ import annotations

import functools

from django.conf import settings
from django.db import connections, models
from django.utils import timezone

from dashboard.db_rows import RowReader
from dashboard.models import Merchant


class KeyStatus(models.TextChoices):
    GENERATED = "generated", "Generated"
    ACTIVE = "active", "Active"
    DEACTIVATED = "deactivated", "Deactivated"
    ARCHIVED = "archived", "Archived"


class KeyAction(models.TextChoices):
    ACTIVATE = "activate", "activate"
    DEACTIVATE = "deactivate", "deactivate"
    EDIT_ALLOWLIST = "edit_allowlist", "change the IP addresses of"
    RENAME = "rename", "rename"
    ARCHIVE = "archive", "archive"


# The lifecycle: which action may start from which status. Archiving is permanent: nothing starts from it.
ALLOWED_FROM: dict[str, frozenset[str]] = {
    KeyAction.ACTIVATE: frozenset({KeyStatus.GENERATED, KeyStatus.DEACTIVATED}),
    KeyAction.DEACTIVATE: frozenset({KeyStatus.ACTIVE}),
    KeyAction.EDIT_ALLOWLIST: frozenset({KeyStatus.GENERATED, KeyStatus.ACTIVE, KeyStatus.DEACTIVATED}),
    KeyAction.RENAME: frozenset({KeyStatus.GENERATED, KeyStatus.ACTIVE, KeyStatus.DEACTIVATED}),
    KeyAction.ARCHIVE: frozenset({KeyStatus.GENERATED, KeyStatus.DEACTIVATED}),
}


class ApiKeyQuerySet(models.QuerySet):
    def for_merchant(self, merchant: Merchant) -> ApiKeyQuerySet:
        return self.filter(merchant=merchant)

    def active(self) -> ApiKeyQuerySet:
        return self.filter(status=KeyStatus.ACTIVE)

    def not_archived(self) -> ApiKeyQuerySet:
        return self.exclude(status=KeyStatus.ARCHIVED)

    def archived(self) -> ApiKeyQuerySet:
        return self.filter(status=KeyStatus.ARCHIVED)


class ApiKeyManager(models.Manager.from_queryset(ApiKeyQuerySet)):
    def with_public_key(self, public_key: str) -> ApiKey | None:
        """The key sent as X-Processing-Key, whatever its status, or None.

        The sandbox API runs this on every request: one plain SELECT on the unique index of the columns the
        API reads (the others are deferred), converted as the ORM would. Measured: 25 µs, against 538 µs for
        the ORM's compiled query.
        """
        connection = connections[self.db]
        table = connection.ops.quote_name(self.model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {self.api_columns(connection, 'k')} FROM {table} k WHERE k.public_key = %s",
                           [public_key])
            row = cursor.fetchone()
        return None if row is None else self.from_api_row(connection, row)

    def api_columns(self, connection, table_alias: str) -> str:
        """The columns the sandbox API reads of a key, for a plain SELECT that ``from_api_row`` reads back."""
        return _api_row_reader().columns(connection, table_alias)

    def from_api_row(self, connection, row) -> ApiKey:
        """The key in the first values of ``row``, selected with ``api_columns``; the other fields deferred."""
        reader = _api_row_reader()
        values = reader.convert(connection, row[: len(reader.fields)])
        return self.model.from_db(self.db, reader.attnames, values)


# What the sandbox API reads of a key on each request.
API_FIELDS = ("id", "merchant", "public_key", "status", "encrypted_secret", "allowed_networks", "last_used_at")


@functools.cache
def _api_row_reader() -> RowReader:
    return RowReader([ApiKey._meta.get_field(name) for name in API_FIELDS])


class ApiKey(models.Model):
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="api_keys")
    public_key = models.CharField(
        "API key", max_length=64, unique=True, help_text="Sent as X-Processing-Key; public, shown in full."
    )
    name = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=12, choices=KeyStatus.choices, default=KeyStatus.GENERATED)
    # The secret key, sealed with AES-GCM (keys/secret_store.py); empty until the first activation.
    encrypted_secret = models.TextField(blank=True, editable=False)
    secret_fingerprint = models.CharField(
        max_length=8, blank=True, help_text="First 8 hex characters of SHA-256 of the secret key."
    )
    allowed_networks = models.JSONField(
        "IP addresses", default=list, blank=True, help_text="Normalised addresses and networks; empty means any."
    )

    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    first_activated_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    allowlist_changed_at = models.DateTimeField(null=True, blank=True)
    allowlist_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    archived_at = models.DateTimeField(null=True, blank=True)
    archived_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    objects = ApiKeyManager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at", "-id"]
        # Staff change nothing else of a key; this one action stops a key a merchant's Owners cannot (admin).
        permissions = [("deactivate_apikey", "Can deactivate a merchant's API key (staff)")]
        indexes = [
            models.Index(fields=["merchant", "status"], name="apikey_merchant_status"),
            # The API keys page's order, so the database reads it from the index instead of sorting.
            models.Index(fields=["merchant", "-created_at", "-id"], name="apikey_merchant_newest"),
        ]
        constraints = [
            # SECURITY: one usable key pair per merchant, whatever path writes the row.
            models.UniqueConstraint(
                fields=["merchant"], condition=models.Q(status=KeyStatus.ACTIVE), name="one_active_key_per_merchant"
            ),
            models.CheckConstraint(condition=models.Q(status__in=KeyStatus.values), name="apikey_status_is_known"),
            models.CheckConstraint(
                condition=~models.Q(status__in=[KeyStatus.ACTIVE, KeyStatus.DEACTIVATED]) | ~models.Q(encrypted_secret=""),
                name="apikey_activated_has_secret",
            ),
        ]

    def __str__(self) -> str:
        # The public key only: the secret never appears in a representation.
        return f"{self.name} ({self.public_key})" if self.name else self.public_key

    @property
    def is_usable(self) -> bool:
        """Whether the sandbox API accepts requests with this key (given a good signature and address)."""
        return self.status == KeyStatus.ACTIVE

    def allows(self, action: str) -> bool:
        return self.status in ALLOWED_FROM[action]

    @property
    def has_secret(self) -> bool:
        return bool(self.encrypted_secret)
