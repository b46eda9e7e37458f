"""The sandbox API's key lookups, kept in each worker until the database says that something changed.

A signed request's one query (its key, with the merchant's balances for accounts/list) cost it more than
everything else it does beyond Django's own floor (see bench/). Each thread keeps the answers per database
connection, and before each lookup asks the database, without a query, whether anything was committed since:

- SQLite (a file): ``PRAGMA data_version`` changes when another connection commits, ``total_changes`` when this
  one writes; both come from memory the processes share, no table is read. A change is seen by the very next
  lookup in every process: a key deactivated, rotated or deleted is refused from the next request.
- PostgreSQL: triggers on the tables the answers come from NOTIFY a channel when their transaction commits
  (migration sandbox 0003). Each process LISTENs on a connection of its own and drains it, without waiting,
  before each lookup; its own commits it hears with their COMMIT. Other processes hear a commit a little after
  it returns: on this 2-core machine a median of ~25 µs, a 99th percentile of 0.04-3.3 ms, at worst 8.5 ms
  (bench/README.md). The Owner's confirmation page takes longer than that to arrive, but nothing waits for it:
  a request that reaches another worker within those milliseconds is answered as before the change.
  SANDBOX_KEEP_KEY_LOOKUPS=0 trades the cache for a query per request. Writes made with the triggers
  disabled (session_replication_role=replica, a restore with --disable-triggers) are not heard: restart the
  workers after one.
- Anything else (an in-memory SQLite database, a lookup inside a transaction, the setting off): nothing is
  kept, a query each time.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Hashable
from time import monotonic
from typing import TypeVar

import psycopg
from django.conf import settings
from django.db import connections

logger = logging.getLogger("sandbox.key_lookup_cache")

T = TypeVar("T")

# Answers kept per thread and database; beyond this (a flood of made-up keys) they are all dropped.
MAX_ANSWERS = 4096
# The channel the triggers of migration sandbox 0003 notify.
CHANGES_CHANNEL = "sandbox_api_data"
# After a failed attempt to listen, lookups go to the database for this long before the next attempt.
LISTEN_RETRY_SECONDS = 1.0
# The listening connection is asked for a sign of life when it has said nothing for PING_SECONDS, and kept
# answers are used only while it said something within SILENCE_SECONDS.
PING_SECONDS = 1.0
SILENCE_SECONDS = 2.0


class _Kept(threading.local):
    def __init__(self) -> None:
        # alias -> [token the answers were read under, {name: answer}]
        self.by_alias: dict[str, list] = {}


_kept = _Kept()


def cached_lookup(connection, name: Hashable, read: Callable[[], T]) -> T:
    """``read()``'s answer, or the one it gave for ``name`` before if nothing was committed since.

    ``read`` must only read, and its answer must be used read-only: other requests get the same object.
    """
    if connection.in_atomic_block or (connection.connection is not None and not connection.autocommit):
        return read()  # a transaction sees its own writes, and may roll them back
    token = change_token(connection)
    if token is None:
        return read()
    kept = _kept.by_alias.get(connection.alias)
    if kept is None:
        kept = _kept.by_alias[connection.alias] = [None, {}]
    if kept[0] != token:
        # Read before the lookup: a commit that lands after it changes the token again.
        kept[0] = token
        kept[1].clear()
    else:
        try:
            return kept[1][name]
        except KeyError:
            pass
    answer = read()
    answers = kept[1]
    if len(answers) >= MAX_ANSWERS:
        answers.clear()
    answers[name] = answer
    return answer


def change_token(connection) -> Hashable | None:
    """A value that changes whenever anything is committed to ``connection``'s database; None when this
    database cannot say so cheaply (then nothing may be kept)."""
    if not settings.SANDBOX_KEEP_KEY_LOOKUPS:
        return None
    if connection.vendor == "sqlite":
        if connection.is_in_memory_db():
            # Connections to a shared in-memory database share one pager: data_version misses their commits.
            return None
        connection.ensure_connection()
        raw = connection.connection
        with connection.wrap_database_errors:
            (version,) = raw.execute("PRAGMA data_version").fetchone()
        # The connection itself is part of the token: data_version is per connection, and a new one starts over.
        return raw, version, raw.total_changes
    if connection.vendor == "postgresql":
        return change_listener(connection.alias).generation()
    return None


class ChangeListener:
    """How many times this process has heard of a change to one database's API data.

    Two ears: a LISTEN connection of its own, drained before each lookup, hears the commits of other
    processes; and each of this process's Django connections LISTENs too (``listen_on_new_connection``), so a
    commit made here is heard in the very answer to the COMMIT.

    Kept answers are used only while the listening connection is known to be alive: it is asked a
    ``SELECT 1`` when it has said nothing for PING_SECONDS, and treated as lost when the answer takes longer
    than SILENCE_SECONDS (a connection cut without a word, behind a proxy say). While lost, nothing is kept.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._connection = None
        self._generation = next(_changes)
        self._retry_at = 0.0
        self._heard_at = 0.0
        self._ping_sent_at: float | None = None

    def hear(self, notification=None) -> None:
        self._generation = next(_changes)

    def generation(self) -> int | None:
        """A number that moves on with each change heard (and each new connection); None while not listening
        or not sure the connection is alive."""
        with self._lock:
            if self._connection is None and not self._listen():
                return None
            if not self._drain():
                return None
            now = monotonic()
            if now - self._heard_at < SILENCE_SECONDS:
                if now - self._heard_at >= PING_SECONDS:
                    self._ping(now)
                return self._generation
            self._ping(now)
            return None

    def _drain(self) -> bool:
        """Read what the socket holds, never waiting: notifications, the answer to a ping. False when the
        connection turns out to be lost (it is then closed)."""
        pgconn = self._connection.pgconn
        try:
            pgconn.consume_input()
            heard = False
            while pgconn.notifies() is not None:
                heard = True
            while self._ping_sent_at is not None and not pgconn.is_busy():
                if pgconn.get_result() is None:  # the end of the ping's answer
                    self._ping_sent_at = None
                    heard = True
        except psycopg.Error:
            logger.warning("lost the connection listening for API data changes; reconnecting")
            self._close()
            return False
        if heard:
            self._heard_at = monotonic()
            self.hear()
        if self._ping_sent_at is not None and monotonic() - self._ping_sent_at > SILENCE_SECONDS:
            logger.warning("the connection listening for API data changes went silent; reconnecting")
            self._close()
            return False
        return True

    def _ping(self, now: float) -> None:
        if self._ping_sent_at is None:
            self._connection.pgconn.send_query(b"SELECT 1")
            self._connection.pgconn.flush()
            self._ping_sent_at = now

    def _listen(self) -> bool:
        if monotonic() < self._retry_at:
            return False
        params = connections[self.alias].get_connection_params()
        # Connecting holds the lock, so a database that does not answer must not hold it long.
        params.setdefault("connect_timeout", 2)
        try:
            connection = psycopg.connect(**params, autocommit=True)
            connection.execute(f"LISTEN {CHANGES_CHANNEL}")
        except psycopg.Error as error:
            logger.warning("cannot listen for API data changes (%s); looking keys up every time", error)
            self._retry_at = monotonic() + LISTEN_RETRY_SECONDS
            return False
        self._connection = connection
        self._heard_at = monotonic()
        self._ping_sent_at = None
        # Whatever was kept was read before this connection listened: changes since would be unheard.
        self.hear()
        return True

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        self.hear()
        if connection is not None:
            connection.close()

    def close(self) -> None:
        with self._lock:
            self._close()


