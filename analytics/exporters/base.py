"""What every exporter shares: its config rules, the failure it raises, and outbound HTTP.

Exporters run in Celery workers only, never on the hot path; the sync httpx client is fine here.
"""

import functools
import json
from collections.abc import Iterable, Iterator

import httpx

from analytics.exporters.destinations import DestinationRefused, SinkTransport, url_refusal
from analytics.models import ExportSink, RequestLog

HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ExportError(Exception):
    """The sink did not accept a batch. The whole batch is retried later; nothing is skipped."""


class Exporter:
    """Sends batches of an org's log rows to one sink. Subclasses set the config keys they take."""

    type: str = ""
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ("url",)
    secrets: tuple[str, ...] = ()

    def __init__(self, sink: ExportSink):
        self.sink = sink
        self.config = sink.config

    def send(self, rows: list[RequestLog]) -> None:
        """Delivers the rows or raises ExportError. Sending the same rows again must be harmless
        where the service allows it (event ids, object keys), since a retry resends the batch."""
        raise NotImplementedError

    @classmethod
    def clean_config(cls, config: dict) -> dict:
        unknown = sorted(set(config) - set(cls.required) - set(cls.optional))
        if unknown:
            raise ValueError(f"a {cls.type} sink does not take {', '.join(unknown)}")
        cleaned = {name: str(value).strip() for name, value in config.items() if value not in (None, "")}
        missing = [name for name in cls.required if not cleaned.get(name)]
        if missing:
            raise ValueError(f"a {cls.type} sink needs {', '.join(missing)}")
        url = cleaned.get("url")
        if url is not None:
            refusal = url_refusal(url)
            if refusal:
                raise ValueError(refusal)
            cleaned["url"] = url.rstrip("/")
        return cleaned

    @classmethod
    def redact(cls, config: dict) -> dict:
        """The config safe to show or audit: secrets reduced to their last four characters."""
        return {name: f"…{value[-4:]}" if name in cls.secrets else value for name, value in config.items()}


def dumps(payload) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def chunks_by_size(items: Iterable, *, max_bytes: int, max_items: int) -> Iterator[list]:
    """Splits JSON-serializable items into lists whose encoded size stays under the service's limit."""
    chunk: list = []
    size = 0
    for item in items:
        item_size = len(dumps(item)) + 1
        if chunk and (size + item_size > max_bytes or len(chunk) == max_items):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


@functools.cache
def _client() -> httpx.Client:
    # One pooled client per worker process, made on first use (after Celery forked): building one
    # per request costs a TLS context each time. Its transport checks where each request goes
    # (destinations.py); given a transport, httpx takes no proxy from the environment either.
    return httpx.Client(timeout=HTTP_TIMEOUT, transport=SinkTransport())


def post_json(url: str, payload, *, headers: dict | None = None, auth: tuple[str, str] | None = None) -> httpx.Response:
    """POSTs JSON; a network failure or a refused destination becomes an ExportError (the caller
    judges the status)."""
    return post_body(url, dumps(payload), headers=headers, auth=auth)


def post_body(url: str, body: bytes, *, headers: dict | None = None, auth: tuple[str, str] | None = None,
              content_type: str = "application/json") -> httpx.Response:
    """POSTs these exact bytes (a signed body as it was signed, a protobuf as it was encoded),
    through the pooled client that checks every destination; failures as in ``post_json``."""
    try:
        return _client().post(url, content=body, auth=auth, headers={"Content-Type": content_type, **(headers or {})})
    except DestinationRefused as exc:
        raise ExportError(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise ExportError(f"{url}: {type(exc).__name__}: {exc}") from exc


def describe_failure(service: str, response: httpx.Response) -> str:
    """The status and its standard phrase, nothing the server wrote: the sink's page shows this to
    the tenant, and the answer may be an internal service's (when private addresses are allowed)."""
    return f"{service} answered {response.status_code} {httpx.codes.get_reason_phrase(response.status_code)}".rstrip()
