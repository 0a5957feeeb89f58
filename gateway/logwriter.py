"""The last step of the pipeline: the request-log row, durable before the call counts as done.

One INSERT per request would cost more than the rest of the hot path (DESIGN.md), so rows are
written in group commits: every request hands its row to one committer and waits for the commit
of the small batch it landed in. While one batch commits, the next one gathers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections, connection, transaction

logger = logging.getLogger(__name__)

MAX_BATCH = 256
COMMIT_RETRIES = 5


class LogWriter:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[object, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        # One thread, so the committer keeps one database connection.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemo-log")

    async def write(self, row) -> None:
        """Returns once the row is committed; raises if it could not be."""
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        done = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, done))
        await asyncio.shield(done)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            # Let requests finishing in the same tick join this batch.
            await asyncio.sleep(0)
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            error: BaseException | None = None
            for attempt in range(COMMIT_RETRIES):
                try:
                    await loop.run_in_executor(self._executor, _commit, [row for row, _ in batch])
                    error = None
                    break
                except Exception as exc:  # noqa: BLE001 - any database error: retry, then report
                    error = exc
                    logger.warning("request log commit failed (attempt %d): %s", attempt + 1, exc)
                    await asyncio.sleep(0.05 * 2**attempt)
            for _, done in batch:
                if done.done():
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)

    async def close(self) -> None:
        if self._task is not None:
            while self._queue is not None and not self._queue.empty():
                await asyncio.sleep(0.01)
            self._task.cancel()
        await asyncio.get_running_loop().run_in_executor(self._executor, _close_connection)
        self._executor.shutdown(wait=True)


def _close_connection() -> None:
    connection.close()


@functools.cache
def _insert_fields() -> tuple:
    """The columns the gateway writes: all but the id and those the database fills in."""
    from analytics.models import RequestLog

    return tuple(
        field for field in RequestLog._meta.concrete_fields if not field.primary_key and not field.has_db_default()
    )


def _commit(rows: list[dict]) -> None:
    """One INSERT statement for the batch, executed for every row in one round trip (psycopg's
    pipeline mode). Rows are plain dicts of the log's columns: building model instances and
    running the ORM's compiler would cost more than the rest of the insert. The statement's text
    never changes, so the driver converts it once."""
    close_old_connections()
    fields = _insert_fields()
    params = [
        [field.get_db_prep_save(row[field.attname] if field.attname in row else field.get_default(), connection)
         for field in fields]
        for row in rows
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_insert_sql(), params)


@functools.cache
def _insert_sql() -> str:
    from analytics.models import RequestLog

    quote = connection.ops.quote_name
    fields = _insert_fields()
    return (
        f"INSERT INTO {quote(RequestLog._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
