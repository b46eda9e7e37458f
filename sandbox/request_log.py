"""The last requests of each merchant, and when each key was last used.

Rows are written in batches: each process keeps the requests it answered for at most
``SANDBOX_REQUEST_LOG_FLUSH_SECONDS`` and a background thread inserts them in one transaction. A write per
request cost the API more than everything else it does together (see bench/). The price: a worker killed
outright (SIGKILL) loses the requests of its last fraction of a second from the log; a normal stop writes
them. With the setting at 0 each request writes its own row before it is answered (the test suite's mode).
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import threading
from collections import Counter
from datetime import datetime, timedelta
from time import monotonic, sleep
from typing import NamedTuple

from django.core.cache import cache
from django.db import DatabaseError, DataError, IntegrityError, close_old_connections, connections, router, transaction

from dashboard.db_rows import postgresql_copy_datetime_text, sqlite_datetime_text
from dashboard.settings_cache import cached_setting, until_settings_change
from keys.models import ApiKey

from .models import REQUEST_LOG_SIZE, ApiRequest

logger = logging.getLogger("sandbox.request_log")

# A key's "last used" is written at most this often, so a busy key does not cost a write per request.
LAST_USED_INTERVAL = timedelta(minutes=1)
# Trimming the log every request would double its cost; every hundredth insert of a merchant keeps it near the limit.
PRUNE_EVERY = 100
# PostgreSQL's batches go in COPYs of this many rows, this many seconds apart (insert_rows).
COPY_CHUNK_ROWS = 100
COPY_CHUNK_PAUSE = 0.002
# Rows kept for a retry while the database cannot be written; beyond this the oldest are dropped (and said so).
MAX_PENDING_ROWS = 10_000


# The log table's columns a row gives, in the order insert_rows sends them.
COLUMNS = ("merchant_id", "api_key_id", "created_at", "ip_address", "method", "path", "status", "error_code")


class LoggedRequest(NamedTuple):
    """The shape of a row. The rows themselves may be plain tuples in this order, as record_request makes them:
    Python's garbage collector stops tracking a plain tuple of numbers, strings and times at its first
    collection, but never a NamedTuple's instance. Rows waiting for their batch then piled up in the oldest
    generation, and each pile set off a full collection, 50–60 ms of a worker's time (bench/README.md)."""

    merchant_id: int
    api_key_id: int | None
    created_at: datetime
    ip_address: str | None
    method: str
    path: str
    status: int
    error_code: str
    # The row as a line of PostgreSQL's COPY text, for a batch that goes there: made by the request thread
    # (record_request), not by the writer thread (insert_rows).
    copy_line: str = ""


def record_request(*, key: ApiKey, at: datetime, client_ip: str | None, method: str, path: str, status: int,
                   error_code: str) -> None:
    # PostgreSQL refuses NUL in text, and one such row would fail its whole batch; a path may carry one (%00).
    method, path = method[:10].replace("\0", "\ufffd"), path[:200].replace("\0", "\ufffd")
    values = (key.merchant_id, key.id, at, client_ip, method, path, status, error_code)
    mode = _log_mode()
    if mode == "each":
        write_rows([LoggedRequest(*values)])
    elif mode == "postgresql":
        # The writer thread's formatting of a batch, ~2 ms of Python for 800 rows, held the GIL from the request
        # threads in bursts; made here it is a few µs of each request. Side by side under load, the signed
        # request's p99 was 10.75 → 9.79 and 8.69 → 8.34 ms.
        writer.add((*values, copy_line(values)))
    else:
        writer.add((*values, ""))


@until_settings_change
def _log_mode() -> str:
    """How record_request writes: "each" request its own row, else in batches, as PostgreSQL's COPY text
    ("postgresql") or as plain values ("values")."""
    if cached_setting("SANDBOX_REQUEST_LOG_FLUSH_SECONDS") <= 0:
        return "each"
    return "postgresql" if connections[router.db_for_write(ApiRequest)].vendor == "postgresql" else "values"


def copy_line(row: tuple) -> str:
    """``row`` (a LoggedRequest, or its first eight values) as a line of PostgreSQL's COPY text format, its values
    in the order of COLUMNS."""
    merchant_id, api_key_id, created_at, ip_address, method, path, status, error_code = row[:8]
    return "%d\t%s\t%s\t%s" % (
        merchant_id, "\\N" if api_key_id is None else "%d" % api_key_id, postgresql_copy_datetime_text(created_at),
        _copy_line_end(ip_address, method, path, status, error_code),
    )


