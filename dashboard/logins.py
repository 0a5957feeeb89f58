"""The sign-in throttle of the dashboard and the admin: guessing passwords takes time.

Failed sign-ins are counted per username and per client address in Django's cache (Redis when
REDIS_URL is set, so every worker sees the same counts); a count lives for a window from its
first failure. Once either count reaches the limit, sign-in is refused, the right password too,
until the window has passed. A successful sign-in clears the username's count, not the address's:
one address may be trying many usernames.
"""

import hashlib

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    if settings.NEMO_TRUST_X_FORWARDED_FOR:
        # The proxy appends the address it saw; whatever stands before it, the client wrote.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR", "")


def _counters(request: HttpRequest | None, username: str) -> list[str]:
    """The username's counter, then the address's (a form built without a request has none)."""
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()
    counters = [f"nemo:login-failures:user:{digest}"]
    if request is not None:
        counters.append(f"nemo:login-failures:address:{client_address(request)}")
    return counters


def login_paused(*, request: HttpRequest | None, username: str) -> bool:
    counts = cache.get_many(_counters(request, username)).values()
    return any(count >= settings.NEMO_LOGIN_MAX_FAILURES for count in counts)


def login_failure_record(*, request: HttpRequest | None, username: str) -> None:
    for counter in _counters(request, username):
        # add() starts the window at the first failure; incr() leaves its expiry alone.
        cache.add(counter, 0, timeout=settings.NEMO_LOGIN_WINDOW_S)
        try:
            cache.incr(counter)
        except ValueError:
            # The window ran out between the two: this failure starts the next one.
            cache.set(counter, 1, timeout=settings.NEMO_LOGIN_WINDOW_S)


def login_success_record(*, request: HttpRequest | None, username: str) -> None:
    cache.delete(_counters(request, username)[0])
