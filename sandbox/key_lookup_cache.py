"""The sandbox API's key lookups, kept in each worker until the database says that something changed.

A signed request's one query (its key, with the merchant's balances for accounts/list) cost it more than
everything else it does beyond Django's own floor (see bench/). Each thread keeps the answers per database
connection, and before each lookup asks, without a query, whether anything was committed since:

- SQLite (a file, in WAL mode as settings.py opens it): every commit, by any connection of any process, rewrites
  the header of the WAL index, the shared memory (the ``-shm`` file) through which SQLite's connections agree on
  what is committed (https://www.sqlite.org/walformat.html). Each connection maps that header and compares it
  with the one its answers were read under: no query, no system call. The very next lookup in any process sees
  any commit. Where the header cannot be read (another journal mode), ``PRAGMA data_version`` and the
  connection's ``total_changes`` say the same through a statement that reads no table; its read lock (two fcntl()
  calls and a stat() each time) cost signed requests about 8 % of their throughput under load (0.81 → 0.89 of
  ping's without it, in alternated runs; see README, Performance).
- PostgreSQL: triggers on the tables the answers come from NOTIFY a channel when their transaction commits
  (migrations sandbox 0003 and 0004). Each process has a listener thread on a connection of its own (ChangeListener)
  that moves a generation number on at each notification and then acknowledges it; a commit of this process
  returns only once every listener of the database has acknowledged it (at most ACK_TIMEOUT_SECONDS). So when
  the code that deactivated a key answers the Owner, no worker uses an answer from before.
- Anything else (an in-memory SQLite database, a lookup inside a transaction, a PostgreSQL listener not known
  to be alive, SANDBOX_KEEP_KEY_LOOKUPS=0): nothing is kept, a query each time.

Writes made with the triggers disabled (session_replication_role=replica, a restore with --disable-triggers)
are not heard at all: restart the workers after one. Writes from outside Django (psql) are heard, but nothing
waits for the acknowledgements.
"""
from __future__ import annotations

import atexit
import itertools
import logging
import mmap
import os
import selectors
import struct
import threading
from collections.abc import Callable, Hashable
from time import monotonic
from typing import TypeVar

import psycopg
from django.conf import settings
from django.db import connections
from django.db.backends.base.base import NO_DB_ALIAS

from dashboard.settings_cache import cached_setting

logger = logging.getLogger("sandbox.key_lookup_cache")

T = TypeVar("T")

# Answers kept per thread and database; beyond this (a flood of made-up keys) they are all dropped.
MAX_ANSWERS = 4096
# The channel the triggers of migrations sandbox 0003 and 0004 notify, with the transaction's id.
CHANGES_CHANNEL = "sandbox_api_data"
# Where listeners acknowledge a change (payload: the change's transaction id), and how they are told apart in
# pg_stat_activity.
ACKNOWLEDGEMENTS_CHANNEL = "sandbox_api_ack"
LISTENER_APPLICATION_NAME = "sandbox-api-listener"
# After a failed attempt to listen, lookups go to the database for this long before the next attempt.
LISTEN_RETRY_SECONDS = 1.0
# The listening connection is asked for a sign of life when it has said nothing for PING_SECONDS, and kept
# answers are used only while it said something within SILENCE_SECONDS. A commit waits at most
# ACK_TIMEOUT_SECONDS for the acknowledgements; longer than SILENCE_SECONDS, so a listener it gives up on
# no longer uses what it kept.
PING_SECONDS = 0.25
SILENCE_SECONDS = 1.0
ACK_TIMEOUT_SECONDS = 2.0


class _Kept(threading.local):
    def __init__(self) -> None:
        # alias -> [token the answers were read under, {name: answer}]
        self.by_alias: dict[str, list] = {}
        # alias -> (SQLite connection, its WAL-index header or None): see wal_index_header.
        self.headers: dict[str, tuple] = {}
        # alias -> Django's connection of this thread: see thread_connection.
        self.connections: dict[str, object] = {}


_kept = _Kept()


