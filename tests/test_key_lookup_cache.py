"""The API's kept key lookups (sandbox/key_lookup_cache.py): served again without a query, and never once the
database has changed, whoever changed it; never kept inside a transaction, nor while the database cannot say.

These tests need committed data, so they run outside the test's transaction (transactional_db)."""
from __future__ import annotations

import os
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from django.db import connection, connections
from django.test import RequestFactory
from django.utils import timezone

from keys.models import ApiKey, KeyStatus
from sandbox import key_lookup_cache
from sandbox.authentication import find_key
from sandbox.models import Balance, Currency

from . import helpers
from .sandbox_support import UNKNOWN_KEY, api, assert_accepted, assert_error, deactivate

pytestmark = pytest.mark.django_db(transaction=True)

on_postgresql = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's LISTEN/NOTIFY")
on_sqlite = pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite's WAL index")


@pytest.fixture(autouse=True)
def nothing_kept():
    key_lookup_cache._kept.by_alias.clear()
    helpers.seed_currencies()
    yield
    key_lookup_cache._kept.by_alias.clear()


def lookup(public_key: str, *, with_balances: bool = False):
    request = RequestFactory().post("/api/v2/accounts/list", HTTP_X_PROCESSING_KEY=public_key)
    return find_key(request, with_balances=with_balances)


def commit_elsewhere(sql: str, params: list) -> None:
    """Commit ``sql`` on another connection, as another worker process would."""
    if connection.vendor == "postgresql":
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
            other.execute(sql, params)
        return

    def write():
        try:
            with connections["default"].cursor() as cursor:  # this thread's own connection
                cursor.execute(sql, params)
        finally:
            connections.close_all()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()


