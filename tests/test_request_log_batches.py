"""The request log as production writes it: in batches, by a background thread, never by the request.

The rest of the suite runs with SANDBOX_REQUEST_LOG_FLUSH_SECONDS = 0 (each row written before the answer);
here the batched writer is on, with the process's writer emptied before and after each test. Time is the
writer's monotonic clock, replaced by a counter the test moves. The gunicorn test in
test_production_server.py checks the same path across real worker processes and their shutdown.
"""
from __future__ import annotations

import gc
import logging
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import hypothesis
import pytest
from django.db import DatabaseError, IntegrityError, connection
from django.db.utils import ConnectionHandler
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from dashboard.db_rows import postgresql_copy_datetime_text, sqlite_datetime_text
from sandbox import request_log
from sandbox.models import ApiRequest

from . import helpers
from .sandbox_support import ALLOWED_IP, api, assert_accepted, assert_error

INTERVAL = 1.0


class FakeMonotonic:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def writer(monkeypatch):
    clock = FakeMonotonic()
    monkeypatch.setattr(request_log, "monotonic", clock)
    request_log.writer._forget()
    with override_settings(SANDBOX_REQUEST_LOG_FLUSH_SECONDS=INTERVAL, SANDBOX_REQUEST_LOG_BATCH_SIZE=5):
        yield request_log.writer, clock
    request_log.writer._forget()


def no_writer_thread(monkeypatch):
    """Keep the writer thread from starting: the test wakes it up itself (``write_if_due``)."""
    monkeypatch.setattr(request_log.writer, "_start_writer", lambda: None)


def logged(merchant) -> list[tuple]:
    return list(ApiRequest.objects.for_merchant(merchant).order_by("id").values_list("status", "error_code", "api_key_id"))


def batch_of(merchant, key, statuses) -> list[request_log.LoggedRequest]:
    return [request_log.LoggedRequest(merchant.pk, key.pk, key.created_at, None, "POST", "/api/v2/accounts/list",
                                      status, "") for status in statuses]


def test_requests_are_held_until_a_batch_is_due_then_written_in_order(client, clock, key_pair, merchant, writer,
                                                                      monkeypatch):
    batch, fake_time = writer
    no_writer_thread(monkeypatch)

    assert_accepted(api(client, pair=key_pair))
    assert_error(api(client, pair=key_pair, signature="0" * 128), "bad_header_signature")
    batch.write_if_due()

    assert logged(merchant) == []
    assert batch.pending() == 2 and not batch.is_due()

    fake_time.now += INTERVAL
    assert_accepted(api(client, pair=key_pair))
    batch.write_if_due()

    assert batch.pending() == 0
    assert logged(merchant) == [(200, "", key_pair.key.pk), (403, "bad_header_signature", key_pair.key.pk),
                                (200, "", key_pair.key.pk)]


def test_a_full_batch_is_due_whatever_its_age_and_wakes_the_thread(client, clock, key_pair, merchant, writer,
                                                                   monkeypatch):
    batch, _ = writer
    no_writer_thread(monkeypatch)

    for _ in range(4):
        assert_accepted(api(client, pair=key_pair))
    assert not batch.is_due() and not batch._wake.is_set()

    assert_accepted(api(client, pair=key_pair))  # the fifth: SANDBOX_REQUEST_LOG_BATCH_SIZE

    assert batch.is_due() and batch._wake.is_set()
    batch.write_if_due()
    assert len(logged(merchant)) == 5 and batch.pending() == 0


def test_the_answer_does_not_wait_for_the_log(client, clock, key_pair, merchant, writer, monkeypatch,
                                              django_assert_max_num_queries):
    no_writer_thread(monkeypatch)
    api(client, pair=key_pair)  # "last used" written once, now fresh

    # The key with its merchant's balances, in one query; no INSERT: the row waits in the batch.
    with django_assert_max_num_queries(1) as captured:
        assert_accepted(api(client, pair=key_pair))
    assert not any(query["sql"].startswith("INSERT") for query in captured.captured_queries)