def thread_connection(alias: str):
    """``connections[alias]``, remembered for this thread.

    Django keeps a thread's connection in asgiref's Local, whose every read asks for a running event loop and, in
    a sync thread, raises and catches the error that there is none: 10k of a signed request's ~80k instructions
    beyond ping's (callgrind). Django gives a thread one connection object for its whole life: it replaces one
    only as a thread starts, to share the test database with a live server's threads (django.test,
    django.core.servers.basehttp), before that thread serves anything. Not for code that runs in an event loop's
    own thread, where each task has its own; the sandbox API's views are sync.
    """
    try:
        return _kept.connections[alias]
    except KeyError:
        connection = _kept.connections[alias] = connections[alias]
        return connection


def cached_lookup(connection, name: Hashable, read: Callable[..., T], *args) -> T:
    """``read(*args)``'s answer, or the one it gave for ``name`` before if nothing was committed since.

    ``read`` must only read, and its answer must be used read-only: other requests get the same object.
    """
    if connection.in_atomic_block or (connection.connection is not None and not connection.autocommit):
        return read(*args)  # a transaction sees its own writes, and may roll them back
    token = change_token(connection)
    if token is None:
        return read(*args)
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
    answer = read(*args)
    answers = kept[1]
    if len(answers) >= MAX_ANSWERS:
        answers.clear()
    answers[name] = answer
    return answer


def change_token(connection) -> Hashable | None:
    """A value that changes whenever anything is committed to ``connection``'s database; None when this
    database cannot say so cheaply (then nothing may be kept)."""
    if not cached_setting("SANDBOX_KEEP_KEY_LOOKUPS"):
        return None
    if connection.vendor == "sqlite":
        mapped = _kept.headers.get(connection.alias)
        if mapped is not None and mapped[1] is not None and mapped[0] is connection.connection:
            # The usual case, first: this connection's header is mapped already, so its database is a WAL file
            # (never in memory), and reading the mapping raises no database error. The checks below cost a
            # kept lookup 3k of its 32k instructions.
            state = mapped[1].read()
            return None if state is None else (mapped[0], state)
        if connection.is_in_memory_db():
            # Connections to a shared in-memory database share one pager: data_version misses their commits.
            return None
        if connection.connection is None:  # ensure_connection() costs a check for an event loop, even connected
            connection.ensure_connection()
        raw = connection.connection
        with connection.wrap_database_errors:
            header = wal_index_header(connection.alias, raw, connection.settings_dict["NAME"])
            if header is not None:
                state = header.read()
                # None: a commit was rewriting the header as it was read; not kept, as SQLite itself would retry.
                return None if state is None else (raw, state)
            (version,) = raw.execute("PRAGMA data_version").fetchone()
        # The connection itself is part of the token: data_version is per connection, and a new one starts over.
        return raw, version, raw.total_changes
    if connection.vendor == "postgresql":
        listener = change_listener(connection.alias)
        return None if listener is None else listener.generation()
    return None


class WalIndexHeader:
    """The header of an SQLite database's WAL index, read where SQLite's connections read it: shared memory.

    Two copies of a 48-byte header; a committing connection rewrites the second, then the first. Reading the
    first then the second, as SQLite's readers do, two equal copies are a header no commit was writing. Every
    commit changes it (iChange counts them; mxFrame, the salts after a checkpoint restarts the log).

    The mapping is made while ``raw`` has the index open, and lives no longer than ``raw``: SQLite empties or
    deletes the ``-shm`` file only when no connection has it open, so the mapped bytes stay those SQLite uses.
    """

    SIZE = 48
    # WalIndexHdr.iVersion of the only WAL-index format there is so far (SQLite 3.7.0 and later).
    VERSION = 3007000

    def __init__(self, mapping: mmap.mmap) -> None:
        self._mapping = mapping

    def read(self) -> bytes | None:
        first = self._mapping[:self.SIZE]
        second = self._mapping[self.SIZE:2 * self.SIZE]
        return first if first == second else None


def wal_index_header(alias: str, raw, database_name) -> WalIndexHeader | None:
    """The WAL-index header of ``raw``, this thread's open connection to ``alias``; None where there is none."""
    mapped = _kept.headers.get(alias)
    if mapped is None or mapped[0] is not raw:
        # The driver's connection objects take no weak references: this thread holds its current one's only.
        mapped = _kept.headers[alias] = (raw, _map_wal_index_header(raw, str(database_name)))
    return mapped[1]


