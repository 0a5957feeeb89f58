"""OAuth access tokens for Vertex AI.

google-auth is synchronous (file read, HTTP to the token endpoint), so refreshes run in a worker
thread and never block the event loop. One token source per credentials file is shared by every
provider that uses the file, and concurrent callers wait for a single refresh.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
from google.oauth2 import service_account

from gateway.providers.base import UpstreamError

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
# Refresh early so a token never expires between being handed out and reaching Vertex.
REFRESH_MARGIN = timedelta(minutes=5)
# google-auth waits 120 s by default; a stuck token endpoint must fail the attempt sooner.
TOKEN_REQUEST_TIMEOUT_S = 10


class AccessTokenSource:
    """Tokens from a service-account file, or from the environment's default credentials."""

    def __init__(self, credentials_path: str | None) -> None:
        self.credentials_path = credentials_path
        self._credentials: google.auth.credentials.Credentials | None = None
        self._lock = asyncio.Lock()
        self._transport = functools.partial(google.auth.transport.requests.Request(), timeout=TOKEN_REQUEST_TIMEOUT_S)

    async def token(self) -> str:
        if not self.fresh():
            async with self._lock:
                # Another caller may have refreshed while this one waited for the lock.
                if not self.fresh():
                    await self._refresh()
        assert self._credentials is not None
        return self._credentials.token

    def fresh(self) -> bool:
        credentials = self._credentials
        if credentials is None or not credentials.token:
            return False
        if credentials.expiry is None:
            return True
        # google-auth keeps expiry as a naive UTC datetime.
        expiry = credentials.expiry.replace(tzinfo=UTC)
        return expiry - datetime.now(UTC) > REFRESH_MARGIN

    async def _refresh(self) -> None:
        try:
            await asyncio.to_thread(self._refresh_blocking)
        except google.auth.exceptions.TransportError as exc:
            raise UpstreamError("connect", f"token endpoint unreachable: {exc}") from exc
        except (google.auth.exceptions.GoogleAuthError, OSError, ValueError) as exc:
            raise UpstreamError("server", f"no access token: {exc}") from exc

    def _refresh_blocking(self) -> None:
        if self._credentials is None:
            self._credentials = self._load()
        self._credentials.refresh(self._transport)

    def _load(self) -> google.auth.credentials.Credentials:
        if self.credentials_path:
            return service_account.Credentials.from_service_account_file(self.credentials_path, scopes=SCOPES)
        credentials, _project = google.auth.default(scopes=SCOPES)
        return credentials


_sources: dict[str | None, AccessTokenSource] = {}


def token_source(credentials_path: str | None) -> AccessTokenSource:
    """The shared source for a credentials file (``None``: the default credentials)."""
    if credentials_path not in _sources:
        _sources[credentials_path] = AccessTokenSource(credentials_path)
    return _sources[credentials_path]
