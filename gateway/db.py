"""Running the gateway's few database reads off the event loop.

They are cold-path reads (a key after a cache miss, a counter rebuilt from the ledger), so each
runs in a worker thread and closes its connection afterwards: no thread keeps one open.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection

P = ParamSpec("P")
R = TypeVar("R")


def db_read(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(function)
    def closing(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return sync_to_async(closing, thread_sensitive=False)


def ping() -> None:
    """``SELECT 1`` on this thread's connection: whether the database answers."""
    close_old_connections()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
