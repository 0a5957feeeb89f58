"""OTLP/HTTP traces (protobuf) in the OpenTelemetry GenAI conventions, to any collector: Langfuse,
Datadog LLM Observability, Phoenix, an OpenTelemetry Collector.

A run is one trace: an ``invoke_agent`` root span, a ``chat`` span per call (its attempts at the
upstreams as span events), and an ``execute_tool`` span per tool call the model asked for, from
the end of that call to the start of the run's next one. A call outside a run is a trace of its
own, its ``chat`` span the root. The cost is ``nemo.cost_usd``.

Ids are derived from the org, the run and the request, never random: a batch sent again after a
failure carries the same spans. The outbox sends a batch again only after a failure
(analytics/services.py), and a batch is one request, so a collector that took it gets it once.
A run's root span goes with the batch holding its first call, spanning the calls known then;
later calls of the run hang under it all the same.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.db.models import Min
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from analytics.exporters.base import Exporter, ExportError, describe_failure, post_body
from analytics.models import RequestLog

logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
SERVICE_NAME = "nemo-router"
# A header a sink sends: a token's characters for its name, no line break in its value.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the exporter sets itself.
_RESERVED_HEADERS = {"content-type", "content-length", "host"}
OPERATIONS = {"embeddings": "embeddings"}


def traces_url(url: str) -> str:
    """The collector's traces endpoint: the URL as given if it ends in ``/v1/traces``, else
    with it appended (as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is read)."""
    path = urlsplit(url).path.rstrip("/")
    return url if path.endswith(TRACES_PATH) else url.rstrip("/") + TRACES_PATH


def _id(size: int, *parts) -> bytes:
    return hashlib.sha256("|".join(str(part) for part in parts).encode()).digest()[:size]


def trace_id_of(row: RequestLog) -> bytes:
    """A run's trace, or a call's own outside one (16 bytes)."""
    return _id(16, "trace", row.org_id, "run", row.run_id) if row.run_id else _id(16, "trace", row.org_id,
                                                                                   "call", row.request_id)


def _root_span_id(org_id: int, run_id: str) -> bytes:
    return _id(8, "invoke_agent", org_id, run_id)


def _chat_span_id(row: RequestLog) -> bytes:
    return _id(8, "chat", row.org_id, row.request_id)


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def _ended(row: RequestLog) -> datetime:
    return row.created + timedelta(milliseconds=row.latency_ms)


def _value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_value(item) for item in value]))
    return AnyValue(string_value=str(value))


def attributes(**values) -> list[KeyValue]:
    """Attributes from keyword arguments, ``__`` standing for a dot; None values left out."""
    return [KeyValue(key=name.replace("__", "."), value=_value(value)) for name, value in values.items()
            if value is not None]


class OtlpExporter(Exporter):
    type = "otlp"
    required = ("url",)
    optional = ("headers",)

    def send(self, rows: list[RequestLog]) -> None:
        body = self.request(rows).SerializeToString()
        response = post_body(traces_url(self.config["url"]), body, headers=self.config.get("headers"),
                             content_type="application/x-protobuf")
        if not 200 <= response.status_code < 300:
            raise ExportError(describe_failure("The OTLP collector", response))
        self._check_partial_success(response.content)

    def _check_partial_success(self, content: bytes) -> None:
        """A collector that rejects some spans says so in a 200 (OTLP's partial success), and a
        client must not send them again: the batch counts as delivered."""
        answer = ExportTraceServiceResponse()
        try:
            answer.ParseFromString(content)
        except Exception:  # noqa: BLE001 - a 2xx without a protobuf body (some collectors) is a success
            return
        rejected = answer.partial_success.rejected_spans
        if rejected:
            logger.warning("sink %s: the OTLP collector rejected %d spans: %s", self.sink.pk,
                                                rejected, answer.partial_success.error_message[:200])

    def request(self, rows: list[RequestLog]) -> ExportTraceServiceRequest:
        spans: list[Span] = []
        rows_of_run: dict[str, list[RequestLog]] = {}
        for row in rows:
            if row.run_id:
                rows_of_run.setdefault(row.run_id, []).append(row)
        first_ids = self._first_row_of_runs(set(rows_of_run))
        for run_id, run_rows in rows_of_run.items():
            if first_ids.get(run_id) == run_rows[0].pk:
                spans.append(self._root_span(run_rows))
        for row in rows:
            spans.append(self._chat_span(row))
            later = rows_of_run.get(row.run_id, [])
            next_start = next((other.created for other in later if other.pk > row.pk), None)
            spans += self._tool_spans(row, next_start)
        resource = Resource(attributes=attributes(service__name=SERVICE_NAME))
        scope = InstrumentationScope(name=SERVICE_NAME)
        return ExportTraceServiceRequest(resource_spans=[
            ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])])

    def _first_row_of_runs(self, run_ids: set[str]) -> dict[str, int]:
        if not run_ids:
            return {}
        return dict(RequestLog.objects.filter(org_id=self.sink.org_id, run_id__in=run_ids).values("run_id")
                    .annotate(first=Min("id")).values_list("run_id", "first"))

    def _root_span(self, run_rows: list[RequestLog]) -> Span:
        first = run_rows[0]
        return Span(
            trace_id=trace_id_of(first), span_id=_root_span_id(first.org_id, first.run_id), name="invoke_agent",
            kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=_nanos(first.created),
            end_time_unix_nano=_nanos(max(_ended(row) for row in run_rows)),
            attributes=attributes(gen_ai__operation__name="invoke_agent", gen_ai__conversation__id=first.run_id,
                                  nemo__key=first.key_prefix),
        )

    def _chat_span(self, row: RequestLog) -> Span:
        operation = OPERATIONS.get(row.endpoint, "chat")
        failed = row.status >= 400
        response_model = row.response_body.get("model") if isinstance(row.response_body, dict) else None
        span = Span(
            trace_id=trace_id_of(row), span_id=_chat_span_id(row),
            parent_span_id=_root_span_id(row.org_id, row.run_id) if row.run_id else b"",
            name=f"{operation} {row.model}", kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=_nanos(row.created), end_time_unix_nano=_nanos(_ended(row)),
            attributes=attributes(
                gen_ai__operation__name=operation,
                gen_ai__provider__name=row.provider or None,
                gen_ai__request__model=row.model,
                gen_ai__response__model=response_model or (row.model if row.deployment else None),
                gen_ai__usage__input_tokens=row.prompt_tokens,
                gen_ai__usage__output_tokens=row.completion_tokens,
                gen_ai__response__finish_reasons=[row.finish_reason] if row.finish_reason else None,
                gen_ai__conversation__id=row.run_id or None,
                # A double on the wire: a six-place amount prints back as the same decimal.
                nemo__cost_usd=float(row.cost),
                nemo__request_id=row.request_id,
                nemo__deployment=row.deployment or None,
                nemo__key=row.key_prefix,
                nemo__cache=row.cache,
                nemo__cached_tokens=row.cached_tokens,
                nemo__ttft_ms=row.ttft_ms,
                http__response__status_code=row.status,
                error__type=str(row.status) if failed else None,
            ),
            status=Status(code=Status.STATUS_CODE_ERROR, message=row.error[:500]) if failed else
            Status(code=Status.STATUS_CODE_OK),
        )
        at = row.created
        for attempt in row.attempts or []:
            at += timedelta(milliseconds=attempt.get("latency_ms") or 0)
            span.events.add(time_unix_nano=_nanos(at), name="attempt",
                            attributes=attributes(nemo__deployment=attempt.get("deployment"),
                                                  nemo__outcome=attempt.get("outcome"),
                                                  nemo__latency_ms=attempt.get("latency_ms")))
        return span

    def _tool_spans(self, row: RequestLog, next_start: datetime | None) -> list[Span]:
        """The tool calls the model asked for, each run by the agent after this call's answer."""
        start = _ended(row)
        end = max(next_start, start) if next_start is not None else start
        parent = _root_span_id(row.org_id, row.run_id) if row.run_id else _chat_span_id(row)
        return [Span(trace_id=trace_id_of(row), span_id=_id(8, "execute_tool", row.org_id, row.request_id, n),
                     parent_span_id=parent, name=f"execute_tool {call.get('name', '')}",
                     kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=_nanos(start), end_time_unix_nano=_nanos(end),
                     attributes=attributes(gen_ai__operation__name="execute_tool", gen_ai__tool__name=call.get("name"),
                                           gen_ai__tool__type="function",
                                           gen_ai__conversation__id=row.run_id or None))
                for n, call in enumerate(row.tool_calls or []) if isinstance(call, dict)]

    @classmethod
    def clean_config(cls, config: dict) -> dict:
        headers = config.get("headers") or {}
        if not isinstance(headers, dict):
            raise ValueError("headers must be a mapping of header names to values")
        cleaned = super().clean_config({name: value for name, value in config.items() if name != "headers"})
        checked = {}
        for name, value in headers.items():
            name, value = str(name).strip(), str(value).strip()
            if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name!r} is not a header an otlp sink may send")
            if "\r" in value or "\n" in value:
                raise ValueError(f"the value of header {name} has a line break")
            checked[name] = value
        if checked:
            cleaned["headers"] = checked
        return cleaned

    @classmethod
    def redact(cls, config: dict) -> dict:
        """Header values are credentials (an Authorization, an API key): only their last four
        characters are shown."""
        shown = {name: value for name, value in config.items() if name != "headers"}
        if config.get("headers"):
            shown["headers"] = {name: f"…{value[-4:]}" for name, value in config["headers"].items()}
        return shown


def parse_headers(pairs: list[str]) -> dict[str, str]:
    """``K=V`` strings (``addsink --header``) as headers; ValueError naming a malformed one."""
    headers = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--header takes NAME=VALUE, not {pair!r}")
        headers[name.strip()] = value.strip()
    return headers