def seen_within(seconds: float, check) -> bool:
    """Whether ``check()`` holds within ``seconds``: another process's commit reaches PostgreSQL's listeners
    a moment after its COMMIT returns."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
    return True


def test_a_key_looked_up_once_is_served_again_without_a_query(key_pair, django_assert_num_queries):
    with django_assert_num_queries(1):
        first, balances = lookup(key_pair.public_key, with_balances=True)
    with django_assert_num_queries(0):
        again, balances_again = lookup(key_pair.public_key, with_balances=True)
    assert again.pk == first.pk == key_pair.key.pk
    assert balances_again == balances
    # The lookup without balances is another answer, kept apart.
    with django_assert_num_queries(1):
        key, none = lookup(key_pair.public_key)
    assert (key.pk, none) == (key_pair.key.pk, ())


def test_a_key_deactivated_in_this_process_is_refused_from_the_next_request(client, clock, owner, merchant, key_pair):
    assert_accepted(api(client, pair=key_pair))
    deactivate(clock, owner, merchant, key_pair)
    assert_error(api(client, pair=key_pair), "bad_header_key")


def test_a_key_deactivated_by_another_process_is_refused(client, key_pair):
    assert_accepted(api(client, pair=key_pair))
    commit_elsewhere(f"UPDATE {ApiKey._meta.db_table} SET status = %s WHERE id = %s",
                     [KeyStatus.DEACTIVATED, key_pair.key.pk])
    assert seen_within(1.0, lambda: lookup(key_pair.public_key)[0].status == KeyStatus.DEACTIVATED)
    assert_error(api(client, pair=key_pair), "bad_header_key")


def test_an_unknown_key_is_kept_as_unknown_until_a_key_is_added(merchant, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert lookup(UNKNOWN_KEY) == (None, ())
    with django_assert_num_queries(0):
        assert lookup(UNKNOWN_KEY) == (None, ())
    ApiKey.objects.create(merchant=merchant, public_key=UNKNOWN_KEY, status=KeyStatus.GENERATED)
    key, _ = lookup(UNKNOWN_KEY)
    assert key is not None and key.status == KeyStatus.GENERATED


def test_a_balance_changed_elsewhere_is_in_the_next_answer(client, merchant, key_pair):
    before = {row["currency"]: row["balance"] for row in assert_accepted(api(client, pair=key_pair))["data"]}
    assert before["BTC"] == "0"
    btc = Currency.objects.get(code="BTC")
    commit_elsewhere(f"INSERT INTO {Balance._meta.db_table} (merchant_id, currency_id, amount) VALUES (%s, %s, %s)",
                     [merchant.pk, btc.pk, "0.5"])

    def btc_balance():
        return dict((code, amount) for code, _, amount in lookup(key_pair.public_key, with_balances=True)[1])["BTC"]

    assert seen_within(1.0, lambda: btc_balance() == Decimal("0.5"))
    after = {row["currency"]: row["balance"] for row in assert_accepted(api(client, pair=key_pair))["data"]}
    assert after["BTC"] == "0.5"


def test_a_key_changed_in_this_process_by_any_means_is_read_again(key_pair):
    """Not only the services: the admin, a shell or a data migration may write the row."""
    lookup(key_pair.public_key)
    ApiKey.objects.filter(pk=key_pair.key.pk).update(allowed_networks=["192.0.2.0/24"])
    assert lookup(key_pair.public_key)[0].allowed_networks == ["192.0.2.0/24"]
    ApiKey.objects.filter(pk=key_pair.key.pk).delete()
    assert lookup(key_pair.public_key) == (None, ())


def test_inside_a_transaction_every_lookup_reads_the_database(key_pair, django_assert_num_queries):
    from django.db import transaction

    lookup(key_pair.public_key)
    with transaction.atomic():
        with django_assert_num_queries(2):
            lookup(key_pair.public_key)
            lookup(key_pair.public_key)
        # Its own uncommitted change is what a lookup inside it sees, and what is rolled back is never kept.
        ApiKey.objects.filter(pk=key_pair.key.pk).update(status=KeyStatus.DEACTIVATED)
        assert lookup(key_pair.public_key)[0].status == KeyStatus.DEACTIVATED
        transaction.set_rollback(True)
    assert lookup(key_pair.public_key)[0].status == KeyStatus.ACTIVE


def test_with_autocommit_turned_off_nothing_is_kept_and_a_rollback_is_never_served(key_pair):
    from django.db import transaction

    lookup(key_pair.public_key)
    transaction.set_autocommit(False)
    try:
        ApiKey.objects.filter(pk=key_pair.key.pk).update(allowed_networks=["192.0.2.0/24"])
        assert lookup(key_pair.public_key)[0].allowed_networks == ["192.0.2.0/24"]
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)
    assert lookup(key_pair.public_key)[0].allowed_networks == []


def test_a_forked_process_starts_with_nothing_kept_and_knows_its_own_id(key_pair):
    lookup(key_pair.public_key)
    assert key_lookup_cache._kept.by_alias
    pid = os.fork()
    if pid == 0:
        os._exit(0 if not key_lookup_cache._kept.by_alias and key_lookup_cache._process_id == os.getpid() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_with_the_setting_off_every_lookup_reads_the_database(settings, key_pair, django_assert_num_queries):
    settings.SANDBOX_KEEP_KEY_LOOKUPS = False
    with django_assert_num_queries(2):
        lookup(key_pair.public_key)
        lookup(key_pair.public_key)


def test_kept_answers_are_bounded(monkeypatch, merchant):
    monkeypatch.setattr(key_lookup_cache, "MAX_ANSWERS", 3)
    for n in range(10):
        lookup("sbx_" + f"{n:040x}")
        assert len(key_lookup_cache._kept.by_alias["default"][1]) <= 3


@on_sqlite
def test_an_in_memory_sqlite_database_keeps_nothing():
    in_memory = connections["default"].__class__({**connection.settings_dict, "NAME": ":memory:"}, alias="in-memory")
    try:
        assert key_lookup_cache.change_token(in_memory) is None
    finally:
        in_memory.close()


@on_sqlite
def test_on_sqlite_the_token_moves_with_other_commits_and_own_writes(key_pair):
    before = key_lookup_cache.change_token(connection)
    assert key_lookup_cache.change_token(connection) == before
    ApiKey.objects.filter(pk=key_pair.key.pk).update(name="renamed here")
    after_own = key_lookup_cache.change_token(connection)
    assert after_own != before
    commit_elsewhere(f"UPDATE {ApiKey._meta.db_table} SET name = %s WHERE id = %s", ["renamed there", key_pair.key.pk])
    assert key_lookup_cache.change_token(connection) != after_own


def commit_outside_django(sql: str, params: list) -> None:
    """Commit on a connection of the sqlite3 module itself, as the sqlite3 shell or another program would."""
    import sqlite3

    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=20)
    try:
        other.execute(sql, params)
    finally:
        other.close()


@on_sqlite
def test_on_sqlite_the_token_comes_from_the_wal_index_without_a_query(key_pair, django_assert_num_queries):
    token = key_lookup_cache.change_token(connection)
    assert key_lookup_cache.wal_index_header("default", connection.connection, connection.settings_dict["NAME"])
    assert token == (connection.connection, token[1]) and len(token[1]) == key_lookup_cache.WalIndexHeader.SIZE
    with django_assert_num_queries(0):
        assert key_lookup_cache.change_token(connection) == token


@on_sqlite
def test_on_sqlite_commits_elsewhere_are_seen_by_the_very_next_lookup(key_pair):
    """Another Django connection's commit, one from outside Django, and one after a checkpoint."""
    lookup(key_pair.public_key)
    commit_elsewhere(f"UPDATE {ApiKey._meta.db_table} SET status = %s WHERE id = %s",
                     [KeyStatus.DEACTIVATED, key_pair.key.pk])
    assert lookup(key_pair.public_key)[0].status == KeyStatus.DEACTIVATED

    commit_outside_django(f"UPDATE {ApiKey._meta.db_table} SET status = ? WHERE id = ?",
                          [KeyStatus.GENERATED, key_pair.key.pk])
    assert lookup(key_pair.public_key)[0].status == KeyStatus.GENERATED

    # A checkpoint that empties the log: the next commit writes its frames from the start of the file again.
    commit_outside_django("PRAGMA wal_checkpoint(TRUNCATE)", [])
    lookup(key_pair.public_key)
    commit_outside_django(f"UPDATE {ApiKey._meta.db_table} SET status = ? WHERE id = ?",
                          [KeyStatus.ACTIVE, key_pair.key.pk])
    assert lookup(key_pair.public_key)[0].status == KeyStatus.ACTIVE