@functools.lru_cache(maxsize=1024)
def _copy_line_end(ip_address: str | None, method: str, path: str, status: int, error_code: str) -> str:
    # A client's requests repeat these five values: their text is made once (copy_line 1.77 → 1.25 µs in a loop,
    # with the time's text found faster too, dashboard.db_rows).
    return "%s\t%s\t%s\t%d\t%s\n" % (
        "\\N" if ip_address is None else _copy_text(ip_address), _copy_text(method), _copy_text(path), status,
        _copy_text(error_code),
    )


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_text(value: str) -> str:
    # Tab, newline and CR are not printable: a value that is, with no backslash, needs no escape (the usual
    # case, 0.1 µs against the substitution's 0.3 µs).
    if value.isprintable() and "\\" not in value:
        return value
    return _COPY_SPECIAL.sub(lambda found: _COPY_ESCAPES[found.group()], value)


def write_rows(rows: list[tuple]) -> None:
    """Insert ``rows`` (LoggedRequests, or plain tuples in their order; one transaction), then trim the log of each
    merchant that has grown enough."""
    insert_rows(rows)
    trim_after_insert(rows)


def insert_rows(rows: list[tuple]) -> None:
    connection = connections[router.db_for_write(ApiRequest)]
    table = connection.ops.quote_name(ApiRequest._meta.db_table)
    columns = ", ".join(COLUMNS)
    if connection.vendor == "postgresql" and len(rows) > 1:
        # COPY: a batch of 1,000 rows cost the writer thread 3 ms of CPU, against 13 ms by executemany(),
        # time it would otherwise take from the requests through the GIL. The rows come as COPY text already
        # (record_request); a row made elsewhere is formatted here.
        # In chunks, with a pause between them, in one transaction: a whole batch in one COPY held the GIL for its
        # few milliseconds of formatting (a request thread waits up to the 5 ms switch interval for it) and gave the
        # database server its whole batch at once, and the requests in flight paid for both. Side by side under
        # load on PostgreSQL, in two runs, the signed request's p99 was 1.77 and 1.91 × ping's in one COPY, 1.32
        # (chunks of 50) and 1.62 × (of 100) in chunks; chunks of 50 and of 100 did alike in a third (1.41 × both).
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor, \
                connection.wrap_database_errors:
            for start in range(0, len(rows), COPY_CHUNK_ROWS):
                if start:
                    sleep(COPY_CHUNK_PAUSE)
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    copy.write("".join([row[8] or copy_line(row) for row in rows[start:start + COPY_CHUNK_ROWS]]))
        return
    adapt = connection.ops.adapt_datetimefield_value
    one_row = "(%s, %s, %s, %s, %s, %s, %s, %s)"
    if len(rows) == 1:  # one statement is atomic already; a transaction around it would cost two more
        merchant_id, api_key_id, created_at, ip_address, method, path, status, error_code = rows[0][:8]
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {one_row}", (
                merchant_id, api_key_id, adapt(created_at), ip_address, method, path, status, error_code))
        return
    # Plain SQL: the ORM's save() and bulk_create() machinery cost more than the insert itself on this path.
    # Many rows to a statement, not executemany(): SQLite's driver lets go of the GIL and takes it back for each
    # statement it runs, each time a wait for the request thread. Each chunk is prepared just before it is sent,
    # so the writer never holds the GIL long (a whole batch's values, 1,000 rows at ~3 µs, would keep requests
    # waiting that long). Sent to the driver itself in its own placeholders: Django's cursor rewrites every %s of
    # a statement with a regular expression, a fifth of a row's instructions (65k → 52k without it).
    # The times as the ORM writes them, by sqlite_datetime_text: Django's adapter cost 28k instructions a row.
    per_statement = max(1, connection.features.max_query_params // len(COLUMNS))
    zone = connection.timezone
    with transaction.atomic(using=connection.alias), connection.wrap_database_errors:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            values = []
            for merchant_id, api_key_id, created_at, ip_address, method, path, status, error_code, _ in chunk:
                values += (merchant_id, api_key_id, sqlite_datetime_text(created_at, zone), ip_address, method, path,
                           status, error_code)
            placeholders = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            connection.connection.execute(f"INSERT INTO {table} ({columns}) VALUES {placeholders}", values)


def trim_after_insert(rows: list[tuple]) -> None:
    for merchant_id, inserted in Counter(row[0] for row in rows).items():  # row[0]: its merchant_id
        total = _count_inserts(merchant_id, inserted)
        if total // PRUNE_EVERY != (total - inserted) // PRUNE_EVERY:
            prune(merchant_id)


def _count_inserts(merchant_id: int, inserted: int) -> int:
    """Inserts of this merchant so far (per cache lifetime), shared by all workers through the cache."""
    counter = f"request-log-inserts:{merchant_id}"
    cache.add(counter, 0, timeout=None)
    try:
        return cache.incr(counter, inserted)
    except ValueError:
        cache.add(counter, inserted, timeout=None)
        return inserted


def prune(merchant_id: int) -> int:
    """Delete the merchant's requests older than its newest REQUEST_LOG_SIZE, back to the cutoff of this process's
    trim before last (all of them on its first two trims); returns how many went."""
    # Plain statements: through the ORM (delete() and its collector) a trim cost 2.4 M instructions, of which the
    # database's own work was 0.35 M. Nothing refers to a log row, so there is nothing for a collector to cascade.
    # Both look no lower than an earlier trim's cutoff: on PostgreSQL a deleted row's index entry stays until
    # VACUUM, and a trim that read from the merchant's first id went through all of them, a cost that grew with
    # every request logged (batches of 800, no autovacuum: 2 ms a trim at first, 23 ms after 120,000 requests;
    # bounded, 2-3 ms throughout).
    connection = connections[router.db_for_write(ApiRequest)]
    table = connection.ops.quote_name(ApiRequest._meta.db_table)
    cutoffs = _trim_cutoffs.get(merchant_id, ())
    floor = cutoffs[0] if len(cutoffs) == 2 else 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE merchant_id = %s AND id >= %s ORDER BY id DESC LIMIT 1 OFFSET %s",
            [merchant_id, floor, REQUEST_LOG_SIZE - 1],
        )
        oldest_kept = cursor.fetchone()
        if oldest_kept is None:  # fewer rows than the size
            return 0
        cursor.execute(
            f"DELETE FROM {table} WHERE merchant_id = %s AND id >= %s AND id < %s",
            [merchant_id, floor, oldest_kept[0]],
        )
        deleted = cursor.rowcount
    if cutoffs[-1:] != oldest_kept:  # a trim that moved nothing keeps the window as wide as it was
        if len(_trim_cutoffs) >= MAX_TRIMMED_MERCHANTS:
            _trim_cutoffs.clear()
        _trim_cutoffs[merchant_id] = (*cutoffs, oldest_kept[0])[-2:]
    return deleted


