"""Datadog, through its logs intake API (v2): one log entry per call."""

import socket

from analytics.exporters.base import Exporter, ExportError, chunks_by_size, describe_failure, post_json
from analytics.models import RequestLog
from analytics.serializers import log_row_dict, money_string

DEFAULT_URL = "https://http-intake.logs.datadoghq.com"
INTAKE_PATH = "/api/v2/logs"
SOURCE = "nemo-router"
# The intake takes at most 1,000 entries and 5 MB (uncompressed) per request.
MAX_ENTRIES = 1000
MAX_REQUEST_BYTES = 4_500_000


def _tag(name: str, value) -> str:
    # Commas separate tags; a model or deployment name must not split one in two.
    return f"{name}:{str(value).replace(',', '_')}"


def _level(status: int) -> str:
    if status >= 500:
        return "error"
    return "warn" if status >= 400 else "info"


class DatadogExporter(Exporter):
    type = "datadog"
    required = ("api_key",)
    optional = ("url", "service", "hostname")
    secrets = ("api_key",)

    def send(self, rows: list[RequestLog]) -> None:
        url = self.config.get("url", DEFAULT_URL) + INTAKE_PATH
        entries = [self.entry(row) for row in rows]
        for batch in chunks_by_size(entries, max_bytes=MAX_REQUEST_BYTES, max_items=MAX_ENTRIES):
            response = post_json(url, batch, headers={"DD-API-KEY": self.config["api_key"]})
            if not 200 <= response.status_code < 300:
                raise ExportError(describe_failure("Datadog", response))

    def entry(self, row: RequestLog) -> dict:
        # `status` is Datadog's log level, so the call's HTTP status goes under `http.status_code`
        # (a Datadog standard attribute) and the whole row under `nemo`.
        return {
            "ddsource": SOURCE,
            "service": self.config.get("service", SOURCE),
            "hostname": self.config.get("hostname") or socket.gethostname(),
            "ddtags": ",".join([
                _tag("org", self.sink.org.slug), _tag("model", row.model),
                _tag("deployment", row.deployment or "none"), _tag("cache", row.cache),
            ]),
            "message": (
                f"{row.model} -> {row.deployment or 'no deployment'}: {row.status} in {row.latency_ms} ms, "
                f"{row.prompt_tokens}+{row.completion_tokens} tokens, ${money_string(row.cost)}"
            ),
            "status": _level(row.status),
            "timestamp": int(row.created.timestamp() * 1000),
            "duration": row.latency_ms * 1_000_000,
            "http": {"status_code": row.status},
            "nemo": log_row_dict(row),
        }
