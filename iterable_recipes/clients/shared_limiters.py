"""Rate limiters shared by every process that sends: pyrate-limiter buckets in SQLite, Redis or PostgreSQL.

Each implements ``clients.limiter.RateLimiter``. ``acquire(name)`` takes a slot from the library's
bucket for ``name`` (a sliding-window log stored in the backend, so every process sharing the file,
Redis or database counts against the same window) and then honours a pause; ``slow_down(name, s)``
records "paused until" in the same backend, so one 429 holds back every process.

A limit that divides by ten is also held per tenth of its interval (100/s is also 10 per 100 ms),
which caps the burst at a tenth of the limit instead of a full second's worth at once;
``burst(name)`` says which applies. Names without a rate are not counted but still honour pauses.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pyrate_limiter as pl
from psycopg_pool import ConnectionPool
from pyrate_limiter.buckets.redis_bucket import LuaScript

from iterable_recipes.clients.limiter import Rate

if TYPE_CHECKING:
    import redis

# Sliding-log waits are exact to the millisecond; a small margin keeps a retry from landing on the
# boundary while adding little idle time per wait (the library's default is 50 ms).
_BUFFER_MS = 5
# Longest single sleep while paused, so a pause shortened by nobody is still re-read now and then.
_MAX_PAUSE_SLEEP = 1.0


def pyrate_rates(rate: Rate) -> list[pl.Rate]:
    """The library's rate list for one of ours, with a finer rate that spreads the requests out.

    A window's whole allowance must not leave at one instant: requests sent together reach the
    vendor a few milliseconds apart, the next window's first one lands inside the same vendor window,
    and every 429 pauses all senders. So 100/s is also held as 10 per 100 ms, and a small limit
    (5/s) as one request per fifth of the interval.
    """
    interval_ms = max(1, round(rate.seconds * 1000))
    rates = [pl.Rate(rate.limit, interval_ms)]
    if rate.limit % 10 == 0 and rate.limit >= 10 and interval_ms % 10 == 0:
        rates.append(pl.Rate(rate.limit // 10, interval_ms // 10))
    elif 1 < rate.limit < 10:
        rates.append(pl.Rate(1, max(1, interval_ms // rate.limit)))
    return rates


def burst_of(rate: Rate) -> int:
    """The burst the bound ``limit × T + burst`` allows under ``pyrate_rates(rate)``.

    The one-per-step spacing of small limits is smoothing on top, not part of the guarantee: it holds
    between processes only as well as their clocks agree to the millisecond.
    """
    return min(r.limit for r in pyrate_rates(rate) if r.limit > 1 or rate.limit == 1)


def _slug(name: str) -> str:
    """A short identifier-safe form of ``name``, unique per name (SQL table names)."""
    safe = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:24]
    return f"{safe}_{zlib.crc32(name.encode()):08x}"


class SharedLimiter:
    """What the three backends share: one pyrate ``Limiter`` per rated name, built on first use."""

    def __init__(self, rates: Mapping[str, Rate]) -> None:
        self._rates = dict(rates)
        self._limiters: dict[str, pl.Limiter] = {}
        self._lock = threading.Lock()

    # ---- RateLimiter ----------------------------------------------------------------------------

    def acquire(self, name: str) -> None:
        """Block until one request to ``name`` fits its rate and no pause holds it back."""
        limiter = self._limiter(name)
        # A weight of one always fits, so False is never final: pyrate-limiter 4.5.1 reads a computed
        # wait of exactly -1 ms as its "never fits" sentinel (seen with PostgreSQL under contention,
        # where the wait comes from an expired entry). Asking again is then correct.
        while limiter is not None and not limiter.try_acquire(name):
            time.sleep(_BUFFER_MS / 1000)
        # Checked after the slot, so a pause set while this caller waited for a slot still holds it.
        self._wait_while_paused(name)

    def slow_down(self, name: str, seconds: float) -> None:
        """Hold back every process sharing this backend from sending to ``name`` for ``seconds``."""
        if seconds > 0:
            self._set_pause(name, seconds)

    # ---- inspection and lifetime ----------------------------------------------------------------

    def burst(self, name: str) -> int:
        """Most requests to ``name`` that may pass at one instant (0 when ``name`` has no rate)."""
        rate = self._rates.get(name)
        return burst_of(rate) if rate is not None else 0

    def paused_for(self, name: str) -> float:
        """Seconds left of a pause on ``name`` (0 when none)."""
        return max(0.0, self._pause_remaining(name))

    def close(self) -> None:
        """Stop the leak threads and release connections."""
        with self._lock:
            limiters, self._limiters = list(self._limiters.values()), {}
        for limiter in limiters:
            limiter.close()
        self._close_backend()

    def __enter__(self) -> SharedLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ------------------------------------------------------------------------------

    def _limiter(self, name: str) -> pl.Limiter | None:
        rate = self._rates.get(name)
        if rate is None:
            return None
        with self._lock:
            limiter = self._limiters.get(name)
            if limiter is None:
                limiter = pl.Limiter(self._make_bucket(name, pyrate_rates(rate)), buffer_ms=_BUFFER_MS)
                self._limiters[name] = limiter
            return limiter

    def _wait_while_paused(self, name: str) -> None:
        while (remaining := self._pause_remaining(name)) > 0:
            time.sleep(min(remaining, _MAX_PAUSE_SLEEP))

    def _make_bucket(self, name: str, rates: list[pl.Rate]) -> pl.AbstractBucket:
        raise NotImplementedError

    def _pause_remaining(self, name: str) -> float:
        raise NotImplementedError

    def _set_pause(self, name: str, seconds: float) -> None:
        raise NotImplementedError

    def _close_backend(self) -> None:
        """Release what the subclass opened."""


class SQLiteLimiter(SharedLimiter):
    """Limits shared by the processes of one machine, in a SQLite file guarded by a file lock."""

    def __init__(self, path: str | Path, rates: Mapping[str, Rate], *, table_prefix: str = "limiter") -> None:
        from filelock import FileLock

        super().__init__(rates)
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._prefix = re.sub(r"\W+", "_", table_prefix)
        self._pause_table = f"{self._prefix}_pause"
        # The same lock file the library's buckets take, so switching to WAL never races them.
        with FileLock(f"{self._path}.lock"):
            self._conn = sqlite3.connect(
                self._path, timeout=30, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self._pause_table}" '
                "(name TEXT PRIMARY KEY, until REAL NOT NULL)"
            )
        self._conn_lock = threading.Lock()

    def _make_bucket(self, name: str, rates: list[pl.Rate]) -> pl.AbstractBucket:
        return pl.SQLiteBucket.init_from_file(
            rates, table=f"{self._prefix}_{_slug(name)}", db_path=str(self._path), use_file_lock=True
        )

    def _pause_remaining(self, name: str) -> float:
        with self._conn_lock:
            row = self._conn.execute(
                f'SELECT until FROM "{self._pause_table}" WHERE name = ?', (name,)
            ).fetchone()
        # Wall-clock time: every process on the machine reads the same clock.
        return 0.0 if row is None else float(row[0]) - time.time()

    def _set_pause(self, name: str, seconds: float) -> None:
        with self._conn_lock:
            self._conn.execute(
                f'INSERT INTO "{self._pause_table}" (name, until) VALUES (?, ?) '
                "ON CONFLICT(name) DO UPDATE SET until = max(until, excluded.until)",
                (name, time.time() + seconds),
            )

    def _close_backend(self) -> None:
        with self._conn_lock:
            self._conn.close()


# Extends a pause to at least ARGV[1] ms, never shortens one; Redis measures it, so clocks of the
# machines sharing it do not matter.
_REDIS_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""


_LIBRARY_COUNT = "redis.call('ZCOUNT', bucket, window_start, now)"
# The library counts entries up to the caller's own timestamp, so two processes that read the clock
# a millisecond apart (both woken by the same expiring entry) miss each other's entry and both pass.
# Counting up to +inf sees every entry newer than the window start, as the SQL buckets do.
_SHARED_PUT_ITEM = LuaScript.PUT_ITEM.replace(
    _LIBRARY_COUNT, "redis.call('ZCOUNT', bucket, window_start, '+inf')"
)


class _SharedRedisBucket(pl.RedisBucket):
    """The library's Redis bucket with the window counted up to +inf (see ``_SHARED_PUT_ITEM``)."""

    @classmethod
    def init_shared(cls, rates: list[pl.Rate], client: redis.Redis, bucket_key: str) -> _SharedRedisBucket:
        """Load the amended script and build the bucket (sync clients only)."""
        if _LIBRARY_COUNT not in LuaScript.PUT_ITEM:
            raise RuntimeError("pyrate-limiter's Redis script changed; review _SHARED_PUT_ITEM")
        script_hash = client.script_load(_SHARED_PUT_ITEM)
        return cls(rates, client, bucket_key, str(script_hash))