# The cutoffs of this process's last two trims of each merchant: the rows below the older one are gone. Not the
# newer one: another worker's batch, its ids taken before a trim and committed after it, can leave rows below
# that cutoff, which the next trim then still reaches.
_trim_cutoffs: dict[int, tuple[int, ...]] = {}
MAX_TRIMMED_MERCHANTS = 10_000


class BatchWriter:
    """This process's requests not yet in the log, and the thread that writes them.

    A batch is due at ``SANDBOX_REQUEST_LOG_BATCH_SIZE`` rows, or when its oldest row is
    ``SANDBOX_REQUEST_LOG_FLUSH_SECONDS`` old. A background thread writes it, so no request waits for it:
    the database drivers let go of the GIL while they wait on the database, and the request thread goes on.
    (Written by the request thread after its response, a PostgreSQL batch held that worker for ~50 ms, the
    p99 of every request queued behind it.)
    """

    def __init__(self) -> None:
        self._forget()
        atexit.register(self.close)
        # A forked worker starts empty and with no thread: the parent writes what it had.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pending: list[tuple] = []
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = False

    def add(self, row: tuple) -> None:
        with self._lock:
            if not self._pending:
                self._oldest = monotonic()
            self._pending.append(row)
            full = len(self._pending) >= cached_setting("SANDBOX_REQUEST_LOG_BATCH_SIZE")
            if self._thread is None:
                self._thread = self._start_writer()
        if full:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def is_due(self) -> bool:
        with self._lock:
            return bool(self._pending) and (
                len(self._pending) >= cached_setting("SANDBOX_REQUEST_LOG_BATCH_SIZE")
                or monotonic() - self._oldest >= cached_setting("SANDBOX_REQUEST_LOG_FLUSH_SECONDS")
            )

    def seconds_until_due(self) -> float:
        """How long the writer thread may sleep: until the oldest pending row is due, a whole interval when none is
        pending (a row that comes meanwhile is then due no sooner than that). A fixed interval let a row that came
        just after a wake-up wait almost two."""
        interval = cached_setting("SANDBOX_REQUEST_LOG_FLUSH_SECONDS")
        with self._lock:
            if not self._pending:
                return interval
            return max(0.0, self._oldest + interval - monotonic())

    def write_if_due(self) -> None:
        if self.is_due():
            self.flush()

    def flush(self) -> int:
        """Write every pending row now; returns how many were written."""
        with self._lock:
            rows, self._pending = self._pending, []
        if not rows:
            return 0
        try:
            insert_rows(rows)
        except (DataError, IntegrityError):
            # A row the database refuses, not a database that refuses writes: kept, it would fail its batch at every
            # retry, and every batch after it. The rows go one by one and only the refused ones are dropped.
            rows = self._write_each(rows)
        except DatabaseError:
            logger.exception("could not write %d request-log rows; kept for the next attempt", len(rows))
            self._keep(rows)
            return 0
        try:
            trim_after_insert(rows)
        except DatabaseError:
            logger.exception("could not trim the request log; the next batch tries again")
        return len(rows)

    def _write_each(self, rows: list[tuple]) -> list[tuple]:
        """Write ``rows`` one at a time, dropping those the database refuses; returns those written. If the
        database stops taking writes on the way, the rest are kept for the next attempt."""
        alias = router.db_for_write(ApiRequest)
        written = []
        for index, row in enumerate(rows):
            try:
                with transaction.atomic(using=alias):  # a savepoint when the caller is in a transaction
                    insert_rows([row])
            except (DataError, IntegrityError) as error:
                logger.error("dropped a request-log row the database refuses (merchant %s, %s %s, status %s): %s",
                             row[0], row[4], row[5][:50], row[6], error)
            except DatabaseError:
                logger.exception("could not write %d request-log rows; kept for the next attempt", len(rows) - index)
                self._keep(rows[index:])
                break
            else:
                written.append(row)
        return written

    def _keep(self, rows: list[tuple]) -> None:
        with self._lock:
            if not self._pending:
                self._oldest = monotonic()
            self._pending[:0] = rows
            dropped = len(self._pending) - MAX_PENDING_ROWS
            if dropped > 0:
                del self._pending[:dropped]
                logger.error("dropped the %d oldest request-log rows: the database has refused writes too long", dropped)

    def _start_writer(self) -> threading.Thread:
        thread = threading.Thread(target=self._write_batches, name="request-log-writer", daemon=True)
        thread.start()
        return thread

    def _write_batches(self) -> None:
        # Wakes when a batch is full, and when the oldest row of a batch becomes due.
        while not self._closing:
            self._wake.wait(self.seconds_until_due())
            self._wake.clear()
            if not self._closing and self.is_due():
                # As at the end of a request: drop the thread's connection if broken or past CONN_MAX_AGE.
                close_old_connections()
                self.write_if_due()
        connections.close_all()

    def close(self) -> None:
        """Stop the thread and write what is pending: at the process's normal exit."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.pending():
            # The connection may have died while the process idled (a database restart): replaced, as the
            # thread's is before each batch, rather than the last rows lost with it.
            close_old_connections()
            self.flush()


writer = BatchWriter()


# When this process last wrote each key's last use: the key a request carries may be a kept lookup
# (sandbox.key_lookup_cache) from before that write, which on PostgreSQL does not make it be read again.
_marked_at: dict[int, datetime] = {}
MAX_MARKED = 10_000


def mark_used(key: ApiKey, client_ip: str | None, now: datetime) -> None:
    # This process's own write first: a kept key's last_used_at is usually older than the interval. By its id,
    # as Model.pk's lookup through _meta cost as much as the rest of the check.
    for last_use in (_marked_at.get(key.id), key.last_used_at):
        if last_use is not None and now - last_use < LAST_USED_INTERVAL:
            return
    ApiKey.objects.filter(pk=key.id).update(last_used_at=now, last_used_ip=client_ip)
    if len(_marked_at) >= MAX_MARKED:
        _marked_at.clear()
    _marked_at[key.id] = now