@on_sqlite
def test_on_sqlite_a_header_caught_mid_commit_keeps_nothing(key_pair, monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(key_lookup_cache.WalIndexHeader, "read", lambda self: None)
    lookup(key_pair.public_key)
    with django_assert_num_queries(1):
        lookup(key_pair.public_key)


@on_sqlite
def test_on_sqlite_a_database_not_in_wal_mode_is_asked_for_its_data_version(tmp_path):
    import sqlite3

    name = str(tmp_path / "rollback-journal.sqlite3")
    other = sqlite3.connect(name, isolation_level=None)
    other.execute("CREATE TABLE t (x)")
    settings = {**connection.settings_dict, "NAME": name, "OPTIONS": {}}
    rollback_journal = connections["default"].__class__(settings, alias="rollback-journal")
    try:
        before = key_lookup_cache.change_token(rollback_journal)
        assert key_lookup_cache.change_token(rollback_journal) == before
        assert key_lookup_cache._kept.headers["rollback-journal"][1] is None
        other.execute("INSERT INTO t VALUES (1)")
        assert key_lookup_cache.change_token(rollback_journal) != before
    finally:
        rollback_journal.close()
        other.close()


def listener():
    found = key_lookup_cache.change_listener("default")
    assert found is not None, "the test's first connection started this process's listener"
    assert found.wait_until_listening(5)
    return found


@pytest.fixture
def another_worker():
    """A listener as another worker process has one: its own thread and connection."""
    other = key_lookup_cache.ChangeListener("default", connection.get_connection_params())
    assert other.wait_until_listening(5)
    yield other
    other.close()


@on_postgresql
def test_on_postgresql_a_commit_returns_only_once_every_worker_has_heard_it(key_pair, another_worker):
    for n in range(30):
        before = another_worker.generation(), listener().generation()
        ApiKey.objects.filter(pk=key_pair.key.pk).update(allowed_networks=[f"192.0.2.{n}"])
        # No waiting here: the UPDATE's COMMIT waited for both acknowledgements.
        assert another_worker.generation() not in (None, before[0])
        assert listener().generation() not in (None, before[1])


@on_postgresql
def test_on_postgresql_a_key_deactivated_here_is_refused_by_another_worker_at_once(
    client, clock, owner, merchant, key_pair, another_worker
):
    assert_accepted(api(client, pair=key_pair))
    kept_under = another_worker.generation()
    deactivate(clock, owner, merchant, key_pair)
    assert another_worker.generation() not in (None, kept_under)


@on_postgresql
def test_on_postgresql_a_listener_that_never_acknowledges_delays_a_commit_only_so_long(
    monkeypatch, caplog, key_pair
):
    monkeypatch.setattr(key_lookup_cache, "ACK_TIMEOUT_SECONDS", 0.3)
    silent = psycopg.connect(**connection.get_connection_params(), autocommit=True,
                             application_name=key_lookup_cache.LISTENER_APPLICATION_NAME)
    silent_pid = silent.info.backend_pid
    try:
        silent.execute(f"LISTEN {key_lookup_cache.CHANGES_CHANNEL}")
        started = time.monotonic()
        ApiKey.objects.filter(pk=key_pair.key.pk).update(allowed_networks=["192.0.2.1"])
        waited = time.monotonic() - started
    finally:
        silent.close()
    assert 0.3 <= waited < 2
    assert ApiKey.objects.get(pk=key_pair.key.pk).allowed_networks == ["192.0.2.1"]
    assert f"not confirmed by listener(s) [{silent_pid}]" in caplog.text


@on_postgresql
def test_on_postgresql_when_its_own_listener_is_down_a_commit_waits_the_full_timeout(monkeypatch, caplog, key_pair):
    monkeypatch.setattr(key_lookup_cache, "ACK_TIMEOUT_SECONDS", 0.3)
    listener().close()
    try:
        started = time.monotonic()
        ApiKey.objects.filter(pk=key_pair.key.pk).update(allowed_networks=["192.0.2.1"])
        assert time.monotonic() - started >= 0.3
        assert "not confirmed by listener(s) (not counted)" in caplog.text
    finally:
        key_lookup_cache.start_listener("default", connection.get_connection_params())
    assert listener().is_running()


@on_postgresql
def test_on_postgresql_a_key_used_is_not_a_change_the_workers_must_hear(key_pair, another_worker):
    before = another_worker.generation()
    ApiKey.objects.filter(pk=key_pair.key.pk).update(last_used_at=timezone.now(), last_used_ip="192.0.2.1")
    time.sleep(0.05)
    assert another_worker.generation() == before
    ApiKey.objects.filter(pk=key_pair.key.pk).update(allowed_networks=["192.0.2.0/24"])
    assert another_worker.generation() != before


@on_postgresql
def test_on_postgresql_the_listener_survives_an_unexpected_error(monkeypatch, caplog, key_pair):
    ear = listener()
    failing = {"left": 1}
    count_listeners = ear._count_listeners

    def fail_once(connection_):
        if failing["left"]:
            failing["left"] -= 1
            raise ValueError("unexpected")
        count_listeners(connection_)

    monkeypatch.setattr(ear, "_count_listeners", fail_once)
    ApiKey.objects.filter(pk=key_pair.key.pk).update(allowed_networks=["192.0.2.1"])
    assert "listening for API data changes failed" in caplog.text
    assert seen_within(5.0, lambda: ear.generation() is not None)
    assert ear.is_running()
    before = ear.generation()
    ApiKey.objects.filter(pk=key_pair.key.pk).update(allowed_networks=["192.0.2.2"])
    assert ear.generation() != before


def test_a_key_kept_from_before_its_last_use_was_written_is_not_written_again(key_pair, django_assert_num_queries):
    from sandbox.request_log import mark_used

    key, _ = lookup(key_pair.public_key)
    with django_assert_num_queries(1):
        mark_used(key, "192.0.2.1", timezone.now())
    with django_assert_num_queries(0):
        mark_used(key, "192.0.2.1", timezone.now())  # the same object, its last_used_at as read before


@on_postgresql
def test_on_postgresql_a_lost_listening_connection_is_replaced_and_nothing_kept_before_is_used(
    monkeypatch, key_pair, django_assert_num_queries
):
    monkeypatch.setattr(key_lookup_cache, "LISTEN_RETRY_SECONDS", 0.05)
    ear = listener()
    lookup(key_pair.public_key)
    backend_pid = ear._backend_pid
    commit_elsewhere("SELECT pg_terminate_backend(%s)", [backend_pid])
    assert seen_within(5.0, lambda: ear._backend_pid not in (None, backend_pid) and ear.generation() is not None)
    # Changes made while it was gone went unheard: what was kept before is read again.
    with django_assert_num_queries(1):
        lookup(key_pair.public_key)
    with django_assert_num_queries(0):
        lookup(key_pair.public_key)


@on_postgresql
def test_on_postgresql_while_it_cannot_listen_every_lookup_reads_the_database(
    monkeypatch, key_pair, django_assert_num_queries
):
    def refuse(*args, **kwargs):
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(key_lookup_cache.psycopg, "connect", refuse)
    deaf = key_lookup_cache.ChangeListener("default", connection.get_connection_params())
    monkeypatch.setitem(key_lookup_cache._listeners, "default", deaf)
    try:
        assert not deaf.wait_until_listening(0.2)
        with django_assert_num_queries(2):
            lookup(key_pair.public_key)
            lookup(key_pair.public_key)
    finally:
        deaf.close()


@on_postgresql
def test_on_postgresql_answers_are_kept_only_while_the_listener_is_known_to_be_alive(
    key_pair, django_assert_num_queries
):
    ear = listener()
    lookup(key_pair.public_key)
    ear._alive_until = 0.0  # as if its thread had not heard from the database for SILENCE_SECONDS
    with django_assert_num_queries(1):
        lookup(key_pair.public_key)
    # A quiet database is asked for a sign of life every PING_SECONDS, so the listener stays alive.
    assert seen_within(2.0, lambda: ear.generation() is not None)
    time.sleep(3 * key_lookup_cache.PING_SECONDS)
    assert ear.generation() is not None


@on_postgresql
def test_on_postgresql_a_forked_process_listens_on_a_connection_of_its_own(monkeypatch):
    parents = listener()
    parents_token = parents.generation()
    monkeypatch.setattr(key_lookup_cache, "_listeners", {"default": parents})
    monkeypatch.setattr(key_lookup_cache, "_inherited", [])
    monkeypatch.setattr(key_lookup_cache, "_process_id", parents.pid + 1)  # as _forget_after_fork sets it
    assert key_lookup_cache.change_listener("default") is None
    childs = key_lookup_cache.start_listener("default", connection.get_connection_params())
    try:
        assert childs is not parents and childs.pid == parents.pid + 1
        # Numbers are never handed out twice: nothing the parent kept can pass for the child's.
        assert childs.generation() > parents_token
        # The parent's is kept, not collected: collecting it would close the parent's session.
        assert parents in key_lookup_cache._inherited
    finally:
        childs.close()


@on_postgresql
def test_on_postgresql_the_three_tables_notify_their_changes():
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE %s ORDER BY 1",
                       ["%_notify_api_data"])
        tables = [row[0] for row in cursor.fetchall()]
    assert tables == sorted([ApiKey._meta.db_table, Balance._meta.db_table, Currency._meta.db_table])


def test_each_thread_looks_keys_up_on_its_own_django_connection(key_pair):
    seen = {}

    def look_up_in_a_thread():
        try:
            seen["answer"] = lookup(key_pair.public_key)[0]
            seen["kept"] = key_lookup_cache.thread_connection("default")
            seen["django's"] = connections["default"]
        finally:
            connections.close_all()

    thread = threading.Thread(target=look_up_in_a_thread)
    thread.start()
    thread.join()

    assert seen["answer"].public_key == key_pair.public_key
    assert seen["kept"] is seen["django's"]
    assert seen["kept"] is not connections["default"]
    assert key_lookup_cache.thread_connection("default") is connections["default"]
