"""``POST /v1/responses`` through the real ``openai`` package, served by Chat Completions and
Gemini upstreams (fakes speaking their wire formats): answers, streams, tool loops, structured
output, refusals, fallbacks, broken streams and stored responses across orgs.
"""

import json
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from analytics.models import RequestLog, StoredResponse
from tests.fakes.behaviours import DieMidway, Hang, Reply
from tests.fakes.gemini import FakeGemini
from tests.fakes.oauth import FakeTokenServer, write_service_account
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing
from tests.gateway.test_fallback import two_link_routing

RECORDINGS = Path(__file__).resolve().parents[3] / "shared" / "recordings" / "openai-responses-gpt-5"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
PERSON = {
    "type": "json_schema",
    "name": "Person",
    "schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
               "required": ["name", "age"], "additionalProperties": False},
    "strict": True,
}


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture
def gateway(start_gateway, fake):
    return start_gateway(openai_routing(fake.base_url))


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def events_of(stream) -> list:
    return list(stream)


def test_a_plain_call_answers_a_response_object(gateway, tenant, fake):
    raw = gateway.client(tenant.secret).responses.with_raw_response.create(
        model="gpt-4o", instructions="Be brief.", input="Say hi in Portuguese", max_output_tokens=50,
        metadata={"case": "plain"}, store=False)
    response = raw.parse()

    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.output_text == "Fake answer to: Say hi in Portuguese"
    [message] = response.output
    assert message.type == "message" and message.id.startswith("msg_") and message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert (response.instructions, response.max_output_tokens, response.metadata) == (
        "Be brief.", 50, {"case": "plain"})
    sent = fake.requests[-1].json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hi in Portuguese"}]
    assert sent["max_completion_tokens"] == 50 and "metadata" not in sent and "input" not in sent
    row = RequestLog.objects.get()
    assert (row.endpoint, row.status, row.model) == ("responses", 200, "gpt-4o")
    assert raw.headers["x-nemo-request-id"].removeprefix("req_") == response.id.removeprefix("resp_")
    assert not StoredResponse.objects.exists()


def test_a_streamed_call_sends_the_api_event_sequence(gateway, tenant):
    stream = gateway.client(tenant.secret).responses.create(model="gpt-4o", input="hello", stream=True)
    events = events_of(stream)

    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * (len(events) - 8), "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Fake answer to: hello"
    completed = events[-1].response
    assert completed.status == "completed" and completed.output_text == text
    assert completed.usage.input_tokens > 0 and completed.usage.output_tokens > 0
    assert events[0].response.id == completed.id and completed.id.startswith("resp_")
    assert events[2].item.id == completed.output[0].id and events[2].item.id.startswith("msg_")
    row = RequestLog.objects.get()
    assert (row.endpoint, row.stream, row.status) == ("responses", True, 200)


def test_a_streamed_tool_call_sends_function_call_events(gateway, tenant):
    stream = gateway.client(tenant.secret).responses.create(model="gpt-4o", input="weather in Florence?",
                                                            tools=[WEATHER], stream=True)
    events = events_of(stream)

    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    assert set(kinds[3:-3]) == {"response.function_call_arguments.delta"}
    added = events[2].item
    assert added.type == "function_call" and added.id.startswith("fc_") and added.call_id.startswith("call_")
    assert added.name == "weather" and added.arguments == ""
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert events[-3].arguments == arguments and "location" in json.loads(arguments)
    [call] = events[-1].response.output
    assert (call.id, call.call_id, call.arguments, call.status) == (added.id, added.call_id, arguments, "completed")


def test_a_tool_loop_replaying_the_whole_input(gateway, tenant, fake):
    client = gateway.client(tenant.secret)
    history = [{"role": "developer", "content": "You are a helpful assistant"},
               {"role": "user", "content": [{"type": "input_text", "text": "What's the weather in Florence?"}]}]
    first = client.responses.create(model="gpt-4o", input=history, tools=[WEATHER], store=False)
    [call] = first.output
    assert call.type == "function_call" and call.name == "weather"

    # As the Agents SDK does: the whole input again, the answer's items and the tool's output.
    history += [{"type": "reasoning", "id": "rs_0123", "summary": []}, call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "40 C"}]
    second = client.responses.create(model="gpt-4o", input=history, tools=[WEATHER], store=False)

    assert second.output_text == "Tool results: 40 C"
    sent = fake.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["developer", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"] == [{"id": call.call_id, "type": "function",
                                      "function": {"name": "weather", "arguments": call.arguments}}]
    assert sent[3] == {"role": "tool", "tool_call_id": call.call_id, "content": "40 C"}
    assert fake.requests[-1].json["tools"][0] == {"type": "function", "function": {
        "name": "weather", "description": "Weather of a city", "parameters": WEATHER["parameters"]}}


