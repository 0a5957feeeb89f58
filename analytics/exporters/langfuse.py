"""Langfuse, through its public ingestion API: a run is one trace, each call a generation in it.

Ids are derived, not random: the trace of a run is the same in every batch (later batches add
generations to it), and a retried batch carries the same event ids, which Langfuse uses to drop
events it already processed.
"""

import uuid
from datetime import UTC, timedelta
from decimal import Decimal

from django.db.models import Min

from analytics.exporters.base import (
    Exporter,
    ExportError,
    chunks_by_size,
    describe_failure,
    post_json,
)
from analytics.models import RequestLog
from analytics.serializers import log_row_dict

DEFAULT_URL = "https://cloud.langfuse.com"
INGESTION_PATH = "/api/public/ingestion"
# Langfuse takes up to 3.5 MB per request; stay clear of it.
MAX_REQUEST_BYTES = 3_000_000
MAX_MESSAGE_CHARS = 100
_NAMESPACE = uuid.UUID("5b0f2c1e-7a4d-4e8b-9c36-2f1d0e6a9b47")


def derived_id(*parts) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(str(part) for part in parts)))


def trace_id_of(row: RequestLog) -> str:
    """One trace per run of an org; a call outside a run is a trace of its own."""
    if row.run_id:
        return derived_id("run", row.org_id, row.run_id)
    return derived_id("call", row.org_id, row.request_id)


def _iso(moment) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _cost_number(cost: Decimal) -> float:
    # The wire format wants a JSON number. A six-place amount has far fewer than 15 significant
    # digits, so the float prints as exactly the same decimal; no arithmetic is done on it.
    return float(cost)


def _input_of(row: RequestLog):
    if isinstance(row.request_body, dict):
        return row.request_body.get("messages", row.request_body)
    return row.request_body


def _output_of(row: RequestLog):
    body = row.response_body
    if isinstance(body, dict) and isinstance(body.get("choices"), list) and body["choices"]:
        choice = body["choices"][0]
        return choice.get("message", choice) if isinstance(choice, dict) else choice
    return body


class LangfuseExporter(Exporter):
    type = "langfuse"
    required = ("public_key", "secret_key")
    optional = ("url",)
    secrets = ("secret_key",)

    def send(self, rows: list[RequestLog]) -> None:
        events = self.events(rows)
        url = self.config.get("url", DEFAULT_URL) + INGESTION_PATH
        auth = (self.config["public_key"], self.config["secret_key"])
        for batch in chunks_by_size(events, max_bytes=MAX_REQUEST_BYTES, max_items=len(events)):
            response = post_json(url, {"batch": batch}, auth=auth)
            if response.status_code not in (200, 201, 207):
                raise ExportError(describe_failure("Langfuse", response))
            # 207 Multi-Status: the request went through, each event has its own verdict. Any
            # rejected event fails the batch; the retry resends the accepted ones too, which
            # Langfuse drops by event id.
            try:
                errors = (response.json() or {}).get("errors") or []
            except ValueError as exc:
                raise ExportError(describe_failure("Langfuse", response)) from exc
            if errors:
                # The service's own words, kept short: they end up on the sink's page.
                shown = "; ".join(
                    f"{error.get('id')}: {error.get('status')} "
                    f"{str(error.get('message') or error.get('error', ''))[:MAX_MESSAGE_CHARS]}"
                    for error in errors[:3]
                )
                raise ExportError(f"Langfuse rejected {len(errors)} of {len(batch)} events: {shown}")

    def events(self, rows: list[RequestLog]) -> list[dict]:
        run_starts = dict(
            RequestLog.objects.filter(org_id=self.sink.org_id, run_id__in={row.run_id for row in rows if row.run_id})
            .values("run_id")
            .annotate(first=Min("created"))
            .values_list("run_id", "first")
        )
        events: list[dict] = []
        traced: set[str] = set()
        for row in rows:
            trace_id = trace_id_of(row)
            if trace_id not in traced:
                traced.add(trace_id)
                events.append(self._trace_event(row, trace_id, run_starts.get(row.run_id, row.created)))
            events.append(self._generation_event(row, trace_id))
        return events

    def _trace_event(self, row: RequestLog, trace_id: str, started) -> dict:
        body = {
            "id": trace_id,
            "timestamp": _iso(started),
            "name": row.run_id or row.model,
            "userId": row.key_prefix,
            "metadata": {"run_id": row.run_id, "key": row.key_prefix, "source": "nemo-router"},
            "tags": ["nemo-router"],
        }
        if not row.run_id:
            body["input"] = _input_of(row)
            body["output"] = _output_of(row)
        return {
            "id": derived_id("trace-create", trace_id, row.request_id),
            "timestamp": _iso(row.created),
            "type": "trace-create",
            "body": body,
        }

    def _generation_event(self, row: RequestLog, trace_id: str) -> dict:
        body = {
            "id": derived_id("generation", row.org_id, row.request_id),
            "traceId": trace_id,
            "name": row.model,
            "startTime": _iso(row.created),
            "endTime": _iso(row.created + timedelta(milliseconds=row.latency_ms)),
            "model": row.model,
            "usageDetails": {
                "input": max(row.prompt_tokens - row.cached_tokens, 0),
                "input_cached_tokens": row.cached_tokens,
                "output": row.completion_tokens,
                "total": row.prompt_tokens + row.completion_tokens,
            },
            "costDetails": {"total": _cost_number(row.cost)},
            "level": "ERROR" if row.status >= 400 else "DEFAULT",
            "metadata": log_row_dict(row),
        }
        if row.ttft_ms is not None:
            body["completionStartTime"] = _iso(row.created + timedelta(milliseconds=row.ttft_ms))
        if row.error:
            body["statusMessage"] = row.error
        if row.request_body is not None:
            body["input"] = _input_of(row)
        if row.response_body is not None:
            body["output"] = _output_of(row)
        return {
            "id": derived_id("generation-create", row.org_id, row.request_id),
            "timestamp": _iso(row.created),
            "type": "generation-create",
            "body": body,
        }
