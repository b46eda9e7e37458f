from decimal import Decimal

from django.db import migrations

CURRENCIES = [
    # id, code, type, minimum_amount, deposit_fee_percent, withdrawal_fee_percent, precision
    (1, "BTC", "crypto", "0.0001", "0.008", "0", 8),
    (2, "ETH", "crypto", "0.001", "0.008", "0", 8),
    (3, "LTC", "crypto", "0.01", "0.008", "0", 8),
    (4, "USDT", "crypto", "1", "0.008", "0", 6),
    (5, "USDC", "crypto", "1", "0.008", "0", 6),
    (6, "TRX", "crypto", "10", "0.008", "0", 6),
    (7, "EUR", "fiat", "10", "0", "0", 2),
    (8, "USD", "fiat", "10", "0", "0", 2),
]


def add_currencies(apps, schema_editor):
    Currency = apps.get_model("sandbox", "Currency")
    for id_, code, type_, minimum, deposit_fee, withdrawal_fee, precision in CURRENCIES:
        Currency.objects.update_or_create(
            id=id_,
            defaults={
                "code": code, "type": type_, "minimum_amount": Decimal(minimum),
                "deposit_fee_percent": Decimal(deposit_fee), "withdrawal_fee_percent": Decimal(withdrawal_fee),
                "precision": precision,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("sandbox", "0001_initial")]
    operations = [migrations.RunPython(add_currencies, migrations.RunPython.noop)]
