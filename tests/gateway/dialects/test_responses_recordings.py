"""What ``/v1/responses`` streams and answers, event for event against the real API's recordings
(``shared/recordings/openai-responses-gpt-5/``): the same chat answer rendered by the dialect
gives the same event names in the same order, the same item types, ids of the same shapes, a
``sequence_number`` counting from 0, and the usage in ``response.completed``.

The gateway's upstreams speak Chat Completions, which carry no reasoning items: the recordings'
``reasoning`` items (and their summary events) are the one thing left out of the comparison.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

from gateway.dialects.responses import Responses, response_from_completion
from gateway.summary import CallSummary

RECORDINGS = Path(__file__).resolve().parents[4] / "shared" / "recordings" / "openai-responses-gpt-5"
STREAMED = sorted(path.name for path in RECORDINGS.glob("*streaming.yaml"))
PLAIN = sorted(path.name for path in RECORDINGS.glob("*.yaml") if "streaming" not in path.name)
ID_SHAPES = {"resp": r"^resp_[0-9a-f]{32,}$", "msg": r"^msg_[0-9a-f]{32,}$", "fc": r"^fc_[0-9a-f]{32,}$"}


def interactions(name: str) -> list[dict]:
    return yaml.safe_load((RECORDINGS / name).read_text())["interactions"]


def recorded_events(body: str) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]


def without_reasoning(events: list[dict]) -> list[dict]:
    reasoning = {e["item"]["id"] for e in events if e.get("item", {}).get("type") == "reasoning"}
    return [e for e in events if e.get("item", {}).get("id") not in reasoning and e.get("item_id") not in reasoning
            and not e["type"].startswith("response.reasoning")]


def completion_like(response: dict) -> dict:
    """The chat completion an upstream would have answered with the recorded response's output."""
    message = {"role": "assistant", "content": None}
    texts = [part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"]]
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in response["output"] if item["type"] == "function_call"]
    if texts:
        message["content"] = "".join(texts)
    if calls:
        message["tool_calls"] = calls
    usage = response["usage"]
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": response["created_at"],
            "model": response["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"],
                      "prompt_tokens_details": usage["input_tokens_details"],
                      "completion_tokens_details": usage["output_tokens_details"]}}


def streamed_chunks(events: list[dict], response: dict) -> list[dict]:
    """The chat chunks of the recorded stream: its text and argument deltas, piece by piece."""
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": response["model"]}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    calls = 0
    for event in events:
        if event["type"] == "response.output_text.delta":
            chunks.append({**base, "choices": [{"index": 0, "delta": {"content": event["delta"]}}]})
        elif event["type"] == "response.output_item.added" and event["item"]["type"] == "function_call":
            head = {"index": calls, "id": event["item"]["call_id"], "type": "function",
                    "function": {"name": event["item"]["name"], "arguments": ""}}
            chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
            calls += 1
        elif event["type"] == "response.function_call_arguments.delta":
            piece = {"index": calls - 1, "function": {"arguments": event["delta"]}}
            chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop"}]})
    usage = response["usage"]
    chunks.append({**base, "choices": [], "usage": {"prompt_tokens": usage["input_tokens"],
                                                    "completion_tokens": usage["output_tokens"],
                                                    "prompt_tokens_details": usage["input_tokens_details"],
                                                    "completion_tokens_details": usage["output_tokens_details"]}})
    return chunks


def rendered(body: bytes) -> list[dict]:
    events = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        name, data = block.split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def shape(event: dict) -> tuple:
    item = event.get("item") or {}
    part = event.get("part") or {}
    return event["type"], item.get("type"), item.get("status"), part.get("type"), event.get("content_index")


@pytest.mark.parametrize("name", STREAMED)
def test_a_stream_matches_the_recording_event_for_event(name):
    dialect = Responses()
    for interaction in interactions(name):
        recorded = recorded_events(interaction["response"]["body"])
        response = recorded[-1]["response"]
        request = dialect.parse(interaction["request"]["body"].encode(), {"headers": []})
        request.response_id = "resp_" + "0" * 32
        render = dialect.stream(request)
        chunks = streamed_chunks(recorded, response)
        summary = CallSummary()
        body = b""
        for chunk in chunks:
            summary.take_chunk(chunk)
            body += render.events([(chunk, None)])
        ours = rendered(body + render.end(summary))

        expected = without_reasoning(recorded)
        assert [shape(e) for e in ours] == [shape(e) for e in expected]
        assert [e["sequence_number"] for e in ours] == list(range(len(ours)))
        for mine, theirs in zip(ours, expected, strict=True):
            assert set(mine) - {"obfuscation"} >= set(theirs) - {"obfuscation"}, mine["type"]
            for key in ("delta", "text", "arguments"):
                assert mine.get(key) == theirs.get(key)
            if "item" in mine:
                assert re.match(ID_SHAPES["msg" if mine["item"]["type"] == "message" else "fc"], mine["item"]["id"])
                if mine["item"]["type"] == "function_call":
                    assert mine["item"]["call_id"] == theirs["item"]["call_id"]
        completed = ours[-1]["response"]
        assert re.match(ID_SHAPES["resp"], completed["id"])
        assert completed["usage"] == response["usage"]
        assert set(completed) >= set(response) - {"billing", "moderation", "prompt_cache_key",
                                                  "prompt_cache_retention", "safety_identifier", "frequency_penalty",
                                                  "presence_penalty", "top_logprobs"}
        assert [e["type"] for e in ours[:2]] == ["response.created", "response.in_progress"]


@pytest.mark.parametrize("name", PLAIN)
def test_an_answer_matches_the_recorded_response(name):
    dialect = Responses()
    for interaction in interactions(name):
        response = json.loads(interaction["response"]["body"])
        request = dialect.parse(interaction["request"]["body"].encode(), {"headers": []})
        request.response_id = "resp_" + "0" * 32
        ours = response_from_completion(request, completion_like(response))

        recorded_output = [item for item in response["output"] if item["type"] != "reasoning"]
        assert [(i["type"], i["status"]) for i in ours["output"]] == [(i["type"], i["status"]) for i in recorded_output]
        for mine, theirs in zip(ours["output"], recorded_output, strict=True):
            assert set(mine) == set(theirs)
            assert re.match(ID_SHAPES["msg" if mine["type"] == "message" else "fc"], mine["id"])
        assert ours["usage"] == response["usage"]
        assert (ours["object"], ours["status"], ours["max_output_tokens"]) == (
            "response", "completed", response["max_output_tokens"])
        assert ours["tools"] == json.loads(interaction["request"]["body"]).get("tools", [])
        assert ours["text"]["format"]["type"] == response["text"]["format"]["type"]