class RedisLimiter(SharedLimiter):
    """Limits shared by every machine that reaches one Redis."""

    def __init__(
        self, redis_client: str | redis.Redis, rates: Mapping[str, Rate], *, key_prefix: str = "recipes"
    ) -> None:
        import redis as redis_lib

        super().__init__(rates)
        self._owns_client = isinstance(redis_client, str)
        self._redis: redis_lib.Redis = (
            redis_lib.Redis.from_url(redis_client) if isinstance(redis_client, str) else redis_client
        )
        self._prefix = key_prefix
        self._pause_script = self._redis.register_script(_REDIS_PAUSE)

    def _make_bucket(self, name: str, rates: list[pl.Rate]) -> pl.AbstractBucket:
        return _SharedRedisBucket.init_shared(rates, self._redis, f"{self._prefix}:limiter:{name}")

    def _pause_key(self, name: str) -> str:
        return f"{self._prefix}:limiter-pause:{name}"

    def _pause_remaining(self, name: str) -> float:
        left_ms = int(self._redis.pttl(self._pause_key(name)))
        return left_ms / 1000 if left_ms > 0 else 0.0

    def _set_pause(self, name: str, seconds: float) -> None:
        self._pause_script(keys=[self._pause_key(name)], args=[max(1, round(seconds * 1000))])

    def _close_backend(self) -> None:
        if self._owns_client:
            self._redis.close()


