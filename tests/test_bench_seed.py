"""The bench's bulk seeding (bench/seed.py, _bulk) writes the rows Django's bulk_create() writes."""
from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection

from dashboard.models import AuditEvent
from keys.models import ApiKey, KeyStatus
from sandbox.models import ApiRequest

_spec = importlib.util.spec_from_file_location("bench_seed", Path(__file__).resolve().parent.parent / "bench" / "seed.py")
seed = importlib.util.module_from_spec(_spec)
sys.modules["bench_seed"] = seed
_spec.loader.exec_module(seed)


def stored(model) -> list[tuple]:
    """The rows of ``model`` as the database holds them, as text (SQLite compares times as text), in insertion order."""
    fields = [field for field in model._meta.local_concrete_fields if not field.primary_key]
    with connection.cursor() as cursor:
        columns = ", ".join(f"CAST({field.column} AS TEXT)" for field in fields)
        cursor.execute(f"SELECT {columns} FROM {model._meta.db_table} ORDER BY id")
        return cursor.fetchall()


def assert_stored_as_by_the_orm(model, make) -> None:
    """Rows written by ``_bulk`` are the ones Django's bulk_create() writes for the same rows as model instances,
    made twice."""
    by_orm = [model(**vars(row)) for row in make()]
    model.objects.bulk_create(by_orm)
    if model is ApiKey:  # public keys are unique, and a merchant has one active key: the ORM's rows go first
        expected = stored(model)
        model.objects.all().delete()
    else:  # audit events cannot be deleted: both sets of rows stay, side by side
        expected = stored(model) * 2

    assert seed._bulk(model, iter(make())) == len(by_orm)
    assert stored(model) == expected


@pytest.mark.django_db(transaction=True)
def test_keys_of_every_status_are_written_as_django_writes_them(clock, merchant, owner):
    now = datetime(2026, 11, 27, 19, 33, 28, 123456, tzinfo=UTC)
    sealed = {}

    def make():
        made = [seed._key(merchant, owner, status, number, now)
                for number, status in enumerate([KeyStatus.GENERATED, KeyStatus.DEACTIVATED, KeyStatus.ARCHIVED])]
        made.append(seed._key(merchant, None, KeyStatus.ACTIVE, 3, now.replace(microsecond=0)))  # a whole second
        made[-1].allowed_networks = ["198.51.100.0/24", "2001:db8::/32"]
        made[-1].last_used_at, made[-1].last_used_ip = now, "2001:db8::5"
        for number, key in enumerate(made):  # the same keys and secrets both times
            key.public_key, key.encrypted_secret, key.secret_fingerprint = sealed.setdefault(
                number, (key.public_key, key.encrypted_secret, key.secret_fingerprint))
        return made

    assert_stored_as_by_the_orm(ApiKey, make)


@pytest.mark.django_db(transaction=True)
def test_log_rows_and_audit_events_are_written_as_django_writes_them(clock, merchant, owner):
    key = ApiKey(**vars(seed._key(merchant, owner, KeyStatus.DEACTIVATED, 0, datetime(2026, 11, 27, tzinfo=UTC))))
    key.save()
    assert_stored_as_by_the_orm(ApiRequest,
                                lambda: [*seed._log_rows(merchant, key, 5), *seed._log_rows(merchant, None, 2)])
    assert_stored_as_by_the_orm(AuditEvent, lambda: list(seed._events(merchant, owner, 6)))



@pytest.mark.django_db
@pytest.mark.parametrize("model", [ApiKey, ApiRequest, AuditEvent])
def test_a_row_holds_what_the_models_constructor_fills_in(clock, merchant, model):
    given = {"merchant_id": merchant.pk}
    instance = model(**given)
    row = seed._row(model, **given)

    assert vars(row) == {field.attname: getattr(instance, field.attname)
                         for field in model._meta.local_concrete_fields if not field.primary_key}
