"""``POST /v1/messages`` against recorded traffic.

- The real Anthropic API's recordings (``shared/recordings/anthropic-claude-sonnet-4/``): each
  recorded request, sent to the gateway, reaches a Claude-on-Vertex fake as that request (only
  ``model`` gone and Vertex's ``anthropic_version`` set) and the fake's recorded answer comes back
  byte for byte, whole or streamed; served by Gemini instead (translated), the answer has the
  same blocks (Gemini's thoughts as the thinking, under the gateway's signature), the same stop
  reason and the same events in the same order.
- Claude on Vertex's recordings (``shared/recordings/vertex-claude-3-7-sonnet/``): what the
  gateway sends upstream is byte for byte the recorded request, and the answer the recorded one.
"""

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.behaviours import Raw, Reply
from tests.fakes.gemini import FakeGemini
from tests.fakes.oauth import FakeTokenServer, write_service_account

RECORDINGS = Path(__file__).resolve().parents[3] / "shared" / "recordings"
ANTHROPIC = sorted((RECORDINGS / "anthropic-claude-sonnet-4").glob("*.yaml"))
VERTEX = sorted((RECORDINGS / "vertex-claude-3-7-sonnet").glob("*.yaml"))
MODEL = "claude-sonnet-4-20250514"


def interactions(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["interactions"]


@pytest.fixture
def credentials(tmp_path):
    with FakeTokenServer() as server:
        yield str(write_service_account(tmp_path, token_uri=server.token_uri))


@pytest.fixture
def upstreams(start_gateway, credentials, make_tenant):
    """(gateway url, secret, Claude fake, Gemini fake): ``MODEL`` on Claude, ``gemini-served`` on Gemini."""
    with FakeAnthropic() as claude, FakeGemini() as gemini:
        gateway = start_gateway({
            "providers": {
                "claude": {"type": "vertex_anthropic", **claude.provider_options(credentials=credentials)},
                "gemini": {"type": "vertex_gemini", **gemini.provider_options(credentials=credentials)},
            },
            "deployments": [
                {"id": "sonnet", "provider": "claude", "model": "claude-sonnet-4@20250514"},
                {"id": "flash", "provider": "gemini", "model": "gemini-2.5-flash"},
            ],
            "models": {MODEL: {"chain": ["sonnet"]}, "claude-3-7-sonnet": {"chain": ["sonnet"]},
                       "gemini-served": {"chain": ["flash"]}},
        })
        yield gateway.url, make_tenant().secret, claude, gemini


def post(url: str, secret: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", content=body, timeout=30,
                      headers={"x-api-key": secret, "anthropic-version": "2023-06-01",
                               "content-type": "application/json"})


def signatures_in(body: str) -> set[str]:
    return set(re.findall(r'"signature":"([^"]+)"', body))


@pytest.mark.parametrize("cassette", ANTHROPIC, ids=[path.stem for path in ANTHROPIC])
def test_claude_passes_the_recorded_exchange_through_byte_for_byte(upstreams, cassette):
    url, secret, claude, _ = upstreams
    for interaction in interactions(cassette):
        request, response = interaction["request"], interaction["response"]
        # The thinking a recorded request passes back was signed by the real Claude.
        claude.signatures |= signatures_in(request["body"])
        content_type = response["headers"]["Content-Type"][0]
        claude.script(Raw(response["body"], content_type=content_type))

        answer = post(url, secret, request["body"].encode())

        assert answer.status_code == 200, answer.text
        assert answer.content == response["body"].encode()
        sent = claude.requests[-1].json
        expected = {name: value for name, value in json.loads(request["body"]).items() if name != "model"}
        assert sent == {**expected, "anthropic_version": "vertex-2023-10-16"}


@pytest.mark.parametrize("cassette", VERTEX, ids=[path.stem for path in VERTEX])
def test_what_goes_to_vertex_is_the_recorded_request(upstreams, cassette):
    url, secret, claude, _ = upstreams
    for interaction in interactions(cassette):
        request, response = interaction["request"], interaction["response"]
        recorded = json.loads(request["body"])
        # The client's body: the recorded one with a model and without Vertex's version.
        client_body = {name: value for name, value in recorded.items() if name != "anthropic_version"}
        client_body = {"model": "claude-3-7-sonnet", **client_body}
        claude.script(Raw(response["body"], content_type=response["headers"]["Content-Type"][0]))

        answer = post(url, secret, json.dumps(client_body, separators=(",", ":"), ensure_ascii=False).encode())

        assert answer.status_code == 200, answer.text
        assert claude.requests[-1].body == request["body"].encode()
        assert claude.requests[-1].path.endswith(request["url"].rsplit("/", 1)[-1].replace(
            "claude-3-7-sonnet@20250219", "claude-sonnet-4@20250514"))
        assert answer.content == response["body"].encode()


# --- served by Gemini: the same Message, the same events -------------------------------------------

def stream_events(body: str) -> list[dict]:
    return [json.loads(data) for data in re.findall(r"^data: ?(.*)$", body, re.M)]


def shape(events: list[dict]) -> list[tuple]:
    """The events' sequence, each run of deltas to one block as one, with what kind each is."""
    seen: list[tuple] = []
    for event in events:
        kind = event["type"]
        if kind == "content_block_start":
            item = (kind, event["index"], event["content_block"]["type"])
        elif kind == "content_block_delta":
            item = (kind, event["index"], event["delta"]["type"])
        elif kind in ("content_block_stop",):
            item = (kind, event["index"])
        elif kind == "message_delta":
            item = (kind, event["delta"]["stop_reason"], tuple(sorted(set(event["usage"]) & USAGE)))
        else:
            item = (kind,)
        if not seen or seen[-1] != item:
            seen.append(item)
    return seen


USAGE = {"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}


def recorded_reply(message: dict) -> Reply:
    text = "".join(block["text"] for block in message["content"] if block["type"] == "text")
    calls = tuple((block["name"], block["input"]) for block in message["content"] if block["type"] == "tool_use")
    thinks = any(block["type"] == "thinking" for block in message["content"])
    return Reply(text=text, tool_calls=calls, thinks=thinks)


def recorded_message(response_body: str) -> dict:
    """The Message a recorded answer is, whole or accumulated from its stream."""
    if response_body.lstrip().startswith("{"):
        return json.loads(response_body)
    content: list[dict] = []
    for event in stream_events(response_body):
        if event["type"] == "message_start":
            message = event["message"]
        elif event["type"] == "content_block_start":
            content.append({**event["content_block"], "partial": ""})
        elif event["type"] == "content_block_delta":
            delta = event["delta"]
            block = content[event["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                block["partial"] += delta["partial_json"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] += delta["signature"]
        elif event["type"] == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
    for block in content:
        partial = block.pop("partial")
        if block["type"] == "tool_use":
            block["input"] = json.loads(partial or "{}")
    return {**message, "content": content}


@pytest.mark.parametrize("cassette", ANTHROPIC, ids=[path.stem for path in ANTHROPIC])
def test_gemini_answers_as_the_recorded_claude_did(upstreams, cassette):
    url, secret, _, gemini = upstreams
    for interaction in interactions(cassette):
        request, response = interaction["request"], interaction["response"]
        recorded = recorded_message(response["body"])
        gemini.script(recorded_reply(recorded))
        body = {**json.loads(request["body"]), "model": "gemini-served"}

        answer = post(url, secret, json.dumps(body).encode())

        assert answer.status_code == 200, answer.text
        streamed = body.get("stream", False)
        ours = recorded_message(answer.text) if streamed else answer.json()
        assert [block["type"] for block in ours["content"]] == [block["type"] for block in recorded["content"]]
        assert ours["stop_reason"] == recorded["stop_reason"]
        for mine, theirs in zip(ours["content"], recorded["content"], strict=True):
            if theirs["type"] == "tool_use":
                assert (mine["name"], mine["input"]) == (theirs["name"], theirs["input"]) and mine["id"]
            elif theirs["type"] == "thinking":
                assert mine["signature"].startswith("nemo.gemini.")
            else:
                assert mine["text"] == theirs["text"]
        if streamed:
            assert shape(stream_events(answer.text)) == shape(stream_events(response["body"]))
        else:
            assert set(ours) == set(recorded) and USAGE <= set(ours["usage"])
