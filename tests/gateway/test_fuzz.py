"""The proxy fuzzed: valid requests, mutated at random (a value of the wrong type anywhere, a field
missing or added, huge and negative numbers, NUL and odd unicode, nested junk), sent to a gateway
serving the model by each wire format in turn. Whatever the body, the answer is never a 5xx, an
error is in OpenAI's shape, every call has exactly one log row and nothing stays reserved.

Deterministic (``derandomize``) and bounded, so the suite stays fast and never flaky.
"""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.models import RequestLog
from tests.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeTokenServer, write_service_account
from tests.gateway.tools import TIME_TOOL, WEATHER_TOOL
from tests.promises.budget.support import reservations_left

EXAMPLES_PER_WIRE_FORMAT = 200
STATUSES = []
ERROR_FIELDS = {"message", "type", "param", "code"}
IMAGE = "data:image/png;base64,iVBORw0KGgo="
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"location": "Rome"}'}}

# Valid requests, each reaching a different part of the translations.
VALID = [
    {"model": "agent-model", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 20},
    {"model": "agent-model", "max_completion_tokens": 20, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                                     {"type": "image_url", "image_url": "https://example.com/cat.jpg"}]},
    ]},
    {"model": "agent-model", "max_tokens": 20, "tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "auto",
     "messages": [{"role": "user", "content": "Weather in Rome?"},
                  {"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]},
    {"model": "agent-model", "max_tokens": 20, "stream": True, "stream_options": {"include_usage": True},
     "temperature": 0.5, "top_p": 0.9, "stop": ["\n\n"], "seed": 7, "presence_penalty": 0.1,
     "frequency_penalty": 0.1, "n": 1, "user": "agent-7", "metadata": {"run": "r1"},
     "messages": [{"role": "developer", "content": "Answer in one word."}, {"role": "user", "content": "Colour?"}]},
    {"model": "agent-model", "max_tokens": 20, "response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True, "schema": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": ["integer", "null"]}}, "required": ["city"]}}},
     "messages": [{"role": "user", "content": "A city, as JSON"}]},
    {"model": "agent-model", "max_tokens": 20, "tools": [WEATHER_TOOL], "parallel_tool_calls": False,
     "tool_choice": {"type": "function", "function": {"name": "weather"}}, "stream": True,
     "messages": [{"role": "user", "name": "ana", "content": "Weather in Oslo?"}]},
    {"model": "agent-model", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Summarise both"},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]},
    {"model": "agent-model", "max_tokens": 20, "tags": [], "nemo_cache": False, "logprobs": False,
     "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "hello"}], "refusal": None},
                  {"role": "user", "content": "again"}]},
]

FIELD_NAMES = sorted({key for body in VALID for key in body} | {"role", "content", "type", "text", "image_url",
                      "url", "tool_calls", "function", "name", "arguments", "id", "tool_call_id", "parameters",
                      "json_schema", "schema", "include_usage", "file", "file_data", "input_audio", "format"})
STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "\x00", "a\x00b", "\u202e", "\U0001f916", "x" * 3000, "function", "text",
                     "image_url", "user", "assistant", "tool", "system", "none", "required", "json_schema",
                     "agent-model", IMAGE, "data:,", "data:x;base64,", "{not json", "[]", "{}"]),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 17, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, 1e308, -1e308, 1e-300, 0.5]),
    st.floats(allow_nan=False, allow_infinity=False),
)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), STRINGS)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=10,
)


def _paths(value, path: tuple = ()):
    """The path of every value inside a JSON document, the document's own included."""
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, (*path, key))


def _replaced(document, path: tuple, value):
    if not path:
        return value
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return document


def _removed(document, path: tuple, _value):
    if not path:
        return {}
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return document


def _added(document, path: tuple, value):
    target = document
    for key in path:
        target = target[key]
    if isinstance(target, dict):
        target[f"extra_{len(target)}"] = value
    if isinstance(target, list):
        target.append(value)
    return document


MUTATIONS = {"replace": _replaced, "remove": _removed, "add": _added}


# A lone surrogate, sent as its escape: valid JSON syntax, but no string a parser may return.
LONE_SURROGATE = json.dumps({"model": "agent-model", "messages": [{"role": "user", "content": "\ud800"}]}).encode()
# How a document goes out: mostly whole; now and then cut in half, or as bytes that are not JSON.
FRAMINGS = ["whole"] * 8 + ["half", "bytes", "lone surrogate"]


