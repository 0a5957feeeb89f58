"""Requests for ``/v1/...`` routes the gateway does not serve: still a 404 in OpenAI's shape, but
logged (a line of ``gateway.events``) and counted per worker, so an operator sees which routes
clients ask for (a framework built for an API we do not serve yet shows up here first).

The log line names the key by its public prefix, never its secret; a credential that is not one
of ours is not named at all (it may be a real OpenAI key sent to the wrong place).
"""

from __future__ import annotations

from collections import Counter

from gateway import events

# Clients choose the paths: past this many distinct routes, the rest are counted together.
MAX_ROUTES = 1000
MAX_PATH = 200
OTHER_ROUTES = ("*", "*")


class UnknownRoutes:
    """This worker's count of requests for each unknown route (method, path)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    @property
    def total(self) -> int:
        return self.counts.total()

    def seen(self, *, method: str, path: str, authorization: str | None, request_id: str = "") -> None:
        route = (method, path[:MAX_PATH])
        if route not in self.counts and len(self.counts) >= MAX_ROUTES:
            route = OTHER_ROUTES
        self.counts[route] += 1
        events.unknown_route(request_id=request_id, method=method, path=path[:MAX_PATH], authorization=authorization)