def postgres_conninfo(url: str) -> str:
    """A libpq URL from a SQLAlchemy one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


class _PooledPostgresBucket(pl.PostgresBucket):
    """The library's PostgreSQL bucket, except that closing it leaves the shared pool to its owner."""

    def close(self) -> None:
        """The limiter closes the pool (or its caller does, when it passed one in)."""


class PostgresLimiter(SharedLimiter):
    """Limits shared by every machine that reaches one PostgreSQL database."""

    def __init__(
        self,
        postgres: str | ConnectionPool,
        rates: Mapping[str, Rate],
        *,
        table_prefix: str = "recipes",
    ) -> None:
        super().__init__(rates)
        self._owns_pool = isinstance(postgres, str)
        self._pool = (
            ConnectionPool(postgres_conninfo(postgres), min_size=1, max_size=4, open=True)
            if isinstance(postgres, str)
            else postgres
        )
        self._prefix = re.sub(r"\W+", "_", table_prefix.lower())
        self._pause_table = f"{self._prefix}_limiter_pause"
        with self._pool.connection() as conn:
            # Serialises CREATE TABLE IF NOT EXISTS between processes starting together.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(self._pause_table.encode()) & 0x7FFFFFFF,)
            )
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self._pause_table}" '
                "(name TEXT PRIMARY KEY, until TIMESTAMPTZ NOT NULL)"
            )

    def _make_bucket(self, name: str, rates: list[pl.Rate]) -> pl.AbstractBucket:
        return _PooledPostgresBucket(self._pool, f"{self._prefix}_{_slug(name)}", rates)

    def _pause_remaining(self, name: str) -> float:
        with self._pool.connection() as conn:
            row = conn.execute(
                f'SELECT EXTRACT(EPOCH FROM until - clock_timestamp()) FROM "{self._pause_table}" '
                "WHERE name = %s",
                (name,),
            ).fetchone()
        return 0.0 if row is None else float(row[0])

    def _set_pause(self, name: str, seconds: float) -> None:
        # The database's clock, so machines with drifting clocks agree on when the pause ends.
        with self._pool.connection() as conn:
            conn.execute(
                f'INSERT INTO "{self._pause_table}" AS p (name, until) '
                "VALUES (%s, clock_timestamp() + %s * INTERVAL '1 second') "
                "ON CONFLICT (name) DO UPDATE SET until = GREATEST(p.until, EXCLUDED.until)",
                (name, seconds),
            )

    def _close_backend(self) -> None:
        if self._owns_pool:
            self._pool.close()
