"""The signature of a webhook body: ``X-Nemo-Signature: sha256=<hex HMAC-SHA256 of the body>``,
keyed with the webhook's secret, over the exact bytes sent."""

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "X-Nemo-Signature"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str) -> bool:
    """What a receiver checks: the header is the body's signature (compared in constant time)."""
    return hmac.compare_digest(signature(secret, body), header or "")