def _map_wal_index_header(raw, database_name: str) -> WalIndexHeader | None:
    (mode,) = raw.execute("PRAGMA journal_mode").fetchone()
    if mode.lower() != "wal" or database_name.startswith("file:"):
        return None
    # A read opens the connection's WAL index (and so keeps the -shm file as it is) before it is mapped.
    raw.execute("PRAGMA data_version").fetchone()
    try:
        with open(database_name + "-shm", "rb") as shm:
            if os.fstat(shm.fileno()).st_size < 2 * WalIndexHeader.SIZE:
                return None
            mapping = mmap.mmap(shm.fileno(), 2 * WalIndexHeader.SIZE, access=mmap.ACCESS_READ)
    except OSError:
        return None
    (version,) = struct.unpack_from("=I", mapping, 0)
    if version != WalIndexHeader.VERSION:
        mapping.close()
        return None
    return WalIndexHeader(mapping)


class ChangeListener:
    """This process's ear on one PostgreSQL database: a thread with a LISTEN connection of its own.

    On a change notification it moves the generation on (what was kept is no longer used) and then
    acknowledges it. A commit made in this process waits, before it returns, until every listener of every
    process has acknowledged it (``await_acknowledgements``), so by the time the code that made the change
    answers anyone, no worker uses an answer from before it.

    Kept answers are used only while the thread has heard from the database within SILENCE_SECONDS (it pings
    after PING_SECONDS of quiet). A commit that cannot be confirmed (a listener that does not acknowledge, this
    process's own listener down) waits ACK_TIMEOUT_SECONDS, longer than that: by then a worker that has not
    heard of the change has not heard from the database for SILENCE_SECONDS either, so it keeps nothing.
    """

    def __init__(self, alias: str, params: dict) -> None:
        self.alias = alias
        self.pid = _process_id
        self.dbname = params.get("dbname")
        self._params = {**params, "application_name": LISTENER_APPLICATION_NAME, "autocommit": True}
        # A database that does not answer must not hold the thread long: its kept answers are unused meanwhile,
        # but it is back sooner.
        for name, value in (("connect_timeout", 2), ("keepalives", 1), ("keepalives_idle", 5),
                            ("keepalives_interval", 2), ("keepalives_count", 2), ("tcp_user_timeout", 5000)):
            self._params.setdefault(name, value)
        self._generation = next(_changes)
        self._alive_until = 0.0
        self._heard_at = 0.0
        self._backend_pid: int | None = None
        self._condition = threading.Condition()
        self._to_acknowledge: list[str] = []
        self._wanted: list[str] = []  # own changes whose listeners are still to be counted
        self._expected: dict[str, frozenset[int]] = {}  # own change -> listeners that must acknowledge it
        self._acknowledged: dict[str, set[int]] = {}
        self._acknowledged_at: dict[str, float] = {}
        self._stopping = False
        # Wakes the thread; its ends are closed by the thread itself when it stops, under this lock.
        self._wake_lock = threading.Lock()
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_reader, False)
        os.set_blocking(self._wake_writer, False)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"api-change-listener-{alias}", daemon=True)
        self._thread.start()

    def generation(self) -> int | None:
        """A number that moves on with each change heard (and each new connection); None while the thread is
        not known to be listening."""
        if monotonic() < self._alive_until:
            return self._generation
        return None

    def is_running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def wait_until_listening(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def hear(self) -> None:
        self._generation = next(_changes)

    def await_acknowledgements(self, change: str) -> None:
        """Return once every listener of this database has acknowledged ``change``, a commit of this process;
        after ACK_TIMEOUT_SECONDS in any case (which is also safe, see the class)."""
        deadline = monotonic() + ACK_TIMEOUT_SECONDS
        with self._condition:
            if self._backend_pid is not None:
                self._wanted.append(change)
                self._wake()
            try:
                while True:
                    expected = self._expected.get(change)
                    if expected is not None and expected <= self._acknowledged.get(change, set()):
                        return
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        missing = (expected or frozenset()) - self._acknowledged.get(change, set())
                        logger.warning("API data change %s not confirmed by listener(s) %s within %.1f s",
                                       change, sorted(missing) or "(not counted)", ACK_TIMEOUT_SECONDS)
                        return
                    self._condition.wait(remaining)
            finally:
                self._expected.pop(change, None)
                self._acknowledged.pop(change, None)
                self._acknowledged_at.pop(change, None)

    def close(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(timeout=5)

    # The thread

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_writer is not None:
                try:
                    os.write(self._wake_writer, b"x")
                except BlockingIOError:
                    pass  # already awake

    def _run(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._stopping:
                    self._listen(selector)
                    if not self._stopping:
                        selector.select(LISTEN_RETRY_SECONDS)
                        self._drain_wakes()
        finally:
            with self._wake_lock:
                os.close(self._wake_reader)
                os.close(self._wake_writer)
                self._wake_writer = None

    def _listen(self, selector) -> None:
        """One connection's life: listen, serve until it fails or the listener stops."""
        connection = None
        try:
            connection = psycopg.connect(**self._params)
            connection.add_notify_handler(self._on_notification)
            connection.execute(f"LISTEN {CHANGES_CHANNEL}")
            connection.execute(f"LISTEN {ACKNOWLEDGEMENTS_CHANNEL}")
            with self._condition:
                self._backend_pid = connection.info.backend_pid
            # Whatever was kept was read before this connection listened: changes since would be unheard.
            self.hear()
            self._heard_at = monotonic()
            self._alive_until = self._heard_at + SILENCE_SECONDS
            self._ready.set()
            socket = connection.pgconn.socket  # asked once: a lost connection no longer says
            selector.register(socket, selectors.EVENT_READ)
            try:
                self._serve(connection, selector)
            finally:
                selector.unregister(socket)
        except psycopg.Error as error:
            if not self._stopping:
                logger.warning("listening for API data changes failed (%s); keys are looked up every time "
                               "until it is back", error)
        except Exception:
            # Anything else must not end the thread: this process's commits could no longer be confirmed.
            logger.exception("listening for API data changes failed; keys are looked up every time until it is back")
        finally:
            self._alive_until = 0.0
            self.hear()
            with self._condition:
                self._backend_pid = None
                self._condition.notify_all()
            if connection is not None:
                connection.close()

    def _drain_wakes(self) -> None:
        try:
            os.read(self._wake_reader, 4096)
        except BlockingIOError:
            pass

    def _serve(self, connection, selector) -> None:
        pgconn = connection.pgconn
        while not self._stopping:
            selector.select(PING_SECONDS)
            self._drain_wakes()
            pgconn.consume_input()
            while (notification := pgconn.notifies()) is not None:
                self._heard_at = monotonic()
                self._on_notification(psycopg.Notify(notification.relname.decode(), notification.extra.decode(),
                                                     notification.be_pid))
            if monotonic() - self._heard_at >= PING_SECONDS:
                connection.execute("SELECT 1")  # notifications that come meanwhile go to _on_notification
                self._heard_at = monotonic()
            self._count_listeners(connection)
            self._acknowledge(connection)
            self._alive_until = self._heard_at + SILENCE_SECONDS
            self._forget_old_acknowledgements()

    def _on_notification(self, notification) -> None:
        if notification.channel == CHANGES_CHANNEL:
            self.hear()  # first: an acknowledgement says that this process no longer uses older answers
            self._to_acknowledge.append(notification.payload)
        elif notification.channel == ACKNOWLEDGEMENTS_CHANNEL:
            with self._condition:
                self._acknowledged.setdefault(notification.payload, set()).add(notification.pid)
                self._acknowledged_at[notification.payload] = monotonic()
                self._condition.notify_all()

    def _count_listeners(self, connection) -> None:
        with self._condition:
            wanted, self._wanted = self._wanted, []
        if not wanted:
            return
        # Counted after the commit: a listener that connects later reads what it keeps after the change. One
        # that has not sent its first statement (LISTEN) yet keeps nothing until it has, so it is not waited for.
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s AND query <> ''",
            [LISTENER_APPLICATION_NAME],
        ).fetchall()
        self._heard_at = monotonic()
        with self._condition:
            for change in wanted:
                self._expected[change] = frozenset(pid for (pid,) in rows)
            self._condition.notify_all()

    def _acknowledge(self, connection) -> None:
        while self._to_acknowledge:
            change = self._to_acknowledge.pop(0)
            connection.execute("SELECT pg_notify(%s, %s)", [ACKNOWLEDGEMENTS_CHANNEL, change])
            self._heard_at = monotonic()

    def _forget_old_acknowledgements(self) -> None:
        # Acknowledgements of other processes' changes, which no one here waits for.
        horizon = monotonic() - 2 * ACK_TIMEOUT_SECONDS
        with self._condition:
            for change in [c for c, at in self._acknowledged_at.items() if at < horizon and c not in self._expected]:
                del self._acknowledged_at[change]
                self._acknowledged.pop(change, None)


def listen_on_new_connection(sender, connection, **kwargs) -> None:
    """connection_created: make sure this process listens to the database (its own listener, started now, so
    that it hears the acknowledgements of this connection's commits), and have this connection LISTEN too, so a
    commit made on it is heard, and waited for, in the very answer to its COMMIT.

    SANDBOX_KEEP_KEY_LOOKUPS must be the same in every process: one with it off neither keeps nor waits.
    """
    if connection.vendor != "postgresql" or connection.alias == NO_DB_ALIAS or not settings.SANDBOX_KEEP_KEY_LOOKUPS:
        return
    alias = connection.alias
    start_listener(alias, connection.get_connection_params())
    raw = connection.connection
    backend_pid = raw.info.backend_pid

    def heard_on_own_connection(notification) -> None:
        if notification.channel != CHANGES_CHANNEL:
            return
        # Looked up now: the listener may have been replaced since this connection was made.
        listener = change_listener(alias)
        if listener is not None:
            listener.hear()
        if notification.pid == backend_pid:  # a commit made on this very connection
            if listener is None:
                # No ear to count acknowledgements with (after a fork, say): the safe wait, in full.
                listener = _UNCONFIRMED
            listener.await_acknowledgements(notification.payload)

    raw.add_notify_handler(heard_on_own_connection)
    # On the driver's connection: not a query of the request's (nor of a test's query count).
    raw.execute(f"LISTEN {CHANGES_CHANNEL}")


class _Unconfirmed:
    """Stands in for a listener when there is none: waits out the timeout."""

    def await_acknowledgements(self, change: str) -> None:
        logger.warning("API data change %s: no listener in this process to confirm it; waiting %.1f s",
                       change, ACK_TIMEOUT_SECONDS)
        threading.Event().wait(ACK_TIMEOUT_SECONDS)


_UNCONFIRMED = _Unconfirmed()
# Shared by all listeners, also across fork(): a number is never handed out twice, so an answer a parent
# kept can never match a generation of its child's.
_changes = itertools.count(1)
_listeners: dict[str, ChangeListener] = {}
_listeners_lock = threading.Lock()
# Listeners a forked process inherited: the parent's sockets, kept referenced so that collecting them in the
# child never closes (and so ends) the parent's session.
_inherited: list[ChangeListener] = []


def change_listener(alias: str) -> ChangeListener | None:
    """This process's listener on ``alias``, if it has one (started by its first connection there)."""
    listener = _listeners.get(alias)
    if listener is None or listener.pid != _process_id:
        return None
    return listener


def start_listener(alias: str, params: dict) -> ChangeListener:
    """This process's listener on ``alias``: started if it has none, or one on another database, or one whose
    thread has stopped; a new one is given up to its connect timeout to listen."""
    with _listeners_lock:
        listener = _listeners.get(alias)
        if (listener is not None and listener.pid == _process_id and listener.dbname == params.get("dbname")
                and listener.is_running()):
            return listener
        replaced = listener
        listener = _listeners[alias] = ChangeListener(alias, params)
    if replaced is not None:
        if replaced.pid == _process_id:
            replaced.close()
        else:
            _inherited.append(replaced)
    listener.wait_until_listening(timeout=3)
    return listener


def close_listeners() -> None:
    """Stop this process's listeners (before its database is dropped, say)."""
    with _listeners_lock:
        stopping = [listener for listener in _listeners.values() if listener.pid == _process_id]
        _listeners.clear()
    for listener in stopping:
        listener.close()


def _forget_after_fork() -> None:
    # The child starts with nothing kept (its parent's answers are under the parent's generations anyway), and
    # with a lock no thread of the parent's can be holding.
    global _listeners_lock, _process_id
    _kept.by_alias = {}
    _kept.headers = {}
    _listeners_lock = threading.Lock()
    _process_id = os.getpid()


# This process's id (os.getpid() is a system call each time, and change_listener asks on every lookup).
_process_id = os.getpid()
os.register_at_fork(after_in_child=_forget_after_fork)
# A worker that stops says goodbye to the database at once: a listener left in pg_stat_activity until the
# server notices would hold up the next commits for ACK_TIMEOUT_SECONDS.
atexit.register(close_listeners)