def mutated_document(draw, valid: list[dict]) -> dict:
    """One of the ``valid`` requests with up to four mutations (the fuzzers of every endpoint)."""
    document = copy.deepcopy(draw(st.sampled_from(valid)))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        path = draw(st.sampled_from(list(_paths(document))))
        mutate = MUTATIONS[draw(st.sampled_from(sorted(MUTATIONS)))]
        document = mutate(document, path, draw(JSON))
    return document


@st.composite
def mutated_requests(draw) -> bytes:
    """A valid request with up to four mutations, as JSON (or not: see FRAMINGS)."""
    encoded = json.dumps(mutated_document(draw, VALID)).encode()
    framed = {"whole": lambda: encoded, "half": lambda: encoded[: len(encoded) // 2],
              "bytes": lambda: draw(st.binary(max_size=40)), "lone surrogate": lambda: LONE_SURROGATE}
    return framed[draw(st.sampled_from(FRAMINGS))]()


# What an HTTP client can send in a header: visible ASCII, no space at either end.
VISIBLE_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7e)
HEADER_VALUES = st.one_of(st.none(), st.just(""), st.text(alphabet=VISIBLE_ASCII, max_size=30).map(str.strip))


class BuiltIn:
    """The built-in mock provider, which needs no upstream."""

    count = 0

    def __enter__(self) -> BuiltIn:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def provider_options(self, **_: object) -> dict:
        return {}


WIRE_FORMATS = {
    "openai": (FakeOpenAI, "gpt-4o"),
    "vertex_gemini": (FakeGemini, "gemini-2.5-flash"),
    "vertex_anthropic": (FakeAnthropic, "claude-3-7-sonnet@20250219"),
    "mock": (BuiltIn, "gpt-4o"),
}


def serve_one_wire_format(start_gateway, tmp_path, kind: str):
    """A gateway serving ``agent-model`` by one wire format (``WIRE_FORMATS[kind]``: the fake
    upstream's class and its model), for as long as the generator is not closed."""
    upstream_class, model = WIRE_FORMATS[kind]
    with FakeTokenServer() as token_server, upstream_class() as upstream:
        credentials = str(write_service_account(tmp_path, token_uri=token_server.token_uri))
        yield start_gateway({
            "providers": {"upstream": {"type": kind, **upstream.provider_options(credentials=credentials)}},
            "deployments": [{"id": f"{kind}-dep", "provider": "upstream", "model": model}],
            "models": {"agent-model": {"chain": [f"{kind}-dep"]}},
        })


@pytest.fixture(params=sorted(WIRE_FORMATS))
def gateway(request, start_gateway, tmp_path):
    yield from serve_one_wire_format(start_gateway, tmp_path, request.param)


@pytest.fixture(autouse=True)
def request_ids_of_their_own(monkeypatch):
    """Hypothesis seeds the global ``random`` for every example, and the gateway draws its request
    ids from it: without a generator of their own, every example would get the same ids."""
    monkeypatch.setattr("gateway.pipeline.random", random.SystemRandom())


def test_no_request_body_gets_a_5xx_and_every_call_is_logged_once(gateway, make_tenant):
    tenant = make_tenant(credits=Decimal("1000.00"))
    sent: list[str] = []

    @settings(max_examples=EXAMPLES_PER_WIRE_FORMAT, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=mutated_requests(), run=HEADER_VALUES, tags=HEADER_VALUES)
    def answers_within_the_contract(body: bytes, run: str | None, tags: str | None) -> None:
        headers = {"Authorization": f"Bearer {tenant.secret}", "X-Nemo-Run": run, "X-Nemo-Tags": tags}
        response = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, timeout=30,
                              headers={name: value for name, value in headers.items() if value is not None})
        request_id = response.headers["x-nemo-request-id"]
        sent.append(request_id)
        STATUSES.append((response.status_code, response.text[:90] if response.status_code >= 400 else ""))

        assert response.status_code < 500, response.text
        assert response.status_code < 400 or set(response.json()["error"]) == ERROR_FIELDS
        assert list(RequestLog.objects.filter(request_id=request_id).values_list("status", flat=True)) == [
            response.status_code]

    answers_within_the_contract()
    import collections
    print(collections.Counter(code for code, _ in STATUSES))
    print(collections.Counter(text for _, text in STATUSES).most_common(40))

    assert RequestLog.objects.filter(org=tenant.org).count() == len(sent)
    assert reservations_left(gateway) == []