def test_rows_the_database_refuses_are_kept_and_written_by_the_next_flush(key_pair, merchant, writer, monkeypatch,
                                                                          caplog):
    batch, _ = writer
    no_writer_thread(monkeypatch)
    row = request_log.LoggedRequest(merchant.pk, key_pair.key.pk, key_pair.key.created_at, ALLOWED_IP, "POST",
                                    "/api/v2/accounts/list", 200, "")
    batch.add(row)
    real_insert = request_log.insert_rows

    def unreachable(rows):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(request_log, "insert_rows", unreachable)
    with caplog.at_level(logging.ERROR, logger="sandbox.request_log"):
        assert batch.flush() == 0
    assert batch.pending() == 1 and logged(merchant) == []
    assert "could not write 1 request-log rows" in caplog.text

    monkeypatch.setattr(request_log, "insert_rows", real_insert)
    assert batch.flush() == 1
    assert logged(merchant) == [(200, "", key_pair.key.pk)]


def test_pending_rows_are_capped_while_the_database_refuses_them(key_pair, merchant, writer, monkeypatch, caplog):
    batch, _ = writer
    no_writer_thread(monkeypatch)
    monkeypatch.setattr(request_log, "MAX_PENDING_ROWS", 3)
    monkeypatch.setattr(request_log, "insert_rows", lambda rows: (_ for _ in ()).throw(DatabaseError("down")))
    for row in batch_of(merchant, key_pair.key, [200, 201, 202, 203, 204]):
        batch.add(row)

    with caplog.at_level(logging.ERROR, logger="sandbox.request_log"):
        batch.flush()

    assert [row.status for row in batch._pending] == [202, 203, 204]
    assert "dropped the 2 oldest request-log rows" in caplog.text


def test_on_postgresql_the_request_thread_formats_the_row_for_copy(client, clock, key_pair, merchant, writer,
                                                                    monkeypatch):
    """The writer thread only sends what the requests made (insert_rows), on SQLite there is nothing to make."""
    batch, _ = writer
    no_writer_thread(monkeypatch)
    assert_accepted(api(client, pair=key_pair))

    (row,) = batch._pending
    line = request_log.LoggedRequest(*row).copy_line
    if connection.vendor == "postgresql":
        assert line == request_log.copy_line(row)
        assert line.startswith(f"{merchant.pk}\t{key_pair.key.pk}\t")
    else:
        assert line == ""
    batch.flush()
    assert logged(merchant) == [(200, "", key_pair.key.pk)]


def test_rows_waiting_for_their_batch_are_not_left_to_the_garbage_collectors_oldest_generation(
        client, clock, key_pair, merchant, writer, monkeypatch):
    """Untracked at the first collection: tracked, every batch's rows reached the oldest generation and set off
    full collections of the whole process."""
    batch, _ = writer
    no_writer_thread(monkeypatch)
    assert_accepted(api(client, pair=key_pair))
    assert_error(api(client, pair=key_pair, signature="0" * 128), "bad_header_signature")

    gc.collect()
    assert len(batch._pending) == 2
    assert not any(gc.is_tracked(row) for row in batch._pending)


def test_copy_text_escapes_what_the_format_reads_as_separators():
    row = request_log.LoggedRequest(7, None, datetime(2026, 11, 28, 9, 5, 1, 20, tzinfo=UTC), None, "POST",
                                    "/a\tb\\c\nd\re", 404, "not_found")

    assert request_log.copy_line(row) == (
        "7\t\\N\t2026-11-28 09:05:01.000020+00:00\t\\N\tPOST\t/a\\tb\\\\c\\nd\\re\t404\tnot_found\n")
    # A backslash alone is printable, and still escaped.
    assert request_log.copy_line(row._replace(path="/a\\b")).split("\t")[5] == "/a\\\\b"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the COPY text goes to PostgreSQL only")
@hypothesis.settings(database=None, max_examples=60, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(path=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=200),
       address=st.sampled_from([None, "203.0.113.9", "2001:db8::1"]),
       error_code=st.sampled_from(["", "bad_header_signature", "not_found"]))
def test_any_path_reaches_postgresql_as_it_was_requested(key_pair, merchant, writer, monkeypatch, path, address,
                                                          error_code):
    batch, _ = writer
    no_writer_thread(monkeypatch)
    at = datetime(2026, 11, 28, 9, 5, 1, 999_999, tzinfo=UTC)
    for status in (200, 403):  # two rows: a batch of one goes as an INSERT
        request_log.record_request(key=key_pair.key, at=at, client_ip=address, method="POST", path=path,
                                   status=status, error_code=error_code)

    assert batch.flush() == 2

    stored = list(ApiRequest.objects.for_merchant(merchant).order_by("-id")[:2].values_list(
        "path", "ip_address", "error_code", "created_at", "api_key_id"))
    assert stored == [(path, address, error_code, at, key_pair.key.pk)] * 2


