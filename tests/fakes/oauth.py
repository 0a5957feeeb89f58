"""A fake OAuth token endpoint, and service-account files that point at it."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests.fakes.behaviours import Reply
from tests.fakes.server import FakeUpstream, ReceivedRequest


class FakeTokenServer(FakeUpstream):
    """Grants ``fake-token-<n>`` (n counts the requests) valid for ``expires_in`` seconds."""

    paths = ("/token",)

    def __init__(self, *, expires_in: int = 3600) -> None:
        super().__init__()
        self.expires_in = expires_in

    @property
    def token_uri(self) -> str:
        return f"{self.root_url}/token"

    def is_stream(self, request: ReceivedRequest) -> bool:
        return False

    def answer(self, request: ReceivedRequest, reply: Reply, *, stream: bool) -> Any:
        return {"access_token": f"fake-token-{self.count}", "expires_in": self.expires_in, "token_type": "Bearer"}

    def error_body(self, status: int, message: str, *, stream: bool) -> Any:
        return {"error": "invalid_grant", "error_description": message}


def write_service_account(directory: Path, *, token_uri: str) -> Path:
    """A service-account JSON with a throwaway key, whose token_uri is the given endpoint."""
    path = directory / "service-account.json"
    account = {
        "type": "service_account",
        "project_id": "fake-project",
        "private_key_id": "fake-key-id",
        "private_key": _private_key_pem(),
        "client_email": "gateway@fake-project.iam.gserviceaccount.com",
        "client_id": "100000000000000000000",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(account))
    return path


@functools.cache
def _private_key_pem() -> str:
    # One key per test run: generating RSA keys is the slow part.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
