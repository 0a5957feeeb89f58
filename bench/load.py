"""The request bodies every client sends, and the closed-loop throughput run with wrk."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.processes import pinned

MAX_TOKENS = 64


def request_body(*, model: str, stream: bool, serial: int, api: str = "chat") -> bytes:
    """A small chat request; the serial makes every prompt unique, so no response cache can answer.
    ``api="responses"``: the same call as a Responses API request (not stored); ``api="messages"``
    as an Anthropic Messages request."""
    if api == "responses":
        return json.dumps({"model": model, "instructions": "You are a terse assistant.",
                           "input": f"Say hello to caller {serial}.", "max_output_tokens": MAX_TOKENS,
                           "store": False, **({"stream": True} if stream else {})}).encode()
    if api == "messages":
        return json.dumps({"model": model, "system": "You are a terse assistant.",
                           "messages": [{"role": "user", "content": f"Say hello to caller {serial}."}],
                           "max_tokens": MAX_TOKENS, **({"stream": True} if stream else {})}).encode()
    body: dict = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": f"Say hello to caller {serial}."},
        ],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


# The body is built per request in Lua so that prompts differ (see request_body); the format
# string is the same JSON with a thread id and a counter in the user message.
_LUA = r"""
local model = "%(model)s"
local path = "%(path)s"
local tail = '%(tail)s'
local next_id = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

local counter = 0
function request()
  counter = counter + 1
%(body)s
  return wrk.format(nil, path, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %%d, "duration_us": %%d, "connect_errors": %%d, "read_errors": %%d, '
    .. '"write_errors": %%d, "status_errors": %%d, "timeouts": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"mean_us": %%.1f, "max_us": %%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


_CHAT_BODY = r"""  local body = '{"model": "' .. model .. '", "messages": ['
    .. '{"role": "system", "content": "You are a terse assistant."}, '
    .. '{"role": "user", "content": "Say hello to caller ' .. thread_id .. "-" .. counter .. '."}], '
    .. '"max_tokens": %(max_tokens)d' .. tail .. '}'"""
# The same call as a Responses API request (``/v1/responses``), not stored.
_RESPONSES_BODY = r"""  local body = '{"model": "' .. model .. '", "instructions": "You are a terse assistant.", '
    .. '"input": "Say hello to caller ' .. thread_id .. "-" .. counter .. '.", "store": false, '
    .. '"max_output_tokens": %(max_tokens)d' .. tail .. '}'"""
# The same call as an Anthropic Messages request (``/v1/messages``).
_MESSAGES_BODY = r"""  local body = '{"model": "' .. model .. '", "system": "You are a terse assistant.", '
    .. '"messages": [{"role": "user", "content": "Say hello to caller ' .. thread_id .. "-" .. counter .. '."}], '
    .. '"max_tokens": %(max_tokens)d' .. tail .. '}'"""


@dataclass(frozen=True)
class Throughput:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_detail: dict

    def as_dict(self) -> dict:
        return asdict(self)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_script(*, path: str, model: str, key: str, stream: bool, api: str = "chat") -> str:
    if api in ("responses", "messages"):
        tail, body = (', "stream": true' if stream else ""), _RESPONSES_BODY if api == "responses" else _MESSAGES_BODY
    else:
        tail, body = (', "stream": true, "stream_options": {"include_usage": true}' if stream else ""), _CHAT_BODY
    body = body % {"max_tokens": MAX_TOKENS}
    return _LUA % {"model": model, "path": path, "tail": tail, "key": key, "body": body}


def wrk_run(*, base_url: str, path: str, model: str, key: str, stream: bool, connections: int, threads: int,
            seconds: float, cpus: set[int] | None, api: str = "chat") -> Throughput:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(wrk_script(path=path, model=model, key=key, stream=stream, api=api))
    try:
        command = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", handle.name, base_url,
        ]
        finished = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=pinned(cpus), check=False,
        )
    finally:
        Path(handle.name).unlink(missing_ok=True)
    line = next((row for row in finished.stdout.splitlines() if row.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (status {finished.returncode}):\n{finished.stdout}\n{finished.stderr}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    seconds_run = raw["duration_us"] / 1e6
    kinds = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    detail = {kind: raw[kind] for kind in kinds}
    return Throughput(
        requests=raw["requests"],
        seconds=round(seconds_run, 3),
        rps=round(raw["requests"] / seconds_run, 1),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=sum(detail.values()),
        error_detail=detail,
    )