def test_a_nul_in_the_path_is_logged_as_a_replacement_character_and_the_batch_is_written(client, clock, key_pair,
                                                                                         merchant, writer,
                                                                                         monkeypatch):
    """PostgreSQL refuses NUL in text: the row with it would fail its batch, every retry, with the other rows."""
    batch, _ = writer
    no_writer_thread(monkeypatch)
    assert_accepted(api(client, pair=key_pair))
    assert_error(api(client, pair=key_pair, path="accounts/list%00"), "not_found")

    assert batch.flush() == 2

    assert list(ApiRequest.objects.for_merchant(merchant).order_by("id").values_list("path", "status")) == [
        ("/api/v2/accounts/list", 200), ("/api/v2/accounts/list\ufffd", 404)]


@pytest.mark.django_db(transaction=True)
def test_deleting_a_merchant_through_django_deletes_its_log(writer, monkeypatch):
    """The table has no foreign-key constraints (sandbox/models.py): the cascade is Django's."""
    from dashboard.models import Merchant

    batch, _ = writer
    no_writer_thread(monkeypatch)
    gone, kept = Merchant.objects.create(name="Mistake", slug="mistake"), Merchant.objects.create(name="Kept", slug="kept")
    for merchant in (gone, kept, gone):
        batch.add(request_log.LoggedRequest(merchant.pk, None, merchant.created_at, None, "POST", "/x", 200, ""))
    assert batch.flush() == 3

    gone.delete()

    assert list(ApiRequest.objects.values_list("merchant_id", flat=True)) == [kept.pk]


def test_the_thread_sleeps_until_the_oldest_row_is_due_so_no_row_waits_longer_than_the_interval(writer, monkeypatch):
    no_writer_thread(monkeypatch)
    batch, fake_time = writer
    assert batch.seconds_until_due() == INTERVAL  # nothing pending: a row that comes is due an interval later
    batch.add(request_log.LoggedRequest(1, None, datetime.now(UTC), None, "POST", "/x", 200, ""))
    fake_time.now += 0.3
    batch.add(request_log.LoggedRequest(1, None, datetime.now(UTC), None, "POST", "/x", 200, ""))
    assert batch.seconds_until_due() == pytest.approx(INTERVAL - 0.3)
    fake_time.now += 0.7
    assert batch.seconds_until_due() == 0 and batch.is_due()
    fake_time.now += 5
    assert batch.seconds_until_due() == 0


@pytest.mark.django_db(transaction=True)
def test_the_thread_writes_a_batch_once_it_is_due_and_close_writes_the_rest(writer):
    from dashboard.models import Merchant

    batch, fake_time = writer
    merchant = Merchant.objects.create(name="Quiet", slug="quiet")
    with override_settings(SANDBOX_REQUEST_LOG_FLUSH_SECONDS=0.01):  # the thread's wake-up period
        batch.add(request_log.LoggedRequest(merchant.pk, None, merchant.created_at, None, "POST", "/x", 200, ""))
        fake_time.now += 1
        deadline = time.monotonic() + 10
        while not ApiRequest.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(ApiRequest.objects.values_list("status", flat=True)) == [200]
        assert batch.pending() == 0

        batch.add(request_log.LoggedRequest(merchant.pk, None, merchant.created_at, None, "POST", "/x", 201, ""))
        batch.close()  # not due yet (the clock stands still), but the process is ending

    assert not batch._thread.is_alive()
    assert sorted(ApiRequest.objects.values_list("status", flat=True)) == [200, 201]


@pytest.mark.django_db(transaction=True)
def test_the_last_batch_is_written_at_exit_even_when_the_connection_died_meanwhile(writer, monkeypatch):
    from dashboard.models import Merchant

    batch, _ = writer
    no_writer_thread(monkeypatch)
    merchant = Merchant.objects.create(name="Restarted", slug="restarted")
    batch.add(request_log.LoggedRequest(merchant.pk, None, merchant.created_at, None, "POST", "/x", 200, ""))
    helpers.kill_database_connection()

    batch.close()

    assert batch.pending() == 0
    assert list(ApiRequest.objects.values_list("status", flat=True)) == [200]


