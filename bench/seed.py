"""Data for `make bench`: a merchant whose Owner is signed in, a key with a known secret, and then bulk.

Run by bench/run.py with the bench's environment (DJANGO_DEBUG=0, DATABASE_URL, ...), never against a real
database: it writes users, keys and sessions. One sub-command per step, each printing one JSON object:

    seed.py base        the Owner (TOTP device, signed-in session), the active key, 10 keys in the table
    seed.py keys N      add keys to the bench merchant until the table holds N keys
    seed.py bulk        other merchants' keys up to 100,000, 100,000 request-log rows, 100,000 audit events
    seed.py probe JSON  the SQL queries each measured request runs (django.test.Client, CaptureQueriesContext)
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.db import connection, connections, models, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_otp import DEVICE_ID_SESSION_KEY  # noqa: E402
from django_otp.plugins.otp_totp.models import TOTPDevice  # noqa: E402

from dashboard.db_rows import postgresql_copy_datetime_text, sqlite_datetime_text  # noqa: E402
from dashboard.middleware import LAST_SEEN_KEY, SIGNED_IN_AT_KEY  # noqa: E402
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Membership, Merchant, Role, User  # noqa: E402
from keys import crypto  # noqa: E402
from keys.allowlist import parse_allowlist  # noqa: E402
from keys.models import ApiKey, KeyStatus  # noqa: E402
from keys.secret_store import seal_secret  # noqa: E402
from sandbox.models import REQUEST_LOG_SIZE, ApiRequest, Balance  # noqa: E402

BENCH_SLUG = "bench-merchant"
OWNER_EMAIL = "owner@bench.test"
BATCH = 2000
TOTAL_KEYS = 100_000
LOG_ROWS = 100_000
AUDIT_EVENTS = 100_000
OTHER_MERCHANTS = 99  # with the bench merchant, 100 merchants of 1,000 keys and 1,000 log rows each
# The bench merchant's own keys cycle through these (one active key only: a database constraint).
INACTIVE_STATUSES = [KeyStatus.GENERATED, KeyStatus.DEACTIVATED, KeyStatus.ARCHIVED]


def emit(**values) -> None:
    print(json.dumps(values))


@functools.cache
def _defaults(model) -> tuple[tuple[str, Callable[[], object]], ...]:
    return tuple((field.attname, field.get_default) for field in model._meta.local_concrete_fields
                 if not field.primary_key)


def _row(model, **values) -> SimpleNamespace:
    """A row of ``model`` as its constructor fills one (each field's default, then ``values``, related rows by their
    ids), read by ``_bulk`` by attribute name: 300,000 model instances took a third of the 100,000-row stage's time.
    ``model(**vars(row))`` is the same row as an instance (tests/test_bench_seed.py)."""
    return SimpleNamespace(**{attname: default() for attname, default in _defaults(model) if attname not in values},
                           **values)


def _key(merchant: Merchant, owner: User | None, status: str, number: int, now) -> SimpleNamespace:
    """A key row as the services leave it in ``status``; a sealed secret for those that were ever activated."""
    public_key = crypto.generate_public_key()
    owner_id = owner.pk if owner is not None else None
    key = _row(ApiKey, merchant_id=merchant.pk, public_key=public_key, name=f"key {number}", status=status,
               created_at=now - timedelta(minutes=number), created_by_id=owner_id)
    if status != KeyStatus.GENERATED:
        secret = crypto.generate_secret()
        key.encrypted_secret = seal_secret(public_key, secret)
        key.secret_fingerprint = crypto.fingerprint(secret)
        key.first_activated_at = key.activated_at = key.created_at
        key.activated_by_id = owner_id
    if status in (KeyStatus.DEACTIVATED, KeyStatus.ARCHIVED):
        key.deactivated_at, key.deactivated_by_id = key.created_at, owner_id
    if status == KeyStatus.ARCHIVED:
        key.archived_at, key.archived_by_id = key.created_at, owner_id
    return key


def analyze() -> None:
    """Refresh the planner's statistics, as autovacuum would soon after a real table grew this much.

    Measured right after a bulk load, PostgreSQL still planned for the empty tables: the Activity page's
    newest 51 events took 23 ms by a bitmap scan and sort of all 100,000 instead of 0.04 ms by its index.
    """
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _bulk(model, rows) -> int:
    """Insert ``rows`` of ``model`` (``_row``) as bulk_create() would, without reading back their ids.

    One INSERT run with executemany() (COPY on PostgreSQL): bulk_create() spent about half of the seeding's
    35–50 s compiling SQL for each batch."""
    fields = [field for field in model._meta.local_concrete_fields if not field.primary_key]
    # The connection itself: through django.db.connection each of the many uses below went through a proxy (14 %
    # of the seeding's time).
    database = connections[model.objects.db]
    quote = database.ops.quote_name
    target = f"{quote(model._meta.db_table)} ({', '.join(quote(field.column) for field in fields)})"
    columns = [(field.attname, column_value(field, database)) for field in fields]
    count = 0
    rows = iter(rows)
    with database.cursor() as cursor:
        while batch := list(itertools.islice(rows, BATCH)):
            values = [[value(getattr(row, attname)) for attname, value in columns] for row in batch]
            if database.vendor == "postgresql":  # COPY: executemany() waited on the server for about half its 50 s
                with cursor.copy(f"COPY {target} FROM STDIN") as copy:
                    for row_values in values:
                        copy.write_row(row_values)
            else:
                cursor.executemany(f"INSERT INTO {target} VALUES ({', '.join(['%s'] * len(fields))})", values)
            count += len(batch)
    return count


def column_value(field, database) -> Callable[[object], object]:
    """What ``field.get_db_prep_save(field.pre_save(row, True), database)`` makes of a row's value, as _bulk writes
    it: through Django for most fields, directly for times and foreign keys, the costliest that way (the 100,000-row
    stage took 31 → 22 s on SQLite and 38 → 32 s on PostgreSQL in the bench's runs). No field of the seeded models
    sets itself on save (auto_now), so ``pre_save`` is the attribute; tests/test_bench_seed.py compares the two for
    rows of every kind seeded."""
    if isinstance(field, models.DateTimeField) and not (field.auto_now or field.auto_now_add):
        if database.vendor == "postgresql":
            text = postgresql_copy_datetime_text
        elif database.vendor == "sqlite":
            zone = database.timezone
            def text(moment):
                return sqlite_datetime_text(moment, zone)
        else:
            return functools.partial(field.get_db_prep_save, connection=database)
        return lambda moment: None if moment is None else text(moment)
    if isinstance(field, models.ForeignKey) and isinstance(field.target_field, models.AutoField):
        return lambda key: key  # the id in the row's attname: an int or None, written as it is
    prepared = functools.partial(field.get_db_prep_save, connection=database)
    if type(field) in _WRITTEN_AS_THEY_ARE:
        # Their own type in, the same value out (to_python, then the database's plain adapter): through Django,
        # 5 µs a value, a quarter of the seeding.
        kind = _WRITTEN_AS_THEY_ARE[type(field)]
        return lambda value: value if type(value) is kind or value is None else prepared(value)
    return prepared


# Fields whose get_db_prep_save() returns a value of this type as it is, on every database this project runs on.
_WRITTEN_AS_THEY_ARE = {models.CharField: str, models.TextField: str, models.SlugField: str,
                        models.PositiveSmallIntegerField: int, models.IntegerField: int}


def _inactive_keys(merchant: Merchant, owner: User | None, count: int, start: int):
    now = timezone.now()
    for number in range(start, start + count):
        yield _key(merchant, owner, INACTIVE_STATUSES[number % len(INACTIVE_STATUSES)], number, now)


@transaction.atomic
def base() -> None:
    merchant = Merchant.objects.create(name="Bench Merchant", slug=BENCH_SLUG)
    owner = User.objects.create_user(email=OWNER_EMAIL, password=secrets.token_urlsafe(24), full_name="Bench Owner",
                                     last_merchant=merchant)
    device = TOTPDevice.objects.create(user=owner, name="Authenticator app", confirmed=True)
    Membership.objects.create(user=owner, merchant=merchant, role=Role.OWNER)
    for currency_id, amount in {1: "0.04", 2: "1.25", 4: "1500"}.items():
        Balance.objects.create(merchant=merchant, currency_id=currency_id, amount=amount)

    # The one active key, with a secret the load generator signs with; the allowlist admits 127.0.0.1.
    secret = crypto.generate_secret()
    active = ApiKey(**vars(_key(merchant, owner, KeyStatus.ACTIVE, 0, timezone.now())))
    active.encrypted_secret = seal_secret(active.public_key, secret)
    active.secret_fingerprint = crypto.fingerprint(secret)
    active.allowed_networks = list(parse_allowlist("198.51.100.0/24, 127.0.0.1, ::1").entries)
    active.save()
    _bulk(ApiKey, _inactive_keys(merchant, owner, 9, start=1))
    _bulk(AuditEvent, _events(merchant, owner, 10))

    # A session as after both factors (password, then the authenticator's code): what the test helper
    # sign_in_verified() builds, plus the clocks dashboard.middleware.SessionExpiryMiddleware keeps.
    session = SessionStore()
    session[SESSION_KEY] = owner._meta.pk.value_to_string(owner)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = owner.get_session_auth_hash()
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session[SIGNED_IN_AT_KEY] = session[LAST_SEEN_KEY] = time.time()
    session.create()

    unknown = crypto.generate_public_key()  # well-formed, so it costs the lookup, and in no row
    database = connection.settings_dict
    options = {name: database["OPTIONS"][name] for name in ("init_command", "transaction_mode", "timeout")
               if name in database["OPTIONS"]}  # never the whole dict: it may hold credentials
    emit(merchant_slug=BENCH_SLUG, public_key=active.public_key, secret=secret, unknown_key=unknown,
         session_key=session.session_key, keys=ApiKey.objects.count(),
         database_settings={"CONN_MAX_AGE": database["CONN_MAX_AGE"],
                            "CONN_HEALTH_CHECKS": database["CONN_HEALTH_CHECKS"], "OPTIONS": options})


@transaction.atomic
def keys(total: int) -> None:
    merchant = Merchant.objects.get(slug=BENCH_SLUG)
    owner = User.objects.get(email=OWNER_EMAIL)
    have = ApiKey.objects.count()
    _bulk(ApiKey, _inactive_keys(merchant, owner, max(0, total - have), start=have))
    analyze()
    emit(keys=ApiKey.objects.count(), merchant_keys=ApiKey.objects.filter(merchant=merchant).count())


def _events(merchant: Merchant, actor: User, count: int):
    actions = [AuditAction.KEY_GENERATED, AuditAction.KEY_RENAMED, AuditAction.SIGN_IN, AuditAction.OTP_FAILED,
               AuditAction.KEY_ALLOWLIST_CHANGED]
    now = timezone.now()
    for number in range(count):
        action = actions[number % len(actions)]
        yield _row(
            AuditEvent, merchant_id=merchant.pk, actor_id=actor.pk, actor_email=actor.email, action=action,
            outcome=AuditOutcome.REFUSED if action == AuditAction.OTP_FAILED else AuditOutcome.SUCCEEDED,
            target=f"api_key:sbx_{number:040x}", ip_address="198.51.100.7", user_agent="bench",
            created_at=now - timedelta(seconds=number), details={"n": number},
        )


def _log_rows(merchant: Merchant, key: ApiKey | None, count: int):
    now = timezone.now()
    for number in range(count):
        refused = number % 4 == 0
        yield _row(ApiRequest, merchant_id=merchant.pk, api_key_id=key.pk if key is not None else None,
                   created_at=now - timedelta(seconds=number), ip_address="198.51.100.7", method="POST",
                   path="/api/v2/accounts/list", status=403 if refused else 200,
                   error_code="bad_header_signature" if refused else "")


def bulk() -> None:
    """Other merchants' keys up to TOTAL_KEYS, LOG_ROWS request-log rows, AUDIT_EVENTS audit events."""
    started = time.monotonic()
    merchant = Merchant.objects.get(slug=BENCH_SLUG)
    owner = User.objects.get(email=OWNER_EMAIL)
    now = timezone.now()
    with transaction.atomic():
        others = Merchant.objects.bulk_create(
            Merchant(name=f"Other Merchant {n}", slug=f"other-merchant-{n}") for n in range(OTHER_MERCHANTS)
        )
        if connection.vendor != "postgresql":  # bulk_create sets primary keys only on PostgreSQL (and SQLite 3.35+)
            others = list(Merchant.objects.filter(slug__startswith="other-merchant-"))
        missing = TOTAL_KEYS - ApiKey.objects.count()
        per_merchant, extra = divmod(missing, len(others))

        def other_keys():
            for index, other in enumerate(others):
                count = per_merchant + (1 if index < extra else 0)
                yield _key(other, None, KeyStatus.ACTIVE, 0, now)  # each other merchant has a live key too
                yield from _inactive_keys(other, None, count - 1, start=1)

        _bulk(ApiKey, other_keys())
    with transaction.atomic():
        merchants = [merchant, *others]
        per_merchant = LOG_ROWS // len(merchants)
        first_keys = {k.merchant_id: k for k in ApiKey.objects.filter(status=KeyStatus.ACTIVE)}
        _bulk(ApiRequest, itertools.chain.from_iterable(
            _log_rows(m, first_keys.get(m.pk), per_merchant) for m in merchants
        ))
    with transaction.atomic():
        _bulk(AuditEvent, _events(merchant, owner, AUDIT_EVENTS))
    analyze()
    emit(keys=ApiKey.objects.count(), merchant_keys=ApiKey.objects.filter(merchant=merchant).count(),
         log_rows=ApiRequest.objects.count(), merchant_log_rows=ApiRequest.objects.filter(merchant=merchant).count(),
         audit_events=AuditEvent.objects.count(),
         merchant_audit_events=AuditEvent.objects.filter(merchant=merchant).count(),
         request_log_size=REQUEST_LOG_SIZE, seconds=round(time.monotonic() - started, 1))


def probe(cases_json: str) -> None:
    """Count the SQL queries of each case's request, as the second of two (the first settles one-off writes)."""
    cases = json.loads(cases_json)
    client = Client(HTTP_HOST="127.0.0.1", REMOTE_ADDR="127.0.0.1", raise_request_exception=False)
    counts = {}
    for case in cases:
        headers = {name.lower(): value for name, value in case.get("headers", {}).items()}
        if "cookie" in headers:
            name, _, value = headers.pop("cookie").partition("=")
            client.cookies[name] = value
        extra = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()
                 if name != "content-type"}
        kwargs = {"content_type": headers["content-type"]} if "content-type" in headers else {}

        def send():
            if case["method"] == "POST":
                return client.post(case["path"], data=case.get("body", "").encode(), **kwargs, **extra)
            return client.get(case["path"], **extra)

        send()
        with CaptureQueriesContext(connection) as queries:
            response = send()
        client.cookies.clear()
        counts[case["name"]] = {
            "status": response.status_code,
            "queries": len(queries.captured_queries),
            "sql": [query["sql"][:160] for query in queries.captured_queries],
        }
    emit(**counts)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"base": base, "keys": lambda: keys(int(args[0])), "bulk": bulk, "probe": lambda: probe(args[0])}[command]()
