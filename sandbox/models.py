"""What the sandbox API serves: currencies, each merchant's balances, and its recent requests."""
from __future__ import annotations

import functools
from decimal import Decimal

from django.db import connections, models
from django.utils import timezone

from dashboard.db_rows import RowReader
from dashboard.models import Merchant
from keys.models import ApiKey

REQUEST_LOG_SIZE = 1000


class CurrencyType(models.TextChoices):
    CRYPTO = "crypto", "Crypto"
    FIAT = "fiat", "Fiat"


class Currency(models.Model):
    """A currency of the platform, as /currencies/list returns it. The id is the platform's own."""

    id = models.PositiveIntegerField(primary_key=True)
    code = models.CharField("currency", max_length=20, unique=True)
    type = models.CharField(max_length=10, choices=CurrencyType.choices, default=CurrencyType.CRYPTO)
    minimum_amount = models.DecimalField(max_digits=30, decimal_places=18)
    deposit_fee_percent = models.DecimalField(max_digits=10, decimal_places=6, default=Decimal("0"))
    withdrawal_fee_percent = models.DecimalField(max_digits=10, decimal_places=6, default=Decimal("0"))
    precision = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "currencies"

    def __str__(self) -> str:
        return self.code


class Balance(models.Model):
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="balances")
    currency = models.ForeignKey(Currency, on_delete=models.PROTECT, related_name="+")
    amount = models.DecimalField(max_digits=30, decimal_places=18, default=Decimal("0"))

    class Meta:
        ordering = ["merchant", "currency_id"]
        constraints = [
            models.UniqueConstraint(fields=["merchant", "currency"], name="one_balance_per_merchant_and_currency"),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="balance_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.merchant}: {self.amount} {self.currency}"


def balances_of(merchant_id: int) -> list[tuple[str, str, Decimal]]:
    """(code, type, amount) of every currency, in id order, with the merchant's balance or 0.

    One plain query: the sandbox API's accounts/list runs it on every request (see bench/).
    """
    reader = _balance_row_reader()
    connection = connections[Balance.objects.db]
    quote = connection.ops.quote_name
    code, type_, amount = (quote(field.column) for field in reader.fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.{code}, c.{type_}, b.{amount}"
            f" FROM {quote(Currency._meta.db_table)} c LEFT JOIN {quote(Balance._meta.db_table)} b"
            " ON b.currency_id = c.id AND b.merchant_id = %s ORDER BY c.id",
            [merchant_id],
        )
        rows = cursor.fetchall()
    zero = Decimal(0)
    return [(code, type_, amount if amount is not None else zero)
            for code, type_, amount in (reader.convert(connection, row) for row in rows)]


@functools.cache
def _balance_row_reader() -> RowReader:
    return RowReader([Currency._meta.get_field("code"), Currency._meta.get_field("type"),
                      Balance._meta.get_field("amount")])


class ApiRequestQuerySet(models.QuerySet):
    def for_merchant(self, merchant: Merchant) -> ApiRequestQuerySet:
        return self.filter(merchant=merchant)


class ApiRequest(models.Model):
    """One sandbox request of a merchant: what an integrator needs to see why it was refused.

    Never the body, the signature or any header value but the API key's identity.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    ip_address = models.GenericIPAddressField(null=True)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=200)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=40, blank=True)

    objects = ApiRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["merchant", "-id"], name="apirequest_merchant_newest"),
            models.Index(fields=["merchant", "api_key", "-id"], name="apirequest_merchant_key"),
        ]

    @property
    def accepted(self) -> bool:
        return self.status < 400