def test_the_recorded_requests_are_accepted(gateway, tenant, fake):
    """The real clients' requests of the recordings, replayed: reasoning items and
    function_call_output passed back, json_schema formats, developer messages."""
    if not RECORDINGS.is_dir():
        pytest.skip(f"the recordings {RECORDINGS} are not available")
    client = httpx.Client(base_url=f"{gateway.url}/v1", headers={"authorization": f"Bearer {tenant.secret}"})
    replayed = 0
    for path in sorted(RECORDINGS.glob("*.yaml")):
        for interaction in yaml.safe_load(path.read_text())["interactions"]:
            body = json.loads(interaction["request"]["body"])
            body["model"] = "gpt-4o"
            answer = client.post("/responses", json=body)
            assert answer.status_code == 200, (path.name, answer.text)
            replayed += 1
    assert replayed == fake.count >= 12


def test_json_schema_goes_upstream_as_response_format(gateway, tenant, fake):
    fake.script(Reply(text='{"name": "Ana", "age": 30}'))
    response = gateway.client(tenant.secret).responses.create(
        model="gpt-4o", input="Make up a person.", text={"format": PERSON})

    assert json.loads(response.output_text) == {"name": "Ana", "age": 30}
    assert response.text.format.type == "json_schema" and response.text.format.name == "Person"
    assert fake.requests[-1].json["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "Person", "schema": PERSON["schema"], "strict": True}}


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"max_output_tokens": -1}, "max_output_tokens"),
    ({"input": 5}, "input"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"background": True}, "background"),
    ({"metadata": {"n": 1}}, "metadata"),
])
def test_a_malformed_or_unserved_request_is_a_400_naming_it(gateway, tenant, fake, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client(tenant.secret).responses.create(**{"model": "gpt-4o", "input": "hi", **extra})

    assert caught.value.body["param"] == param and caught.value.body["code"] == "invalid_request"
    assert fake.count == 0


def test_an_exhausted_budget_is_a_402_before_anything_is_sent(gateway, make_tenant, fake):
    tenant = make_tenant(key_budget=Decimal("0.000001"))
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.client(tenant.secret).responses.create(model="gpt-4o", input="hi", max_output_tokens=1000)

    assert caught.value.status_code == 402 and caught.value.body["code"] == "budget_exceeded"
    assert fake.count == 0
    row = RequestLog.objects.get()
    assert (row.endpoint, row.status) == ("responses", 402)


@pytest.mark.parametrize("stream", [False, True])
def test_a_timed_out_primary_falls_back_to_the_next_link(start_gateway, tenant, fake, stream):
    with FakeOpenAI() as backup:
        gateway = start_gateway(two_link_routing(fake, backup))
        fake.script(Hang())
        raw = gateway.client(tenant.secret).responses.with_raw_response.create(model="gpt-4o", input="hello",
                                                                               stream=stream)
        answer = events_of(raw.parse())[-1].response if stream else raw.parse()

    assert answer.output_text == "Fake answer to: hello" and answer.status == "completed"
    assert raw.headers["x-nemo-attempts"] == "primary:timeout, backup:ok"
    row = RequestLog.objects.get()
    assert row.endpoint == "responses" and row.deployment == "backup"
    assert [(a["deployment"], a["outcome"]) for a in row.attempts] == [("primary", "timeout"), ("backup", "ok")]


def test_a_stream_that_dies_midway_ends_in_response_failed(gateway, tenant, fake):
    fake.script(DieMidway(events=2))
    events = events_of(gateway.client(tenant.secret).responses.create(model="gpt-4o", input="hello", stream=True))

    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in {e.type for e in events}
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.code == "server_error" and "upstream stream broke" in failed.response.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert not any(e.type == "response.completed" for e in events)
    row = RequestLog.objects.get()
    assert (row.endpoint, row.status) == ("responses", 502) and row.attempts[-1]["outcome"] == "broken_stream"


# --- a Gemini upstream ------------------------------------------------------------------------------

@pytest.fixture
def gemini_gateway(start_gateway, tmp_path):
    with FakeTokenServer() as tokens, FakeGemini() as gemini:
        credentials = str(write_service_account(tmp_path, token_uri=tokens.token_uri))
        gateway = start_gateway({
            "providers": {"vertex": {"type": "vertex_gemini", **gemini.provider_options(credentials=credentials)}},
            "deployments": [{"id": "gemini-dep", "provider": "vertex", "model": "gemini-2.5-flash"}],
            "models": {"agent-model": {"chain": ["gemini-dep"]}},
        })
        yield gateway, gemini


def test_gemini_serves_a_tool_loop_and_a_stream(gemini_gateway, tenant):
    gateway, gemini = gemini_gateway
    client = gateway.client(tenant.secret)
    first = client.responses.create(model="agent-model", input="Weather in Florence?", tools=[WEATHER])
    [call] = first.output
    assert call.type == "function_call" and call.name == "weather"

    # The stored turn continues with previous_response_id: only the tool's output is sent.
    stream = client.responses.create(model="agent-model", previous_response_id=first.id, tools=[WEATHER],
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "40 C"}], stream=True)
    events = events_of(stream)

    assert events[-1].type == "response.completed" and "40 C" in events[-1].response.output_text
    assert events[-1].response.previous_response_id == first.id
    contents = gemini.requests[-1].json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert "functionResponse" in contents[-1]["parts"][0]
    assert list(RequestLog.objects.values_list("endpoint", flat=True)) == ["responses", "responses"]