def listen_on_new_connection(sender, connection, **kwargs) -> None:
    """connection_created: a new PostgreSQL connection of Django's LISTENs, so this process hears its own
    commits at once (see ChangeListener)."""
    if connection.vendor != "postgresql":
        return
    raw = connection.connection
    alias = connection.alias

    def heard_on_own_connection(notification) -> None:
        # Looked up each time: after a fork, the child's listener, not the parent's.
        change_listener(alias).hear()

    raw.add_notify_handler(heard_on_own_connection)
    # On the driver's connection: not a query of the request's (nor of a test's query count).
    raw.execute(f"LISTEN {CHANGES_CHANNEL}")


# Shared by all listeners, also across fork(): a number is never handed out twice, so an answer a parent
# kept can never match a generation of its child's.
_changes = itertools.count(1)
_listeners: dict[str, ChangeListener] = {}
_listeners_lock = threading.Lock()
# Listeners a forked process inherited: the parent's sockets, kept referenced so that collecting them in the
# child never closes (and so ends) the parent's session.
_inherited: list[ChangeListener] = []


def change_listener(alias: str) -> ChangeListener:
    listener = _listeners.get(alias)
    if listener is None or listener.pid != os.getpid():
        with _listeners_lock:
            listener = _listeners.get(alias)
            if listener is None or listener.pid != os.getpid():
                if listener is not None:
                    _inherited.append(listener)
                listener = _listeners[alias] = ChangeListener(alias)
    return listener


def close_listeners() -> None:
    """Close this process's listening connections (before its database is dropped, say)."""
    with _listeners_lock:
        for listener in _listeners.values():
            listener.close()


def _forget_after_fork() -> None:
    # The child starts with nothing kept (its parent's answers are under the parent's generations anyway).
    _kept.by_alias = {}


os.register_at_fork(after_in_child=_forget_after_fork)
