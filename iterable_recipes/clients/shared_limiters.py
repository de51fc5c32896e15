"""Rate limiters shared by every process that sends: the pacing rule of ``clients.limiter`` kept in a
SQLite file (one machine), Redis or PostgreSQL (several machines).

Each backend keeps one row (or hash) per name: the next free slot and the rate factor's last cut
(``limiter.PaceState``). ``reserve`` takes the slot with one atomic statement (SQLite: one
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` in its own write transaction; PostgreSQL: the same
in one round trip; Redis: one Lua script), and ``acquire`` then sleeps exactly until it. A 429
(``slow_down``) is rare, so it reads, applies ``limiter.throttled`` and writes back in one transaction
(BEGIN IMMEDIATE, SELECT ... FOR UPDATE, WATCH/MULTI).

Times are the backend's: SQLite the machine's wall clock (every process on it reads the same one),
Redis its TIME, PostgreSQL its clock_timestamp(), so machines whose clocks drift still agree. Only
the wait until a slot is used locally. ``clock`` replaces the backend's time (tests).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg_pool import ConnectionPool

from iterable_recipes.clients.limiter import Pace, PacedLimiter, PaceState, Rate, Slot, throttled

if TYPE_CHECKING:
    import psycopg
    import redis

__all__ = ["PostgresLimiter", "RedisLimiter", "SQLiteLimiter", "SharedLimiter", "postgres_conninfo"]

Clock = Callable[[], float]
Throttle = Callable[[PaceState, float], PaceState]
# Idle names are forgotten after a day (Redis): a forgotten name starts again at the full rate.
_REDIS_TTL_SECONDS = 86_400


class SharedLimiter(PacedLimiter):
    """What the three backends share: the rule's ``reserve``, ``slow_down`` and ``paused_for`` over a
    backend's one atomic take and one read-modify-write."""

    def __init__(
        self, rates: Mapping[str, Rate], *, clock: Clock | None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__(rates, sleep=sleep)
        self._clock = clock

    def reserve(self, name: str) -> Slot:
        """Take the next free slot of ``name`` in the backend (one atomic statement)."""
        return self._take(name, self.pace(name))

    def slow_down(self, name: str, retry_after: float | None = None) -> None:
        """Pause ``name`` and lower its rate for every process sharing this backend."""
        pace = self.pace(name)
        self._update(name, lambda state, now: throttled(state, pace, now, retry_after))

    def paused_for(self, name: str) -> float:
        """Seconds until the next free slot of ``name`` (0 when one is free now)."""
        return max(0.0, self._ahead(name))

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> SharedLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> float | None:
        """The injected clock's time, or None for the backend's own."""
        return None if self._clock is None else self._clock()

    def _take(self, name: str, pace: Pace) -> Slot:
        raise NotImplementedError

    def _update(self, name: str, change: Throttle) -> None:
        raise NotImplementedError

    def _ahead(self, name: str) -> float:
        raise NotImplementedError


# The take, for both SQL backends: {greatest}/{least} and the parameter style differ. The inserted row
# is the first grant (slot = now); on conflict EXCLUDED.slot is now. ``taken_at`` records it. ``now``
# is read once (clock_timestamp() moves between two calls); WHERE true lets SQLite parse ON CONFLICT.
_TAKE_SQL = """
INSERT INTO {table} AS s (name, next_free, slot, taken_at, cut, cut_at)
SELECT {name}, c.now + {interval}, c.now, c.now, 1.0, 0.0 FROM (SELECT {now} AS now) AS c WHERE true
ON CONFLICT (name) DO UPDATE SET
  slot = {greatest}(s.next_free, EXCLUDED.slot),
  taken_at = EXCLUDED.slot,
  next_free = {greatest}(s.next_free, EXCLUDED.slot)
    + {interval} / {least}(1.0, s.cut + {recover} * {greatest}(0.0, EXCLUDED.slot - s.cut_at))
RETURNING slot, taken_at
"""
_COLUMNS = "(name TEXT PRIMARY KEY, next_free {real} NOT NULL, slot {real} NOT NULL, taken_at {real} NOT NULL, cut {real} NOT NULL, cut_at {real} NOT NULL)"  # noqa: E501


def _quoted(table: str) -> str:
    """``table`` as a quoted SQL identifier of letters, digits and underscores."""
    return '"' + re.sub(r"\W+", "_", table) + '"'


class SQLiteLimiter(SharedLimiter):
    """Limits shared by the processes of one machine, in a SQLite file (WAL; SQLite's own locking)."""

    def __init__(
        self,
        path: str | Path,
        rates: Mapping[str, Rate],
        *,
        table_prefix: str = "limiter",
        clock: Clock = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from filelock import FileLock

        super().__init__(rates, clock=clock, sleep=sleep)
        self._time = clock
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._table = _quoted(f"{table_prefix}_pace")
        # Switching to WAL needs the file to itself: processes starting together take turns.
        with FileLock(f"{self._path}.lock"):
            self._conn = sqlite3.connect(
                self._path, timeout=30, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {self._table} {_COLUMNS.format(real='REAL')}")
        self._take_sql = _TAKE_SQL.format(
            table=self._table, name=":name", now=":now", interval=":interval", recover=":recover",
            greatest="max", least="min",
        )  # fmt: skip
        self._conn_lock = threading.Lock()

    def _take(self, name: str, pace: Pace) -> Slot:
        params = {"name": name, "now": self._time(), "interval": pace.interval, "recover": pace.recover}
        with self._conn_lock:
            # fetchall steps the statement to its end, so its write transaction ends here.
            ((slot, _),) = self._conn.execute(self._take_sql, params).fetchall()
        return Slot(float(slot), float(slot) - self._time())

    def _update(self, name: str, change: Throttle) -> None:
        with self._conn_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                now = self._time()
                row = self._conn.execute(
                    f"SELECT next_free, cut, cut_at FROM {self._table} WHERE name = ?", (name,)
                ).fetchone()
                state = change(PaceState(*row) if row else PaceState(now), now)
                self._conn.execute(
                    f"INSERT INTO {self._table} (name, next_free, slot, taken_at, cut, cut_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                    "next_free = excluded.next_free, cut = excluded.cut, cut_at = excluded.cut_at",
                    (name, state.next_free, now, now, state.cut, state.cut_at),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _ahead(self, name: str) -> float:
        with self._conn_lock:
            row = self._conn.execute(
                f"SELECT next_free FROM {self._table} WHERE name = ?", (name,)
            ).fetchone()
        return 0.0 if row is None else float(row[0]) - self._time()

    def close(self) -> None:
        """Close the file."""
        with self._conn_lock:
            self._conn.close()


# ARGV: now ('' for Redis's TIME), interval, recover. Returns the slot and now as strings: Redis turns
# a Lua number into an integer reply, and %.17g keeps every bit of a double.
_REDIS_TAKE = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local interval, recover = tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'next_free', 'cut', 'cut_at')
local next_free = tonumber(s[1]) or now
local cut = tonumber(s[2]) or 1.0
local cut_at = tonumber(s[3]) or 0.0
local slot = math.max(next_free, now)
local factor = math.min(1.0, cut + recover * math.max(0.0, now - cut_at))
redis.call('HSET', KEYS[1], 'next_free', string.format('%.17g', slot + interval / factor),
  'cut', string.format('%.17g', cut), 'cut_at', string.format('%.17g', cut_at))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {string.format('%.17g', slot), string.format('%.17g', now)}
"""


class RedisLimiter(SharedLimiter):
    """Limits shared by every machine that reaches one Redis (one hash per name)."""

    def __init__(
        self,
        redis_client: str | redis.Redis,
        rates: Mapping[str, Rate],
        *,
        key_prefix: str = "recipes",
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import redis as redis_lib

        super().__init__(rates, clock=clock, sleep=sleep)
        self._owns_client = isinstance(redis_client, str)
        self._redis: redis_lib.Redis = (
            redis_lib.Redis.from_url(redis_client) if isinstance(redis_client, str) else redis_client
        )
        self._prefix = key_prefix
        self._take_script = self._redis.register_script(_REDIS_TAKE)

    def _key(self, name: str) -> str:
        return f"{self._prefix}:limiter:{name}"

    def _server_now(self, client: Any) -> float:
        now = self._now()
        if now is not None:
            return now
        seconds, micros = client.time()
        return float(seconds) + float(micros) / 1_000_000

    def _take(self, name: str, pace: Pace) -> Slot:
        now = self._now()
        ttl = str(_REDIS_TTL_SECONDS)
        args = ["" if now is None else repr(now), repr(pace.interval), repr(pace.recover), ttl]
        slot, at = (float(x) for x in self._take_script(keys=[self._key(name)], args=args))
        return Slot(slot, slot - at)

    def _update(self, name: str, change: Throttle) -> None:
        key = self._key(name)

        def apply(pipe: Any) -> None:
            now = self._server_now(pipe)
            raw = pipe.hmget(key, "next_free", "cut", "cut_at")
            state = change(PaceState(*map(float, raw)) if raw[0] is not None else PaceState(now), now)
            pipe.multi()
            pipe.hset(
                key,
                mapping={
                    "next_free": repr(state.next_free),
                    "cut": repr(state.cut),
                    "cut_at": repr(state.cut_at),
                },
            )
            pipe.expire(key, _REDIS_TTL_SECONDS)

        self._redis.transaction(apply, key)

    def _ahead(self, name: str) -> float:
        raw = self._redis.hget(self._key(name), "next_free")
        return 0.0 if raw is None else float(raw) - self._server_now(self._redis)

    def close(self) -> None:
        """Close the client when this limiter made it."""
        if self._owns_client:
            self._redis.close()


def postgres_conninfo(url: str) -> str:
    """A libpq URL from a SQLAlchemy one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


_PG_NOW = "COALESCE(%(now)s::float8, EXTRACT(EPOCH FROM clock_timestamp())::float8)"


class PostgresLimiter(SharedLimiter):
    """Limits shared by every machine that reaches one PostgreSQL database (one row per name)."""

    def __init__(
        self,
        postgres: str | ConnectionPool,
        rates: Mapping[str, Rate],
        *,
        table_prefix: str = "recipes",
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rates, clock=clock, sleep=sleep)
        self._owns_pool = isinstance(postgres, str)
        # Autocommit: a take is one round trip, not BEGIN, the statement and COMMIT.
        self._pool = (
            ConnectionPool(
                postgres_conninfo(postgres), min_size=1, max_size=4, open=True, kwargs={"autocommit": True}
            )
            if isinstance(postgres, str)
            else postgres
        )
        self._table = _quoted(f"{table_prefix.lower()}_limiter_pace")
        with self._pool.connection() as conn, conn.transaction():
            # Serialises CREATE TABLE IF NOT EXISTS between processes starting together.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._table,))
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self._table} {_COLUMNS.format(real='float8')}")
        self._take_sql = _TAKE_SQL.format(
            table=self._table, name="%(name)s", now=_PG_NOW, interval="%(interval)s::float8",
            recover="%(recover)s::float8", greatest="GREATEST", least="LEAST",
        ).replace("RETURNING slot, taken_at", f"RETURNING slot, slot - {_PG_NOW}")  # fmt: skip

    def _take(self, name: str, pace: Pace) -> Slot:
        params = {"name": name, "now": self._now(), "interval": pace.interval, "recover": pace.recover}
        with self._pool.connection() as conn:
            row = conn.execute(self._take_sql, params).fetchone()
        assert row is not None
        return Slot(float(row[0]), float(row[1]))

    def _update(self, name: str, change: Throttle) -> None:
        with self._pool.connection() as conn, conn.transaction():
            now = self._one(conn, f"SELECT {_PG_NOW}", {"now": self._now()})[0]
            conn.execute(
                f"INSERT INTO {self._table} (name, next_free, slot, taken_at, cut, cut_at) "
                "VALUES (%s, %s, %s, %s, 1.0, 0.0) ON CONFLICT (name) DO NOTHING",
                (name, now, now, now),
            )
            row = self._one(
                conn, f"SELECT next_free, cut, cut_at FROM {self._table} WHERE name = %s FOR UPDATE", (name,)
            )
            state = change(PaceState(*row), now)
            conn.execute(
                f"UPDATE {self._table} SET next_free = %s, cut = %s, cut_at = %s WHERE name = %s",
                (state.next_free, state.cut, state.cut_at, name),
            )

    @staticmethod
    def _one(conn: psycopg.Connection[Any], sql: str, params: Any) -> tuple[Any, ...]:
        row = conn.execute(sql, params).fetchone()
        assert row is not None
        return tuple(row)

    def _ahead(self, name: str) -> float:
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT next_free - {_PG_NOW} FROM {self._table} WHERE name = %(name)s",
                {"name": name, "now": self._now()},
            ).fetchone()
        return 0.0 if row is None else float(row[0])

    def close(self) -> None:
        """Close the pool when this limiter made it."""
        if self._owns_pool:
            self._pool.close()