def test_a_forked_worker_starts_with_an_empty_batch(key_pair, merchant, writer, monkeypatch):
    batch, _ = writer
    no_writer_thread(monkeypatch)
    batch.add(request_log.LoggedRequest(merchant.pk, key_pair.key.pk, key_pair.key.created_at, None, "POST", "/x",
                                        200, ""))

    child = os.fork()
    if child == 0:  # the worker: what it inherited is the parent's to write
        os._exit(0 if batch.pending() == 0 and batch._thread is None else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert batch.pending() == 1


def test_a_batch_larger_than_one_statement_is_written_whole_in_order_with_its_times(key_pair, merchant, writer,
                                                                                    monkeypatch):
    batch, _ = writer
    no_writer_thread(monkeypatch)
    # SQLite takes at most 999 parameters a statement, 124 rows of 8 columns: this batch needs three statements.
    start = key_pair.key.created_at
    for number in range(300):
        batch.add(request_log.LoggedRequest(merchant.pk, key_pair.key.pk, start + timedelta(seconds=number),
                                            f"198.51.100.{number % 250}", "POST", f"/api/v2/{number}", 200 + number % 2,
                                            ""))

    assert batch.flush() == 300

    rows = list(ApiRequest.objects.for_merchant(merchant).order_by("id").values_list("path", "created_at", "ip_address"))
    assert rows == [(f"/api/v2/{number}", start + timedelta(seconds=number), f"198.51.100.{number % 250}")
                    for number in range(300)]


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's batches go in COPYs of 100 rows")
def test_a_row_refused_in_a_later_copy_is_dropped_and_the_rest_of_its_batch_written_once(key_pair, merchant, writer,
                                                                                         monkeypatch, caplog):
    batch, _ = writer
    no_writer_thread(monkeypatch)
    for number in range(250):
        # The column takes 200 characters (record_request cuts longer paths): the third COPY is refused.
        path = "/" + "x" * 300 if number == 240 else f"/api/v2/{number}"
        batch.add(request_log.LoggedRequest(merchant.pk, key_pair.key.pk, key_pair.key.created_at, None, "POST", path,
                                            200, ""))

    with caplog.at_level(logging.ERROR, logger="sandbox.request_log"):
        assert batch.flush() == 249

    # Once each: the first two COPYs, refused with the batch, wrote nothing that the rows one by one then repeat.
    paths = list(ApiRequest.objects.for_merchant(merchant).order_by("id").values_list("path", flat=True))
    assert paths == [f"/api/v2/{number}" for number in range(250) if number != 240]
    assert batch.pending() == 0
    assert "dropped a request-log row the database refuses" in caplog.text


def test_a_row_the_database_refuses_is_dropped_and_the_rest_of_its_batch_written(key_pair, merchant, writer,
                                                                                 monkeypatch, caplog):
    batch, _ = writer
    no_writer_thread(monkeypatch)
    for row in batch_of(merchant, key_pair.key, [200, 201, -1, 403, 404]):  # the column's check: status >= 0
        batch.add(row)

    with caplog.at_level(logging.ERROR, logger="sandbox.request_log"):
        assert batch.flush() == 4

    assert [status for status, _, _ in logged(merchant)] == [200, 201, 403, 404]
    assert batch.pending() == 0
    assert "dropped a request-log row the database refuses (merchant %d, POST /api/v2/accounts/list, status -1)" % (
        merchant.pk) in caplog.text
    assert batch.flush() == 0  # nothing left to retry


def test_rows_not_yet_written_one_by_one_are_kept_when_the_database_stops_taking_writes(key_pair, merchant, writer,
                                                                                       monkeypatch, caplog):
    batch, _ = writer
    no_writer_thread(monkeypatch)
    for row in batch_of(merchant, key_pair.key, [200, 201, 202]):
        batch.add(row)
    real_insert = request_log.insert_rows
    calls = []

    def refused_then_gone(rows):
        calls.append([row.status for row in rows])
        if len(rows) > 1:
            raise IntegrityError("a row of the batch is refused")
        if rows[0].status == 201:
            raise DatabaseError("connection lost")
        real_insert(rows)

    monkeypatch.setattr(request_log, "insert_rows", refused_then_gone)
    with caplog.at_level(logging.ERROR, logger="sandbox.request_log"):
        assert batch.flush() == 1

    assert calls == [[200, 201, 202], [200], [201]]
    assert [status for status, _, _ in logged(merchant)] == [200]
    assert [row.status for row in batch._pending] == [201, 202]
    assert "could not write 2 request-log rows; kept for the next attempt" in caplog.text

    monkeypatch.setattr(request_log, "insert_rows", real_insert)
    assert batch.flush() == 2
    assert [status for status, _, _ in logged(merchant)] == [200, 201, 202]


def sqlite_connection(zone: str | None):
    """An SQLite connection object apart from the suite's (never opened): its adapter and its time zone."""
    return ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:",
                                          "TIME_ZONE": zone}})["default"]


