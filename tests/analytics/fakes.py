"""Fake Langfuse and Datadog intakes: real HTTP servers on 127.0.0.1 that check each request
against the service's documented format and record what they accepted.

Checks run in the server's thread, so a broken payload is answered 400 and noted in `problems`;
tests assert `problems == []`.
"""

import base64
import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _is_iso(text) -> bool:
    try:
        return isinstance(text, str) and datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


class FakeIntake:
    path = "/"
    content_type = "application/json"

    def __init__(self):
        self.problems: list[str] = []
        self.requests = 0
        self.fail_next = 0  # answer this many requests with a 503
        self.delay = 0.0  # seconds to take over each request
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(fake.delay)
                with fake.lock:
                    fake.requests += 1
                    status, answer = fake.handle(self.path, self.headers, body)
                payload, content_type = fake.encode(answer)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path, headers, body) -> tuple[int, object]:
        if path != self.path:
            self.problems.append(f"POST to {path}, not {self.path}")
            return 404, {"message": "not found"}
        if not headers.get("Content-Type", "").startswith(self.content_type):
            self.problems.append(f"Content-Type {headers.get('Content-Type')!r}")
            return 400, {"message": f"{self.content_type} expected"}
        if not self.authorized(headers):
            self.problems.append("bad credentials")
            return 401, {"message": "unauthorized"}
        if self.fail_next:
            self.fail_next -= 1
            return 503, {"message": "try again later"}
        try:
            payload = self.decode(body)
        except ValueError:
            self.problems.append(f"body is not {self.content_type}")
            return 400, {"message": "bad body"}
        return self.accept(payload)

    def decode(self, body: bytes):
        return json.loads(body)

    def encode(self, answer) -> tuple[bytes, str]:
        return json.dumps(answer).encode(), "application/json"


class FakeLangfuse(FakeIntake):
    """POST /api/public/ingestion, basic auth public:secret, {"batch": [events]}, 207 answers."""

    path = "/api/public/ingestion"
    public_key = "pk-lf-test"
    secret_key = "sk-lf-test"

    def __init__(self):
        super().__init__()
        self.traces: dict[str, dict] = {}
        self.generations: list[dict] = []
        self.event_ids: set[str] = set()
        self.reject_next: set[str] = set()  # request ids whose generation-create gets a per-event error

    def authorized(self, headers) -> bool:
        expected = base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        return headers.get("Authorization") == f"Basic {expected}"

    def accept(self, payload) -> tuple[int, object]:
        if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
            self.problems.append("payload has no batch list")
            return 400, {"message": "bad request"}
        successes, errors = [], []
        for event in payload["batch"]:
            problem = self.check_event(event)
            if problem:
                self.problems.append(problem)
                errors.append({"id": event.get("id"), "status": 400, "message": problem})
                continue
            request_id = event["body"].get("metadata", {}).get("request_id")
            if event["type"] == "generation-create" and request_id in self.reject_next:
                self.reject_next.discard(request_id)
                errors.append({"id": event["id"], "status": 500, "message": "storage hiccup"})
                continue
            successes.append({"id": event["id"], "status": 201})
            # Langfuse drops an event whose id it has already processed.
            if event["id"] in self.event_ids:
                continue
            self.event_ids.add(event["id"])
            if event["type"] == "trace-create":
                self.traces[event["body"]["id"]] = event["body"]
            else:
                self.generations.append(event["body"])
        return 207, {"successes": successes, "errors": errors}

    def check_event(self, event) -> str | None:
        if not isinstance(event, dict) or not {"id", "timestamp", "type", "body"} <= set(event):
            return f"event without id/timestamp/type/body: {event!r:.200}"
        if not _is_iso(event["timestamp"]):
            return f"event timestamp {event['timestamp']!r} is not ISO 8601"
        body = event["body"]
        if event["type"] == "trace-create":
            if not isinstance(body.get("id"), str) or not _is_iso(body.get("timestamp")):
                return f"trace-create body without id/timestamp: {body!r:.200}"
            return None
        if event["type"] != "generation-create":
            return f"unexpected event type {event['type']!r}"
        if not isinstance(body.get("id"), str) or not isinstance(body.get("traceId"), str):
            return "generation-create body without id/traceId"
        if not (_is_iso(body.get("startTime")) and _is_iso(body.get("endTime"))):
            return "generation-create without ISO startTime/endTime"
        usage = body.get("usageDetails")
        if not isinstance(usage, dict) or not all(isinstance(value, int) for value in usage.values()):
            return f"usageDetails must map names to integers: {usage!r}"
        cost = body.get("costDetails")
        if not isinstance(cost, dict) or not all(isinstance(value, int | float) for value in cost.values()):
            return f"costDetails must map names to numbers: {cost!r}"
        if body.get("level") not in ("DEBUG", "DEFAULT", "WARNING", "ERROR"):
            return f"level {body.get('level')!r}"
        return None

    def generations_by_request(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for generation in self.generations:
            request_id = generation["metadata"]["request_id"]
            counts[request_id] = counts.get(request_id, 0) + 1
        return counts


class FakeDatadog(FakeIntake):
    """POST /api/v2/logs with a DD-API-KEY header and a JSON array of log entries; 202 answers."""

    path = "/api/v2/logs"
    api_key = "dd-test-key"

    def __init__(self):
        super().__init__()
        self.entries: list[dict] = []

    def authorized(self, headers) -> bool:
        return headers.get("DD-API-KEY") == self.api_key

    def accept(self, payload) -> tuple[int, object]:
        if not isinstance(payload, list) or not payload:
            self.problems.append("payload is not a non-empty JSON array")
            return 400, {"errors": ["bad request"]}
        for entry in payload:
            problem = self.check_entry(entry)
            if problem:
                self.problems.append(problem)
                return 400, {"errors": [problem]}
        self.entries.extend(payload)
        return 202, {}

    def check_entry(self, entry) -> str | None:
        for field in ("ddsource", "service", "hostname", "message", "status", "ddtags"):
            if not isinstance(entry.get(field), str) or not entry[field]:
                return f"log entry without {field}: {entry!r:.200}"
        if entry["status"] not in ("info", "warn", "error"):
            return f"log status {entry['status']!r}"
        if not isinstance(entry.get("nemo"), dict) or "request_id" not in entry["nemo"]:
            return "log entry without its nemo attributes"
        return None

    def entries_by_request(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry["nemo"]["request_id"]] = counts.get(entry["nemo"]["request_id"], 0) + 1
        return counts


class FakeOtlpCollector(FakeIntake):
    """OTLP/HTTP traces: POST {base}/v1/traces with an ExportTraceServiceRequest in protobuf,
    decoded with opentelemetry-proto; answers an ExportTraceServiceResponse. ``headers``: what
    every request must carry (a collector's credentials)."""

    content_type = "application/x-protobuf"

    def __init__(self, base_path: str = "", headers: dict[str, str] | None = None):
        super().__init__()
        self.path = base_path + "/v1/traces"
        self.required_headers = headers or {}
        self.spans: list = []
        self.resources: list = []

    def authorized(self, headers) -> bool:
        return all(headers.get(name) == value for name, value in self.required_headers.items())

    def decode(self, body: bytes):
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise ValueError(str(exc)) from exc
        return request

    def encode(self, answer) -> tuple[bytes, str]:
        if isinstance(answer, ExportTraceServiceResponse):
            return answer.SerializeToString(), self.content_type
        return super().encode(answer)

    def accept(self, request) -> tuple[int, object]:
        for resource_spans in request.resource_spans:
            self.resources.append(resource_spans.resource)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return 200, ExportTraceServiceResponse()
