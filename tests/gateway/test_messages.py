"""``POST /v1/messages`` and ``/v1/messages/count_tokens`` through the real ``anthropic`` package,
served by a Claude-on-Vertex fake (the body passes through in Anthropic's format) and by a
Gemini fake (translated both ways): answers, streams, a tool loop, extended thinking with its
signature passed back, token counts, a Claude→Gemini fallback in the middle of a run, and the
gateway's refusals as the SDK's own error classes.
"""

import json
from decimal import Decimal

import anthropic
import httpx
import pytest
from rest_framework.test import APIClient

from analytics.models import RequestLog
from keys.audit import Actor
from keys.services import org_token_create
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.behaviours import Reply, Status, StreamError
from tests.fakes.gemini import FakeGemini
from tests.fakes.oauth import FakeTokenServer, write_service_account
from tests.fakes.openai import FakeOpenAI

WEATHER = {"name": "weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                            "required": ["location"]}}
HELLO = [{"role": "user", "content": "Say hi in Portuguese"}]


@pytest.fixture
def credentials(tmp_path):
    with FakeTokenServer() as server:
        yield str(write_service_account(tmp_path, token_uri=server.token_uri))


@pytest.fixture
def claude():
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def gemini():
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
def compatible(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def gateway(start_gateway, credentials, claude, gemini, compatible):
    """``claude`` (Claude on Vertex), ``gemini`` (Gemini on Vertex), ``openai`` (an OpenAI-compatible
    upstream) and ``agent`` (Claude, then Gemini)."""
    return start_gateway({
        "providers": {
            "claude": {"type": "vertex_anthropic", **claude.provider_options(credentials=credentials)},
            "gemini": {"type": "vertex_gemini", **gemini.provider_options(credentials=credentials)},
            "compatible": {"type": "openai", "base_url": compatible.base_url, "api_key_env": "FAKE_OPENAI_KEY"},
        },
        "deployments": [
            {"id": "sonnet", "provider": "claude", "model": "claude-3-7-sonnet@20250219"},
            {"id": "flash", "provider": "gemini", "model": "gemini-2.5-flash"},
            {"id": "gpt", "provider": "compatible", "model": "gpt-4o"},
        ],
        "models": {"claude": {"chain": ["sonnet"]}, "gemini": {"chain": ["flash"]}, "openai": {"chain": ["gpt"]},
                   "agent": {"chain": ["sonnet", "flash"]}},
    })


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def client_of(gateway, secret: str, **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0, **options)


@pytest.fixture
def client(gateway, tenant):
    return client_of(gateway, tenant.secret)


def last_row() -> RequestLog:
    return RequestLog.objects.order_by("-created").first()


# --- Claude on Vertex: the body as it came, the bytes as they came back ---------------------------

def test_a_message_to_claude_passes_through_unchanged(client, claude):
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    raw = client.messages.with_raw_response.create(
        model="claude", max_tokens=200, system=system, messages=HELLO, metadata={"user_id": "u-1"},
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"})
    message = raw.parse()

    sent = claude.requests[-1]
    assert sent.path.endswith("/claude-3-7-sonnet@20250219:rawPredict")
    assert sent.json == {"max_tokens": 200, "messages": HELLO, "metadata": {"user_id": "u-1"},
                         "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                         "anthropic_version": "vertex-2023-10-16"}
    assert sent.headers["anthropic-beta"] == "context-1m-2025-08-07"
    # The upstream's own answer: its id, its model id, its usage with the cache write.
    assert message.id.startswith("msg_vrtx_") and message.model == "claude-3-7-sonnet@20250219".replace("@", "-")
    assert message.content[0].text == "Fake answer to: Say hi in Portuguese"
    assert message.usage.cache_creation_input_tokens > 0
    assert raw.headers["x-nemo-deployment"] == "sonnet" and raw.headers["x-nemo-attempts"] == "sonnet:ok"
    row = last_row()
    assert row.endpoint == "messages" and row.deployment == "sonnet" and row.status == 200
    assert row.prompt_tokens == (message.usage.input_tokens + message.usage.cache_creation_input_tokens
                                 + message.usage.cache_read_input_tokens)
    assert row.completion_tokens == message.usage.output_tokens and row.cost > 0


def test_a_stream_from_claude_is_relayed_as_it_came(client, claude):
    with client.messages.stream(model="claude", max_tokens=200, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert claude.requests[-1].path.endswith(":streamRawPredict")
    assert claude.requests[-1].json["stream"] is True
    assert text == "Fake answer to: Say hi in Portuguese" == final.content[0].text
    assert final.id.startswith("msg_vrtx_") and final.stop_reason == "end_turn"
    row = last_row()
    assert row.stream and row.completion_tokens == final.usage.output_tokens and row.prompt_tokens > 0


# --- both wire formats ----------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["claude", "gemini", "openai"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_tool_loop_of_several_steps(client, claude, gemini, compatible, model, streamed):
    upstream = {"claude": claude, "gemini": gemini, "openai": compatible}[model]
    messages = [{"role": "user", "content": "Weather in Rome, then in Paris?"}]
    # The first step calls the tool by itself; the second is told to call it again.
    upstream.script(Reply(), Reply(tool_calls=[("weather", {"location": "Paris"})]))
    answers = []
    for _ in range(3):
        if streamed:
            with client.messages.stream(model=model, max_tokens=300, tools=[WEATHER], messages=messages) as stream:
                answer = stream.get_final_message()
        else:
            answer = client.messages.create(model=model, max_tokens=300, tools=[WEATHER], messages=messages)
        answers.append(answer)
        calls = [block for block in answer.content if block.type == "tool_use"]
        if not calls:
            break
        results = [{"type": "tool_result", "tool_use_id": call.id, "content": f"sunny in {call.input['location']}"}
                   for call in calls]
        turn = [block.model_dump(exclude_none=True) for block in answer.content]
        messages += [{"role": "assistant", "content": turn}, {"role": "user", "content": results}]
    assert [answer.stop_reason for answer in answers] == ["tool_use", "tool_use", "end_turn"]
    assert answers[1].content[-1].input == {"location": "Paris"}
    # (Gemini's fake echoes the functionResponse it got, the text wrapped as {"result": ...}.)
    assert answers[2].content[0].text.startswith("Tool results: ") and "sunny in Paris" in answers[2].content[0].text
    assert all(call.id for answer in answers[:2] for call in answer.content if call.type == "tool_use")
    rows = list(RequestLog.objects.order_by("created"))
    assert [row.endpoint for row in rows] == ["messages"] * 3
    assert [row.finish_reason for row in rows] == ["tool_calls", "tool_calls", "stop"]
    assert rows[1].tool_calls[0]["name"] == "weather"
    assert json.loads(rows[1].tool_calls[0]["arguments"]) == {"location": "Paris"}


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_extended_thinking_and_its_signature_come_back(client, claude, streamed):
    messages = [{"role": "user", "content": "Weather in Florence?"}]
    options = {"model": "claude", "max_tokens": 4000, "tools": [WEATHER],
               "thinking": {"type": "enabled", "budget_tokens": 2000}}
    if streamed:
        with client.messages.stream(messages=messages, **options) as stream:
            kinds = [event.type for event in stream]
            first = stream.get_final_message()
        assert "thinking" in kinds and "signature" in kinds
    else:
        first = client.messages.create(messages=messages, **options)
    thinking, tool_use = first.content[0], first.content[-1]
    assert thinking.type == "thinking" and thinking.signature in claude.signatures
    assert tool_use.type == "tool_use"

    messages += [{"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "24C"}]}]
    second = client.messages.create(messages=messages, **options)

    # The fake refuses a thinking block whose signature it did not issue: it came back as it went.
    passed_back = claude.requests[-1].json["messages"][1]["content"][0]
    assert passed_back == {"type": "thinking", "thinking": thinking.thinking, "signature": thinking.signature}
    assert second.content[0].text == "Tool results: 24C"


def test_a_forged_signature_is_claudes_own_400(client, claude):
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "forged"},
                                                  {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                                   "input": {"location": "Rome"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="claude", max_tokens=4000, tools=[WEATHER], messages=messages,
                               thinking={"type": "enabled", "budget_tokens": 2000})
    assert "signature" in refused.value.message


def test_gemini_serves_a_translated_message(client, gemini):
    message = client.messages.create(model="gemini", max_tokens=200, system="Be brief.", messages=HELLO,
                                     stop_sequences=["END"], extra_body={"temperature": 0.5, "top_k": 20})
    sent = gemini.requests[-1].json
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert sent["generationConfig"]["stopSequences"] == ["END"] and sent["generationConfig"]["topK"] == 20
    assert message.id.startswith("msg_") and message.model == "gemini-2.5-flash"
    assert message.content[0].text == "Fake answer to: Say hi in Portuguese" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert last_row().request_id == "req_" + message.id.removeprefix("msg_")


def test_an_openai_compatible_upstream_gets_the_chat_call(client, compatible):
    message = client.messages.create(model="openai", max_tokens=200, system="Be brief.", messages=HELLO,
                                     stop_sequences=["END"], metadata={"user_id": "u-7"},
                                     tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    sent = compatible.requests[-1].json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hi in Portuguese"}]
    assert sent["stop"] == ["END"] and sent["user"] == "u-7" and sent["parallel_tool_calls"] is False
    assert sent["tools"] == [{"type": "function", "function": {"name": "weather", "description": "Weather of a city",
                                                               "parameters": WEATHER["input_schema"]}}]
    assert sent["model"] == "gpt-4o" and message.stop_reason == "tool_use"
    assert message.content[-1].type == "tool_use" and message.content[-1].name == "weather"


def test_count_tokens_asks_claude_and_estimates_for_gemini(client, claude, gemini):
    counted = client.messages.count_tokens(model="claude", messages=HELLO, tools=[WEATHER])
    sent = claude.requests[-1]
    assert sent.path.endswith("/count-tokens:rawPredict")
    assert sent.json["model"] == "claude-3-7-sonnet@20250219" and sent.json["tools"] == [WEATHER]
    assert counted.input_tokens == len(json.dumps(HELLO)) // 4 + 3

    estimated = client.messages.count_tokens(model="gemini", messages=HELLO)
    assert estimated.input_tokens > 0 and gemini.count == 0
    rows = list(RequestLog.objects.order_by("created"))
    assert [row.endpoint for row in rows] == ["messages.count_tokens"] * 2
    assert all(row.cost == 0 and row.status == 200 for row in rows)


# --- a run that fails over --------------------------------------------------------------------------

def test_a_claude_run_fails_over_to_gemini_mid_tool_loop(client, tenant, claude, gemini):
    run = {"X-Nemo-Run": "run-failover"}
    messages = [{"role": "user", "content": "Weather in Florence?"}]
    first = client.messages.create(model="agent", max_tokens=4000, tools=[WEATHER], messages=messages,
                                   thinking={"type": "enabled", "budget_tokens": 2000}, extra_headers=run)
    tool_use = first.content[-1]
    assert first.content[0].type == "thinking" and tool_use.id.startswith("toolu_vrtx_")
    messages += [{"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "24C"}]}]
    claude.script(Status(529, message="Overloaded"))
    raw = client.messages.with_raw_response.create(model="agent", max_tokens=4000, tools=[WEATHER],
                                                   messages=messages, extra_headers=run,
                                                   thinking={"type": "enabled", "budget_tokens": 2000})
    second = raw.parse()

    assert raw.headers["x-nemo-attempts"] == "sonnet:529, flash:ok"
    assert second.content[0].type == "thinking" and "24C" in second.content[1].text
    assert second.stop_reason == "end_turn"
    sent = gemini.requests[-1].json["contents"]
    assert [part["functionCall"]["name"] for part in sent[1]["parts"] if "functionCall" in part] == ["weather"]
    assert sent[2]["parts"][0]["functionResponse"]["name"] == "weather"
    rows = list(RequestLog.objects.filter(run_id="run-failover").order_by("created"))
    assert [row.deployment for row in rows] == ["sonnet", "flash"]
    assert [[a["outcome"] for a in row.attempts] for row in rows] == [["ok"], ["529", "ok"]]
    # The run, as the management API shows it: two steps, the second a fallback.
    _, token = org_token_create(org=tenant.org, name="script", actor=Actor.system("test"))
    shown = APIClient().get("/api/v1/runs/run-failover", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert shown["steps_count"] == 2 and shown["fallback_steps"] == [2]
    assert [step["deployment"] for step in shown["steps"]] == ["sonnet", "flash"]


def test_a_run_back_on_claude_after_a_gemini_step_goes_on_without_thinking(client, claude, gemini):
    """Claude thinks at the start of a turn and wants that thinking back with the turn's tool
    calls; a step another model served has none, so Claude's next step goes without thinking."""
    thinking = {"type": "enabled", "budget_tokens": 2000}
    messages = [{"role": "user", "content": "Weather in Florence, then in Rome?"}]
    first = client.messages.create(model="agent", max_tokens=4000, tools=[WEATHER], messages=messages,
                                   thinking=thinking)
    assert first.content[0].type == "thinking"
    messages += [{"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[-1].id,
                                               "content": "24C"}]}]
    claude.script(Status(503))
    gemini.script(Reply(tool_calls=[("weather", {"location": "Rome"})]))
    second = client.messages.create(model="agent", max_tokens=4000, tools=[WEATHER], messages=messages,
                                    thinking=thinking)
    assert last_row().deployment == "flash" and second.content[-1].type == "tool_use"
    messages += [{"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in second.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": second.content[-1].id,
                                               "content": "26C"}]}]
    third = client.messages.create(model="agent", max_tokens=4000, tools=[WEATHER], messages=messages,
                                   thinking=thinking)

    assert last_row().deployment == "sonnet" and "26C" in third.content[-1].text
    sent = claude.requests[-1].json
    assert "thinking" not in sent and sent["messages"][1]["content"][0]["type"] == "thinking"


def test_claude_codes_session_is_the_run(client):
    client.messages.create(model="gemini", max_tokens=50, messages=HELLO,
                           metadata={"user_id": "user_abc_account_1234_session_5f6e7d"})
    assert last_row().run_id == "5f6e7d"


# --- refusals, as the SDK raises them -------------------------------------------------------------

def test_a_budget_refusal_is_a_payment_required_error(gateway, make_tenant):
    tenant = make_tenant(key_budget=Decimal("0.000010"))
    with pytest.raises(anthropic.PaymentRequiredError) as refused:
        client_of(gateway, tenant.secret).messages.create(model="claude", max_tokens=4000, messages=HELLO)
    body = refused.value.body
    assert refused.value.status_code == 402 and body["type"] == "error"
    assert body["error"]["type"] == "billing_error" and body["error"]["nemo"]["param"] == "key"
    assert "key budget" in refused.value.message
    assert last_row().status == 402


def test_a_rate_limit_is_a_rate_limit_error(gateway, make_tenant):
    client = client_of(gateway, make_tenant(rpm_limit=1).secret)
    client.messages.create(model="gemini", max_tokens=50, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="gemini", max_tokens=50, messages=HELLO)
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert int(refused.value.response.headers["retry-after"]) >= 1


def test_errors_have_anthropics_shape_and_classes(gateway, client):
    with pytest.raises(anthropic.AuthenticationError):
        client_of(gateway, "sk-nemo-not-a-key").messages.create(model="claude", max_tokens=10, messages=HELLO)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=10, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as malformed:
        client.messages.create(model="claude", messages=HELLO, max_tokens=0)
    assert malformed.value.body["error"]["nemo"]["param"] == "max_tokens"
    with pytest.raises(anthropic.BadRequestError) as unknown_block:
        client.messages.create(model="gemini", max_tokens=10,
                               messages=[{"role": "user", "content": [{"type": "search_result"}]}])
    assert "messages[0].content[0].type" in unknown_block.value.message


def test_the_key_may_come_as_a_bearer_token(gateway, tenant):
    answer = httpx.post(f"{gateway.url}/v1/messages", headers={"Authorization": f"Bearer {tenant.secret}"},
                        json={"model": "gemini", "max_tokens": 20, "messages": HELLO}, timeout=30)
    assert answer.status_code == 200 and answer.json()["type"] == "message"


def test_a_stream_that_breaks_ends_in_an_error_event(client, gemini):
    gemini.script(StreamError(events=1, status=500))
    with pytest.raises(anthropic.APIStatusError) as broken:
        with client.messages.stream(model="gemini", max_tokens=50, messages=HELLO) as stream:
            for _ in stream:
                pass
    assert "upstream stream broke" in broken.value.message
    assert last_row().status == 502


# --- billing: Claude's prompt cache -----------------------------------------------------------------

def expected_cost(usage, *, input_price="3.00", read_price="0.30", write_price="3.75", output_price="15.00"):
    """Claude 3.7 Sonnet's catalog prices, per million tokens: a cache read cheaper, a write dearer."""
    micros = (usage.input_tokens * Decimal(input_price) + usage.cache_read_input_tokens * Decimal(read_price)
              + usage.cache_creation_input_tokens * Decimal(write_price) + usage.output_tokens * Decimal(output_price))
    return (micros.to_integral_value(rounding="ROUND_CEILING") / 1_000_000).quantize(Decimal("0.000001"))


def test_cache_writes_and_reads_are_priced_as_the_catalog_says(client):
    system = [{"type": "text", "text": "A long shared instruction. " * 40, "cache_control": {"type": "ephemeral"}}]
    written = client.messages.create(model="claude", max_tokens=100, system=system, messages=HELLO)
    read = client.messages.create(model="claude", max_tokens=100, system=system, messages=HELLO)

    assert written.usage.cache_creation_input_tokens > 0 and written.usage.cache_read_input_tokens == 0
    assert read.usage.cache_read_input_tokens == written.usage.cache_creation_input_tokens
    first, second = RequestLog.objects.order_by("created")
    assert first.cost == expected_cost(written.usage) and second.cost == expected_cost(read.usage)
    assert first.cost > second.cost
    assert second.cached_tokens == read.usage.cache_read_input_tokens


# --- content blocks, tool choices, broken streams -------------------------------------------------

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
MEDIA = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
         {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
          "cache_control": {"type": "ephemeral"}},
         {"type": "text", "text": "What is in these?"}]


def test_media_blocks_reach_claude_as_they_came_and_gemini_translated(client, claude, gemini):
    client.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": MEDIA}])
    assert claude.requests[-1].json["messages"][0]["content"] == MEDIA

    client.messages.create(model="gemini", max_tokens=50, messages=[{"role": "user", "content": MEDIA}])
    parts = gemini.requests[-1].json["contents"][0]["parts"]
    assert parts == [{"inlineData": {"mimeType": "image/png", "data": PIXEL}},
                     {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                     {"text": "What is in these?"}]


def test_a_document_by_url_is_claudes_only(client, claude, gemini):
    linked = [{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
              {"type": "text", "text": "Summarise it."}]
    client.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": linked}])
    assert claude.requests[-1].json["messages"][0]["content"] == linked
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gemini", max_tokens=50, messages=[{"role": "user", "content": linked}])
    assert "flash cannot take this request" in refused.value.message and gemini.count == 0
    assert refused.value.body["error"]["nemo"]["param"] == "messages[0].content[0].source"


@pytest.mark.parametrize("choice, expected", [
    ({"type": "any"}, {"mode": "ANY"}),
    ({"type": "tool", "name": "weather"}, {"mode": "ANY", "allowedFunctionNames": ["weather"]}),
    ({"type": "none"}, {"mode": "NONE"}),
])
def test_tool_choices_translate_to_gemini(client, gemini, choice, expected):
    client.messages.create(model="gemini", max_tokens=50, tools=[WEATHER], tool_choice=choice, messages=HELLO)
    sent = gemini.requests[-1].json
    assert sent["toolConfig"]["functionCallingConfig"] == expected
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "weather"


def test_a_server_tool_goes_to_claude_and_is_refused_by_name_elsewhere(client, claude, gemini):
    tools = [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    client.messages.create(model="claude", max_tokens=50, messages=HELLO, tools=tools)
    assert claude.requests[-1].json["tools"] == tools
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gemini", max_tokens=50, messages=HELLO, tools=tools)
    assert "web_search_20250305" in refused.value.message and "flash cannot take" in refused.value.message
    assert refused.value.body["error"]["nemo"]["param"] == "tools[1].type" and gemini.count == 0
    servers = [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gemini", max_tokens=50, messages=HELLO, extra_body={"mcp_servers": servers})
    assert refused.value.body["error"]["nemo"]["param"] == "mcp_servers"


def test_claudes_stream_that_breaks_ends_in_an_error_event(client, claude):
    claude.script(StreamError(events=3, status=529))
    with pytest.raises(anthropic.APIStatusError) as broken:
        with client.messages.stream(model="claude", max_tokens=50, messages=HELLO) as stream:
            for _ in stream:
                pass
    assert "overloaded_error" in broken.value.message
    row = last_row()
    assert row.status == 502 and row.attempts[-1]["outcome"] == "broken_stream"


def test_a_streamed_run_fails_over_from_claude_to_gemini(client, claude, gemini):
    messages = [{"role": "user", "content": "Weather in Florence?"}]
    with client.messages.stream(model="agent", max_tokens=300, tools=[WEATHER], messages=messages) as stream:
        first = stream.get_final_message()
    tool_use = first.content[-1]
    messages += [{"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "24C"}]}]
    claude.script(Status(503))
    with client.messages.stream(model="agent", max_tokens=300, tools=[WEATHER], messages=messages) as stream:
        kinds = [event.type for event in stream]
        second = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "24C" in second.content[0].text and second.id.startswith("msg_")
    assert last_row().deployment == "flash" and [a["outcome"] for a in last_row().attempts] == ["503", "ok"]


def test_a_body_over_the_limit_is_a_request_too_large(client, settings):
    settings.NEMO_MAX_BODY_MB = 1
    with pytest.raises(anthropic.APIStatusError) as refused:
        client.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x" * 2_000_000}])
    assert refused.value.status_code == 413 and refused.value.body["error"]["type"] == "request_too_large"


def test_a_chain_that_fails_is_an_api_error_of_502(client, claude):
    claude.script(Status(500))
    with pytest.raises(anthropic.InternalServerError) as failed:
        client.messages.create(model="claude", max_tokens=10, messages=HELLO)
    assert failed.value.status_code == 502 and failed.value.body["error"]["type"] == "api_error"
    assert failed.value.response.headers["x-nemo-attempts"] == "sonnet:500"


# --- runaway protection on /v1/messages (the pipeline's, whatever the client API) ------------------

def test_an_idempotency_key_sends_a_message_upstream_once_and_replays_it_byte_for_byte(client, claude):
    headers = {"Idempotency-Key": "plan-step-7"}
    first = client.messages.with_raw_response.create(model="claude", max_tokens=200, messages=HELLO,
                                                     extra_headers=headers)
    again = client.messages.with_raw_response.create(model="claude", max_tokens=200, messages=HELLO,
                                                     extra_headers=headers)
    with pytest.raises(anthropic.UnprocessableEntityError) as reused:
        client.messages.create(model="claude", max_tokens=201, messages=HELLO, extra_headers=headers)

    assert len(claude.requests) == 1
    assert again.headers["x-nemo-idempotent-replay"] == "true"
    assert again.http_response.content == first.http_response.content
    assert reused.value.body["error"]["type"] == "invalid_request_error"
    assert reused.value.body["error"]["nemo"]["code"] == "idempotency_key_reused"
    rows = RequestLog.objects.filter(endpoint="messages").order_by("created")
    assert [(row.status, row.cost > 0) for row in rows] == [(200, True), (200, False), (422, False)]


def test_a_runs_envelope_stops_a_message_with_a_billing_error_naming_the_run(gateway, make_tenant, claude):
    client = client_of(gateway, make_tenant().secret)
    run = {"X-Nemo-Run": "claude-run", "X-Nemo-Run-Budget": "0.000001"}

    with pytest.raises(anthropic.PaymentRequiredError) as refused:
        client.messages.create(model="claude", max_tokens=200, messages=HELLO, extra_headers=run)

    assert refused.value.body["error"]["type"] == "billing_error"
    assert refused.value.body["error"]["nemo"]["param"] == "run"
    assert not claude.requests
    row = last_row()
    assert (row.endpoint, row.status, row.error_param, row.run_id) == ("messages", 402, "run", "claude-run")


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_the_loop_guard_stops_a_claude_run_asking_for_the_same_tool_call(gateway, make_tenant, claude, streamed):
    client = client_of(gateway, make_tenant(loop_limit=2).secret)
    claude.script(*[Reply(tool_calls=[("weather", {"location": "Paris"})])] * 3)
    run = {"X-Nemo-Run": "looping-claude"}

    def step():
        if streamed:
            with client.messages.stream(model="claude", max_tokens=300, tools=[WEATHER], messages=HELLO,
                                        extra_headers=run) as stream:
                return stream.get_final_message()
        return client.messages.create(model="claude", max_tokens=300, tools=[WEATHER], messages=HELLO,
                                      extra_headers=run)

    answers = [step(), step()]
    with pytest.raises(anthropic.RateLimitError) as stopped:
        step()

    assert [answer.stop_reason for answer in answers] == ["tool_use", "tool_use"]
    assert stopped.value.body["error"]["nemo"]["code"] == "run_loop_detected"
    assert len(claude.requests) == 2
    assert last_row().error_code == "run_loop_detected"


# --- thinking from other models: Gemini's thoughts, a compatible server's reasoning ----------------

THINKING = {"type": "enabled", "budget_tokens": 2000}


def turn_of(message) -> dict:
    return {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]}


def ask(client, streamed: bool, **options):
    if not streamed:
        return client.messages.create(**options)
    with client.messages.stream(**options) as stream:
        return stream.get_final_message()


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_gemini_thinks_in_thinking_blocks_whose_signatures_come_back(client, gemini, streamed):
    gemini.require_thought_signatures = True
    options = {"model": "gemini", "max_tokens": 4000, "tools": [WEATHER], "thinking": THINKING}
    messages = [{"role": "user", "content": "Weather in Florence?"}]
    first = ask(client, streamed, messages=messages, **options)
    thinking, tool_use = first.content
    assert gemini.requests[0].json["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2000,
                                                                            "includeThoughts": True}
    assert thinking.type == "thinking" and thinking.thinking == "Thinking about: Weather in Florence?"
    # Gemini's signature (of its function call) inside the gateway's.
    assert thinking.signature == "nemo.gemini." + gemini.signatures_issued[0]
    assert tool_use.type == "tool_use" and first.stop_reason == "tool_use"

    messages += [turn_of(first), {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool_use.id, "content": "24C"}]}]
    second = ask(client, streamed, messages=messages, **options)
    # The fake refuses a function call without the signature it issued: it came back.
    assert gemini.requests[1].json["contents"][1]["parts"][0]["thoughtSignature"] == gemini.signatures_issued[0]
    assert [block.type for block in second.content] == ["thinking", "text"] and "24C" in second.content[1].text


def test_a_text_answers_signature_comes_back_on_its_text(client, gemini):
    messages = [{"role": "user", "content": "Say hi"}]
    first = client.messages.create(model="gemini", max_tokens=4000, messages=messages, thinking=THINKING)
    assert first.content[0].signature == "nemo.gemini." + gemini.signatures_issued[0]

    messages += [turn_of(first), {"role": "user", "content": "Again"}]
    client.messages.create(model="gemini", max_tokens=4000, messages=messages, thinking=THINKING)
    assert gemini.requests[1].json["contents"][1] == {
        "role": "model", "parts": [{"text": first.content[1].text, "thoughtSignature": gemini.signatures_issued[0]}]}


def test_a_streamed_text_answers_late_signature_leaves_its_thinking_unsigned(client, gemini):
    """Gemini signs a streamed text at its end, after the thinking block had to close; it does not
    need a text's signature back, so that thinking goes unsigned and is not sent back."""
    messages = [{"role": "user", "content": "Say hi"}]
    with client.messages.stream(model="gemini", max_tokens=4000, messages=messages, thinking=THINKING) as stream:
        first = stream.get_final_message()
    assert first.content[0].thinking == "Thinking about: Say hi" and first.content[0].signature == "nemo.unsigned"

    messages += [turn_of(first), {"role": "user", "content": "Again"}]
    client.messages.create(model="gemini", max_tokens=4000, messages=messages, thinking=THINKING)
    assert gemini.requests[1].json["contents"][1] == {"role": "model", "parts": [{"text": first.content[1].text}]}


def test_a_streamed_gemini_thought_comes_in_anthropics_events_and_order(gateway, tenant, gemini):
    body = {"model": "gemini", "max_tokens": 4000, "tools": [WEATHER], "thinking": THINKING, "stream": True,
            "messages": [{"role": "user", "content": "Weather in Florence?"}]}
    answer = httpx.post(f"{gateway.url}/v1/messages", json=body, timeout=30,
                        headers={"x-api-key": tenant.secret, "anthropic-version": "2023-06-01"})
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    kinds = [(event["type"], (event.get("delta") or event.get("content_block") or {}).get("type"))
             for event in events]
    thoughts = [event["delta"]["thinking"] for event in events if event["type"] == "content_block_delta"
                and event["delta"]["type"] == "thinking_delta"]
    assert kinds == [("message_start", None), ("content_block_start", "thinking"), ("ping", None),
                     *[("content_block_delta", "thinking_delta")] * len(thoughts),
                     ("content_block_delta", "signature_delta"), ("content_block_stop", None),
                     ("content_block_start", "tool_use"), ("content_block_delta", "input_json_delta"),
                     ("content_block_stop", None), ("message_delta", None), ("message_stop", None)]
    assert "".join(thoughts) == "Thinking about: Weather in Florence?" and len(thoughts) > 1
    assert events[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[2 + len(thoughts) + 1]["delta"]["signature"] == "nemo.gemini." + gemini.signatures_issued[0]


def test_claudes_thinking_sent_to_gemini_is_left_out(client, gemini):
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Claude thought", "signature": "EtYDCkYICxgCKkAVHEWR"},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"},
                    {"type": "text", "text": "Let me look."}]},
                {"role": "user", "content": "Go on"}]
    answer = client.messages.create(model="gemini", max_tokens=4000, messages=messages, thinking=THINKING)
    sent = gemini.requests[-1].json["contents"]
    assert sent[1] == {"role": "model", "parts": [{"text": "Let me look."}]}
    assert answer.content[0].type == "thinking" and answer.content[1].text == "Fake answer to: Go on"


def test_gemini_thinking_sent_to_claude_is_left_out(client, claude, gemini):
    """Claude refuses a signature not its own: a Gemini step's thinking block is not sent, and the
    step whose turn then starts without thinking goes on without it."""
    messages = [{"role": "user", "content": "Weather in Florence?"}]
    first = client.messages.create(model="gemini", max_tokens=4000, tools=[WEATHER], messages=messages,
                                   thinking=THINKING)
    assert first.content[0].signature.startswith("nemo.gemini.")
    messages += [turn_of(first), {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": first.content[1].id, "content": "24C"}]}]
    second = client.messages.create(model="claude", max_tokens=4000, tools=[WEATHER], messages=messages,
                                    thinking=THINKING)
    sent = claude.requests[-1].json
    assert [block["type"] for block in sent["messages"][1]["content"]] == ["tool_use"]
    assert "thinking" not in sent and "24C" in second.content[-1].text


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_compatible_servers_reasoning_is_thinking_left_out_on_the_way_back(client, compatible, field,
                                                                               streamed):
    compatible.reasoning_field = field
    messages = [{"role": "user", "content": "Say hi"}]
    first = ask(client, streamed, model="openai", max_tokens=4000, messages=messages, thinking=THINKING)
    assert [block.type for block in first.content] == ["thinking", "text"]
    # Nothing the server could check signs it: the gateway's mark, dropped on the way back.
    assert first.content[0].thinking == "Thinking over 1 messages" and first.content[0].signature == "nemo.unsigned"
    assert "thinking_budget" not in compatible.requests[0].json

    messages += [turn_of(first), {"role": "user", "content": "Again"}]
    ask(client, streamed, model="openai", max_tokens=4000, messages=messages, thinking=THINKING)
    assert compatible.requests[-1].json["messages"][1] == {"role": "assistant", "content": first.content[1].text}


# --- the response cache: the same Message again -----------------------------------------------------

@pytest.mark.parametrize("first_streamed", [False, True], ids=["whole-first", "streamed-first"])
@pytest.mark.parametrize("hit_streamed", [False, True], ids=["whole-hit", "streamed-hit"])
def test_a_cache_hit_is_claudes_message_with_its_id_and_thinking(client, claude, first_streamed, hit_streamed):
    options = {"model": "claude", "max_tokens": 4000, "tools": [WEATHER], "thinking": THINKING,
               "messages": [{"role": "user", "content": "Weather in Florence?"}], "extra_body": {"nemo_cache": True}}
    first = ask(client, first_streamed, **options)
    hit = ask(client, hit_streamed, **options)

    assert claude.count == 1
    assert first.content[0].type == "thinking" and first.content[0].signature in claude.signatures
    assert hit.model_dump() == first.model_dump()
    assert last_row().cache == "hit" and last_row().cost == 0


def test_a_cache_hit_of_a_gemini_message_keeps_its_thinking(client, gemini):
    options = {"model": "gemini", "max_tokens": 4000, "thinking": THINKING, "messages": HELLO,
               "extra_body": {"nemo_cache": True}}
    first = client.messages.create(**options)
    with client.messages.stream(**options) as stream:
        hit = stream.get_final_message()
    assert gemini.count == 1 and last_row().cache == "hit"
    assert [block.model_dump() for block in hit.content] == [block.model_dump() for block in first.content]
    assert hit.content[0].signature == "nemo.gemini." + gemini.signatures_issued[0]


# --- count_tokens along the chain -------------------------------------------------------------------

def test_count_tokens_skips_a_link_whose_circuit_is_open(client, claude, gemini):
    claude.script(*[Status(500)] * 5)
    for _ in range(5):
        client.messages.create(model="agent", max_tokens=50, messages=HELLO)
    asked = claude.count

    raw = client.messages.with_raw_response.count_tokens(model="agent", messages=HELLO)

    assert raw.headers["x-nemo-attempts"] == "sonnet:circuit_open, flash:ok"
    assert raw.parse().input_tokens > 0 and claude.count == asked
    row = last_row()
    assert (row.endpoint, row.status, row.cost, row.deployment) == ("messages.count_tokens", 200, 0, "flash")


def test_count_tokens_is_the_estimate_when_no_link_can_count(client, claude):
    claude.script(Status(503))
    raw = client.messages.with_raw_response.count_tokens(model="claude", messages=HELLO)

    assert raw.headers["x-nemo-attempts"] == "sonnet:503"
    assert raw.parse().input_tokens == (len(json.dumps(HELLO, separators=(",", ":"))) + 3) // 4
    row = last_row()
    assert (row.status, row.cost, row.deployment) == (200, 0, "")


# --- GET /v1/models in Anthropic's shape --------------------------------------------------------------

def test_the_anthropic_sdk_lists_and_retrieves_the_models_a_key_may_use(gateway, make_tenant):
    client = client_of(gateway, make_tenant(allowed_models=["claude", "gemini", "openai"]).secret)

    listed = list(client.models.list())
    page = client.models.list(limit=2)
    retrieved = client.models.retrieve("gemini")

    assert [model.id for model in listed] == ["claude", "gemini", "openai"]
    assert all(model.type == "model" and model.display_name == model.id for model in listed)
    assert listed[0].created_at.tzinfo is not None
    assert [model.id for model in page.data] == ["claude", "gemini"]
    assert (page.has_more, page.first_id, page.last_id) == (True, "claude", "gemini")
    assert [model.id for model in page.get_next_page().data] == ["openai"]
    assert (retrieved.id, retrieved.type) == ("gemini", "model")
    # A model the key may not use is as absent as one that does not exist.
    for name in ("agent", "no-such-model"):
        with pytest.raises(anthropic.NotFoundError) as missing:
            client.models.retrieve(name)
        assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.models.list(limit=0)
    assert bad.value.body["error"]["nemo"]["param"] == "limit"
    with pytest.raises(anthropic.AuthenticationError):
        client_of(gateway, "sk-nemo-wrong").models.list()


def test_an_openai_client_still_gets_openais_model_list(gateway, tenant):
    listed = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {tenant.secret}"}).json()
    assert listed["object"] == "list" and {"id": "agent", "object": "model"}.items() <= listed["data"][0].items()
    as_anthropic = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {tenant.secret}",
                                                                  "anthropic-version": "2023-06-01"}).json()
    assert as_anthropic["data"][0]["type"] == "model" and as_anthropic["first_id"] == "agent"


def test_a_chat_client_may_ask_gemini_for_its_thoughts_within_a_budget_it_names_well(gateway, tenant, gemini):
    asked = {"model": "gemini", "messages": HELLO, "reasoning_effort": "low", "thinking_budget": 1500}
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=asked,
                        headers={"Authorization": f"Bearer {tenant.secret}"}).json()
    assert answer["choices"][0]["message"]["reasoning_content"] == "Thinking about: Say hi in Portuguese"
    assert gemini.requests[-1].json["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1500,
                                                                             "includeThoughts": True}
    refused = httpx.post(f"{gateway.url}/v1/chat/completions", json={**asked, "thinking_budget": "lots"},
                         headers={"Authorization": f"Bearer {tenant.secret}"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "thinking_budget"