@hypothesis.settings(database=None, max_examples=300, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                           timezones=st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/St_Johns"),
                                                      timezone(timedelta(hours=5, minutes=45))])),
       database_zone=st.sampled_from([None, "UTC", "Asia/Kathmandu"]))
def test_batch_times_are_stored_as_the_orms_sqlite_adapter_stores_them(moment, database_zone):
    """The batches write times as text of their own making: the same text, so SQL comparisons and ordering
    treat them as the ORM's own rows."""
    sqlite = sqlite_connection(database_zone)

    assert sqlite_datetime_text(moment, sqlite.timezone) == sqlite.ops.adapt_datetimefield_value(moment)


@hypothesis.settings(database=None, max_examples=300, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                           timezones=st.sampled_from([None, UTC, ZoneInfo("Europe/Berlin"),
                                                      ZoneInfo("America/St_Johns"),
                                                      timezone(timedelta(hours=5, minutes=45))])))
def test_batch_times_are_copied_to_postgresql_as_psycopg_writes_them(moment):
    """PostgreSQL's COPY reads the text psycopg would send (str()): aware times as the same instant in UTC, naive
    ones (USE_TZ off) as they are."""
    text = postgresql_copy_datetime_text(moment)

    # The instant in UTC: compared with a time in a gap or fold of its own zone, Python finds no time equal (PEP 495).
    expected = moment if moment.tzinfo is None else moment.astimezone(UTC)
    assert text == str(expected)
    assert datetime.fromisoformat(text) == expected


@override_settings(USE_TZ=False)
def test_without_time_zones_naive_times_are_stored_as_the_orm_stores_them():
    sqlite = sqlite_connection(None)
    for moment in (datetime(2026, 11, 27, 13, 5, 9), datetime(2026, 11, 27, 13, 5, 9, 70)):
        assert sqlite_datetime_text(moment, sqlite.timezone) == sqlite.ops.adapt_datetimefield_value(moment)
    with pytest.raises(ValueError):
        sqlite_datetime_text(datetime(2026, 11, 27, tzinfo=UTC), sqlite.timezone)


@hypothesis.settings(database=None, max_examples=200, deadline=None)
@given(start=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                          timezones=st.sampled_from([None, UTC, ZoneInfo("Europe/Berlin"),
                                                     timezone(timedelta(hours=5, minutes=45))])),
       steps=st.lists(st.sampled_from([0, 1, 999_999, 1_000_000, 1_000_001, -1, -1_000_000])
                      | st.integers(min_value=-2_000_000, max_value=2_000_000), min_size=2, max_size=20),
       database_zone=st.sampled_from([None, "UTC", "Europe/Berlin"]))
def test_times_close_together_get_each_their_own_text(start, steps, database_zone):
    """A batch's times mostly share their second, whose text is made once: a time just inside or outside it, in
    either direction and in any zone, still gets its own."""
    sqlite = sqlite_connection(database_zone)
    for step in steps:
        moment = start.replace(microsecond=0) + timedelta(microseconds=step)
        if moment.tzinfo is not None or database_zone is None:
            assert sqlite_datetime_text(moment, sqlite.timezone) == sqlite.ops.adapt_datetimefield_value(moment)
        expected = moment if moment.tzinfo is None else moment.astimezone(UTC)
        assert postgresql_copy_datetime_text(moment) == str(expected)


def test_the_last_second_there_is_gets_its_text_too():
    for moment in (datetime.max, datetime.max.replace(microsecond=0), datetime.max, datetime(9999, 12, 31, 23, 59, 58)):
        assert postgresql_copy_datetime_text(moment) == str(moment)
