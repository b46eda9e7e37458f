"""What the sandbox API serves: currencies, each merchant's balances, and its recent requests."""
from __future__ import annotations

import functools
from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import connections, models
from django.db.models.functions import Upper
from django.utils import timezone

from dashboard.db_rows import RowReader
from dashboard.models import Merchant
from keys.models import ApiKey

REQUEST_LOG_SIZE = 1000


class CurrencyType(models.TextChoices):
    CRYPTO = "crypto", "Crypto"
    FIAT = "fiat", "Fiat"


# Amounts are kept with 18 decimal places: a currency cannot be more precise.
MAX_PRECISION = 18
PERCENT = [MinValueValidator(Decimal(0), "A fee cannot be negative."),
           MaxValueValidator(Decimal(100), "A fee is a percentage: at most 100.")]


class Currency(models.Model):
    """A currency of the platform, as /currencies/list returns it. The id is the platform's own."""

    id = models.PositiveIntegerField(primary_key=True, validators=[MinValueValidator(1, "The platform's ids start at 1.")])
    code = models.CharField(
        "currency", max_length=20, unique=True,
        validators=[RegexValidator(r"^[A-Z0-9_.-]+\Z",
                                   "Capital letters, digits, _, - and . only, as the platform writes it: BTC, USDT.")],
    )
    type = models.CharField(max_length=10, choices=CurrencyType.choices, default=CurrencyType.CRYPTO)
    minimum_amount = models.DecimalField(
        max_digits=30, decimal_places=18, validators=[MinValueValidator(Decimal(0), "A minimum cannot be negative.")],
    )
    deposit_fee_percent = models.DecimalField(max_digits=10, decimal_places=6, default=Decimal("0"), validators=PERCENT)
    withdrawal_fee_percent = models.DecimalField(max_digits=10, decimal_places=6, default=Decimal("0"),
                                                 validators=PERCENT)
    precision = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(MAX_PRECISION, f"At most {MAX_PRECISION} decimal places: amounts keep no more.")],
    )

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "currencies"
        constraints = [
            models.CheckConstraint(condition=models.Q(id__gte=1), name="currency_id_from_1"),
            models.CheckConstraint(condition=models.Q(code=Upper("code")), name="currency_code_upper_case"),
            models.CheckConstraint(condition=models.Q(minimum_amount__gte=0), name="currency_minimum_not_negative"),
            models.CheckConstraint(
                condition=models.Q(deposit_fee_percent__gte=0, deposit_fee_percent__lte=100,
                                   withdrawal_fee_percent__gte=0, withdrawal_fee_percent__lte=100),
                name="currency_fees_are_percentages",
            ),
            models.CheckConstraint(condition=models.Q(precision__lte=MAX_PRECISION), name="currency_precision_kept"),
        ]

    def __str__(self) -> str:
        return self.code


class Balance(models.Model):
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="balances")
    currency = models.ForeignKey(Currency, on_delete=models.PROTECT, related_name="+")
    amount = models.DecimalField(max_digits=30, decimal_places=18, default=Decimal("0"),
                                 validators=[MinValueValidator(Decimal(0), "A balance cannot be negative.")])

    class Meta:
        ordering = ["merchant", "currency_id"]
        constraints = [
            models.UniqueConstraint(fields=["merchant", "currency"], name="one_balance_per_merchant_and_currency"),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="balance_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.merchant}: {self.amount} {self.currency}"


def key_with_balances(public_key: str) -> tuple[ApiKey | None, tuple[tuple[str, str, Decimal], ...]]:
    """The key sent as X-Processing-Key (as ``ApiKey.objects.with_public_key``), and the balances of its
    merchant: (code, type, amount) of every currency, in id order, 0 where the merchant has none.

    One plain query: accounts/list is the API's busiest call, and a second query cost it about a fifth of its
    time on SQLite (in-process, ~480 against ~400 µs) and a round trip on PostgreSQL (see bench/). The balances
    are read before the request is authenticated and used only once it is.
    """
    reader = _balance_row_reader()
    connection = connections[Balance.objects.db]
    quote = connection.ops.quote_name
    code, type_, amount = (quote(field.column) for field in reader.fields)
    # ON 1 = 1: every currency joined to the key's row, and the key's row alone when there is no currency.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {ApiKey.objects.api_columns(connection, 'k')}, c.{code}, c.{type_}, b.{amount}"
            f" FROM {quote(ApiKey._meta.db_table)} k"
            f" LEFT JOIN {quote(Currency._meta.db_table)} c ON 1 = 1"
            f" LEFT JOIN {quote(Balance._meta.db_table)} b ON b.currency_id = c.id AND b.merchant_id = k.merchant_id"
            " WHERE k.public_key = %s ORDER BY c.id",
            [public_key],
        )
        rows = cursor.fetchall()
    if not rows:
        return None, ()
    key = ApiKey.objects.from_api_row(connection, rows[0])
    zero = Decimal(0)
    balances = []
    for row in rows:
        code, type_, amount = reader.convert(connection, row[-3:])
        if code is not None:
            balances.append((code, type_, zero if amount is None else amount))
    return key, tuple(balances)


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

    # No index of their own: every index costs each logged request a write, and its trimming a delete (two fewer:
    # 6.5 → 4.3 µs per row on SQLite; the key's index too: 3.27 → 2.18 µs for a row's insert and trim). The one
    # below serves every read: the log is read per merchant, a key's rows among its merchant's, at most
    # REQUEST_LOG_SIZE and a trim's worth; a key's rows are looked for by key alone only if a key is deleted,
    # which nothing in the application does.
    # No foreign-key constraint in the database either. Its check ran for each row of a batch, twice, all at the
    # commit (Django's constraints are deferred): on PostgreSQL an 800-row batch's commit took 8.0–8.4 ms, against
    # 0.8–0.9 ms without, half of the server's work for the log, taken from the requests in flight
    # (bench/README.md). What the constraints guarded holds without them: a row is written for a key just read,
    # with that key's merchant; keys are never deleted (nothing in the application deletes one) and the keys' own
    # constraint keeps a merchant with keys. A deletion through Django still cascades (merchant) and clears (key):
    # on_delete is Django's, not the database's.
    merchant = models.ForeignKey(
        Merchant, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    api_key = models.ForeignKey(
        ApiKey, null=True, on_delete=models.SET_NULL, related_name="+", db_index=False, db_constraint=False)
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
        ]

    @property
    def accepted(self) -> bool:
        return self.status < 400
