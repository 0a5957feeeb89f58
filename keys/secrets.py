"""Secret generation and verification for virtual keys and org tokens.

A secret is ``<scheme><prefix><body>``. The prefix (12 characters of the secret) is stored in
clear to find the row; the whole secret is stored only as an HMAC-SHA256 keyed by SECRET_KEY,
and compared in constant time.
"""

import hashlib
import hmac
import re
import secrets as stdlib_secrets

from django.conf import settings

KEY_SCHEME = "sk-nemo-"
TOKEN_SCHEME = "nm-"
PREFIX_LENGTH = 12
BODY_BYTES = 32
# What token_urlsafe makes of BODY_BYTES: unpadded base64url, 43 characters.
_BODY = re.compile(r"[A-Za-z0-9_-]{43}")


def generate(scheme: str) -> tuple[str, str]:
    """A new secret and its lookup prefix. 256 bits of randomness."""
    body = stdlib_secrets.token_urlsafe(BODY_BYTES)
    secret = scheme + body
    return secret, prefix_of(secret, scheme)


def is_well_formed(secret: str, scheme: str) -> bool:
    """Whether ``secret`` has the shape ``generate`` gives it: anything else is no secret of ours,
    and is refused without a lookup."""
    return secret.startswith(scheme) and _BODY.fullmatch(secret, len(scheme)) is not None


def prefix_of(secret: str, scheme: str) -> str:
    return secret[len(scheme) : len(scheme) + PREFIX_LENGTH]


def hash_secret(secret: str) -> str:
    # hmac.digest is the one-shot C path: the gateway hashes the key of every call.
    return hmac.digest(settings.SECRET_KEY.encode(), secret.encode(), "sha256").hex()


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def hash_token(token: str) -> str:
    """Single-use tokens (invitations) that need no prefix lookup."""
    return hashlib.sha256(token.encode()).hexdigest()