# --- stored responses --------------------------------------------------------------------------------

def test_previous_response_id_continues_and_bills_the_history_as_prompt(gateway, tenant, fake):
    client = gateway.client(tenant.secret)
    first = client.responses.create(model="gpt-4o", instructions="Be brief.", input="My name is Ana.")
    second = client.responses.create(model="gpt-4o", previous_response_id=first.id, input="What is my name?")

    sent = fake.requests[-1].json["messages"]
    assert sent == [{"role": "user", "content": "My name is Ana."},
                    {"role": "assistant", "content": "Fake answer to: My name is Ana."},
                    {"role": "user", "content": "What is my name?"}]
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens


def test_stored_responses_belong_to_their_org(gateway, make_tenant, fake):
    owner, outsider = make_tenant("Owner"), make_tenant("Outsider")
    mine, theirs = gateway.client(owner.secret), gateway.client(outsider.secret)
    created = mine.responses.create(model="gpt-4o", input="hello")

    assert mine.responses.retrieve(created.id).output_text == created.output_text
    items = mine.responses.input_items.list(created.id)
    assert [item.type for item in items.data] == ["message"]
    assert items.data[0].content[0].text == "hello"
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.create(model="gpt-4o", previous_response_id=created.id, input="and?")
    assert fake.count == 1

    mine.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        mine.responses.retrieve(created.id)
    assert not StoredResponse.objects.exists()


def test_store_false_keeps_nothing(gateway, tenant):
    client = gateway.client(tenant.secret)
    created = client.responses.create(model="gpt-4o", input="hello", store=False)

    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_a_cached_answer_is_replayed_as_a_response_and_as_a_stream(gateway, tenant, fake):
    client = gateway.client(tenant.secret)
    first = client.responses.with_raw_response.create(model="gpt-4o", input="hello", extra_body={"nemo_cache": True})
    again = client.responses.with_raw_response.create(model="gpt-4o", input="hello", extra_body={"nemo_cache": True})
    streamed = events_of(client.responses.create(model="gpt-4o", input="hello", stream=True,
                                                 extra_body={"nemo_cache": True}))

    assert (first.headers["x-nemo-cache"], again.headers["x-nemo-cache"]) == ("miss", "hit")
    assert again.parse().output_text == first.parse().output_text == "Fake answer to: hello"
    assert again.parse().id != first.parse().id
    assert streamed[-1].type == "response.completed" and streamed[-1].response.output_text == "Fake answer to: hello"
    assert [e.sequence_number for e in streamed] == list(range(len(streamed)))
    assert fake.count == 1


def test_input_items_list_in_both_orders_with_ids(gateway, tenant):
    client = gateway.client(tenant.secret)
    created = client.responses.create(model="gpt-4o", input=[
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}]}])

    newest_first = client.responses.input_items.list(created.id)
    oldest_first = client.responses.input_items.list(created.id, order="asc", limit=2)

    assert [item.content[0].text for item in newest_first.data] == ["second", "ok", "first"]
    assert [item.content[0].text for item in oldest_first.data] == ["first", "ok"] and oldest_first.has_more
    assert all(item.id.startswith("msg_") for item in newest_first.data)
    with pytest.raises(openai.AuthenticationError):
        gateway.client("sk-nemo-not-a-key").responses.retrieve(created.id)


@pytest.mark.parametrize("tools", [[], [WEATHER]])
def test_the_sdk_stream_helper_accumulates_the_events_into_the_final_response(gateway, tenant, tools):
    """``responses.stream`` rebuilds the response from the events (output and content indexes,
    deltas), so a misplaced index or a missing ``.added`` fails it."""
    with gateway.client(tenant.secret).responses.stream(model="gpt-4o", input="weather in Rome?",
                                                        tools=tools) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()

    if tools:
        [call] = final.output
        assert call.type == "function_call" and json.loads(call.arguments) and not texts
    else:
        assert final.output_text == "".join(texts) == "Fake answer to: weather in Rome?"
    assert final.status == "completed" and final.usage.total_tokens > 0
