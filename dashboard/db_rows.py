"""Rows read with plain SQL, turned into Python values exactly as the ORM turns them, and values written so.

For the sandbox API's per-request queries only: compiling the same ORM query on every request cost four
times the query itself (see bench/). The column list and the value converters are worked out once.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TypeVar

from django.db import InterfaceError, OperationalError
from django.db.models import Field

T = TypeVar("T")


class RowReader:
    """Reads the values of ``fields`` (in that order) from a plain SQL row."""

    def __init__(self, fields: Sequence[Field]):
        self.fields = tuple(fields)
        self.attnames = [field.attname for field in self.fields]
        self._converters: dict[str, tuple] = {}
        self._columns: dict[tuple[str, str], str] = {}

    def columns(self, connection, table_alias: str) -> str:
        """``alias.column`` for each field, quoted, comma-separated."""
        found = self._columns.get((connection.alias, table_alias))
        if found is None:
            quote = connection.ops.quote_name
            found = ", ".join(f"{quote(table_alias)}.{quote(field.column)}" for field in self.fields)
            self._columns[(connection.alias, table_alias)] = found
        return found

    def convert(self, connection, row: Sequence) -> list:
        """The values of ``row`` as the ORM would hand them to a model."""
        values = list(row)
        for index, column, converters in self._converters_for(connection):
            for converter in converters:
                values[index] = converter(values[index], column, connection)
        return values

    def _converters_for(self, connection) -> tuple:
        # Per database alias: (index, column, converters) of each field that has converters, the list the
        # SQL compiler builds for the same query.
        found = self._converters.get(connection.alias)
        if found is None:
            found = []
            for index, field in enumerate(self.fields):
                column = field.cached_col
                converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
                if converters:
                    found.append((index, column, tuple(converters)))
            found = self._converters[connection.alias] = tuple(found)
        return found


# The last second whose text _datetime_text made: its start, the next second's, and its text; replaced whole, so
# threads may share it.
_last_second: tuple[datetime, datetime, str] | None = None
_LAST_SECOND = datetime.max.replace(microsecond=0)


def _datetime_text(moment: datetime) -> str:
    """``str()`` of ``moment`` without its offset, the text of its second made once: batches of the request log
    hold many rows of the same second.

    The second is recognised by two comparisons with its bounds, in the same time zone (or both naive), which
    compare the clock's fields as the text shows them: cheaper than reading six of them (in a loop, 0.62–0.75 →
    0.48 µs)."""
    global _last_second
    kept = _last_second
    if kept is None or moment.tzinfo is not kept[0].tzinfo or not kept[0] <= moment < kept[1]:
        start = moment.replace(microsecond=0, fold=0)
        text = "%04d-%02d-%02d %02d:%02d:%02d" % (
            start.year, start.month, start.day, start.hour, start.minute, start.second)
        # The last second there is has no next one: its bounds then match nothing, and its text is made each time.
        end = start + timedelta(seconds=1) if start.replace(tzinfo=None) < _LAST_SECOND else start
        kept = _last_second = (start, end, text)
    # str() leaves out a zero fraction.
    return f"{kept[2]}.{moment.microsecond:06d}" if moment.microsecond else kept[2]


def sqlite_datetime_text(moment: datetime, zone: tzinfo | None) -> str:
    """What Django's SQLite backend stores for ``moment`` (``adapt_datetimefield_value``): the time in the
    connection's ``zone`` (None: naive times, USE_TZ off), without its offset, as ``str()`` writes it.

    For the request log's batches: the adapter cost 28k instructions a value (it reads settings.USE_TZ, and
    replace() and str() parse arguments), this 7k. SQLite compares these as text, so it must be the same text.
    """
    if moment.tzinfo is not None and moment.tzinfo is not zone:
        if zone is None:
            raise ValueError("An aware time cannot be stored in a database of naive times (USE_TZ is off).")
        moment = moment.astimezone(zone)
    return _datetime_text(moment)


def postgresql_copy_datetime_text(moment: datetime) -> str:
    """``moment`` as text for a timestamp column in PostgreSQL's COPY: what psycopg writes for it (``str()``),
    an aware time given in UTC.

    For the request log's batches: psycopg's dumper calls str() on each datetime, with the second's text made
    anew (a batch's COPY: 31k → 26k instructions a row).
    A naive time (USE_TZ off) goes without an offset, read in the connection's time zone, as psycopg sends it.
    """
    if moment.tzinfo is None:
        return _datetime_text(moment)
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return _datetime_text(moment) + "+00:00"


def read_as_health_check(connection, read: Callable[[], T]) -> T:
    """Run ``read``, a query that only reads, as a request's first query, in place of the health check.

    With CONN_HEALTH_CHECKS, Django checks a persistent connection before a request's first query: on
    PostgreSQL a ``SELECT 1``, a round trip that cost the sandbox API as much as its own lookup (see bench/).
    A read can be run again instead: when the connection died since the last request (a database restart,
    an idle timeout), it is closed and the read retried once, on a new connection.
    """
    if (connection.connection is None or connection.in_atomic_block or not connection.health_check_enabled
            or connection.health_check_done):
        return read()
    connection.health_check_done = True
    try:
        return read()
    except (InterfaceError, OperationalError):
        connection.close()
        return read()
