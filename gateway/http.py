"""Small ASGI helpers: reading the body and answering JSON or an event stream."""

from __future__ import annotations

import orjson
from django.conf import settings

from gateway.errors import GatewayError, invalid_request


class BodyTooLarge(GatewayError):
    """A GatewayError, so the endpoint answers it (and logs the call) as it answers any refusal."""

    def __init__(self, limit_mb: int) -> None:
        super().__init__(413, f"The request body is larger than the limit of {limit_mb} MiB.",
                         type="invalid_request_error", code="request_too_large")


async def read_body(receive) -> bytes:
    """The whole body; a body over ``NEMO_MAX_BODY_MB`` raises BodyTooLarge as soon as its
    chunks go past it (the rest is never read)."""
    limit_mb = settings.NEMO_MAX_BODY_MB
    limit = limit_mb * 1024 * 1024
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away before sending its request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit_mb)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def json_object(raw: bytes) -> dict:
    """A request body that must be a JSON object, or the contract's 400."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid_request("The body must be a JSON object.")
    return body


def header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _encode_headers(headers: dict[str, str], content_type: bytes) -> list[tuple[bytes, bytes]]:
    """``headers``: lower-case names (as ASGI sends them) and str values."""
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    encoded.append((b"content-type", content_type))
    return encoded


async def send_json(send, status: int, payload, headers: dict[str, str] | None = None) -> None:
    await send_json_bytes(send, status, orjson.dumps(payload), headers)


async def send_json_bytes(send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """A JSON body already encoded (an upstream's own answer, sent on as it came)."""
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": _encode_headers(headers or {}, b"application/json"),
    })
    await send({"type": "http.response.body", "body": body})


async def send_body(send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _encode_headers({}, content_type)})
    await send({"type": "http.response.body", "body": body})


async def start_event_stream(send, headers: dict[str, str]) -> None:
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": _encode_headers({"cache-control": "no-cache", **headers}, b"text/event-stream"),
    })


def sse_event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
