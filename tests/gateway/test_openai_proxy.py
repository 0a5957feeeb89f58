"""The proxy through the real ``openai`` package, against a fake OpenAI-compatible upstream."""

import asyncio
import json
import re

import httpx
import openai
import pytest

from analytics.models import RequestLog
from tests.fakes.behaviours import Raw, Reply
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing
from tests.gateway.tools import TIME_TOOL, WEATHER_TOOL


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture
def gateway(start_gateway, fake):
    return start_gateway(openai_routing(fake.base_url))


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def test_it_answers_a_plain_call_and_logs_it(gateway, tenant, fake):
    raw = gateway.client(tenant.secret).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hi in Portuguese"}], max_tokens=50
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "Fake answer to: Say hi in Portuguese"
    assert completion.usage.prompt_tokens > 0
    assert raw.headers["x-nemo-deployment"] == "gpt4o-primary"
    assert raw.headers["x-nemo-attempts"] == "gpt4o-primary:ok"
    assert fake.requests[0].headers["Authorization"] == "Bearer upstream-secret"
    row = RequestLog.objects.get(request_id=raw.headers["x-nemo-request-id"])
    assert (row.status, row.deployment, row.prompt_tokens) == (200, "gpt4o-primary", completion.usage.prompt_tokens)
    assert str(row.cost) == raw.headers["x-nemo-cost"]
    assert row.cost > 0


def test_request_ids_keep_their_shape_and_sort_by_when_the_calls_came(gateway, tenant):
    client = gateway.client(tenant.secret)
    ids = [client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"call {n}"}], max_tokens=5,
    ).headers["x-nemo-request-id"] for n in range(6)]

    assert all(re.fullmatch(r"req_[0-9a-f]{32}", request_id) for request_id in ids)
    assert sorted(ids) == ids
    assert list(RequestLog.objects.order_by("created").values_list("request_id", flat=True)) == ids


def test_it_streams_an_answer_with_usage(gateway, tenant):
    stream = gateway.client(tenant.secret).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Tell me"}], max_tokens=50, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Fake answer to: Tell me"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    row = RequestLog.objects.get()
    assert row.stream and row.completion_tokens == chunks[-1].usage.completion_tokens and row.cost > 0
    assert row.endpoint == "chat.completions"


def test_it_leaves_out_the_usage_chunk_unless_asked(gateway, tenant):
    chunks = list(gateway.client(tenant.secret).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Tell me"}], max_tokens=50, stream=True,
    ))

    assert all(c.choices for c in chunks)
    assert RequestLog.objects.get().completion_tokens > 0


def test_a_tool_call_and_its_result_round_trip(gateway, tenant, fake):
    client = gateway.client(tenant.secret)
    messages = [{"role": "user", "content": "Weather in Florence?"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], max_tokens=50)
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"}]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], max_tokens=50)

    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and "location" in json.loads(call.function.arguments)
    assert second.choices[0].message.content == "Tool results: sunny, 24C"
    assert fake.requests[1].json["messages"][2]["tool_call_id"] == call.id
    rows = list(RequestLog.objects.order_by("id"))
    assert rows[0].tool_calls == [{"name": "weather", "arguments": call.function.arguments}]
    assert rows[0].tools_offered == ["weather"]


def test_parallel_tool_calls_stream_by_index(gateway, tenant, fake):
    fake.script(Reply(parallel=True))
    chunks = list(gateway.client(tenant.secret).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Weather and time in Rome"}],
        tools=[WEATHER_TOOL, TIME_TOOL], stream=True, max_tokens=80, stream_options={"include_usage": True},
    ))

    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            slot = calls.setdefault(delta.index, {"id": delta.id, "name": delta.function.name, "arguments": ""})
            slot["arguments"] += delta.function.arguments or ""
    assert [calls[i]["name"] for i in sorted(calls)] == ["weather", "local_time"]
    assert all(c["id"] for c in calls.values())
    assert json.loads(calls[1]["arguments"]) == {"city": json.loads(calls[1]["arguments"])["city"]}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert [t["name"] for t in RequestLog.objects.get().tool_calls] == ["weather", "local_time"]


def test_models_lists_what_the_key_may_use(gateway, make_tenant):
    tenant = make_tenant(allowed_models=["gpt-4o"])
    models = gateway.client(tenant.secret).models.list()

    assert [m.id for m in models.data] == ["gpt-4o"]


def test_an_unknown_key_gets_401(gateway):
    with pytest.raises(openai.AuthenticationError) as caught:
        gateway.client("sk-nemo-not-a-real-key-at-all").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert caught.value.body["code"] == "invalid_api_key"


def test_a_secret_that_shares_a_known_keys_prefix_gets_401(gateway, tenant):
    gateway.client(tenant.secret).models.list()
    # The same prefix (the lookup key), the last character of the secret changed.
    forged = tenant.secret[:-1] + chr(ord(tenant.secret[-1]) ^ 1)

    with pytest.raises(openai.AuthenticationError):
        gateway.client(forged).models.list()
    assert [m.id for m in gateway.client(tenant.secret).models.list().data]


def test_a_revoked_key_gets_401_on_the_next_call(gateway, tenant):
    from keys.audit import Actor
    from keys.services import virtual_key_revoke

    client = gateway.client(tenant.secret)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    virtual_key_revoke(key=tenant.key, actor=Actor.system("test"))

    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                       extra_headers={"X-Nemo-Run": "after-revocation"})
    forged = tenant.secret[:-1] + chr(ord(tenant.secret[-1]) ^ 1)
    with pytest.raises(openai.AuthenticationError):
        gateway.client(forged).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert refused.value.message.startswith("Error code: 401") and "This API key was revoked." in refused.value.message
    # The holder's attempt is logged against the key it named, for its owner to see; a secret that
    # is not the key's (anyone may know a prefix) leaves no row in the org's log.
    refusal = RequestLog.objects.get(key=tenant.key, status=401)
    assert (refusal.org_id, refusal.run_id, refusal.error_code, refusal.cost) == (
        tenant.org.pk, "after-revocation", "invalid_api_key", 0)
    assert refused.value.response.headers["x-nemo-request-id"] == refusal.request_id
    assert RequestLog.objects.filter(org=tenant.org).count() == 2


def test_a_model_the_key_may_not_use_gets_403(gateway, make_tenant):
    tenant = make_tenant(allowed_models=["gemini-2.5-flash"])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gateway.client(tenant.secret).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert caught.value.body["code"] == "model_not_allowed"


def test_an_unknown_model_gets_404(gateway, tenant):
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.client(tenant.secret).chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}])

    assert caught.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b"[]", None),
    (b'{"model": "gpt-4o"}', "messages"),
    (b'{"model": "gpt-4o", "messages": []}', "messages"),
    (b'{"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": -3}', "max_tokens"),
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "f"}]}', "tools[0]"),
    (b'{"model": "gpt-4o", "messages": [{"role": "tool", "content": "x"}]}', "messages[0].tool_call_id"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'\xff\xfe', None),
])
def test_malformed_requests_get_400_in_the_openai_shape(gateway, tenant, fake, body, param):
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=body,
                          headers={"Authorization": f"Bearer {tenant.secret}"})

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param
    assert fake.count == 0


def test_unknown_fields_pass_through_to_the_upstream(gateway, tenant, fake):
    gateway.client(tenant.secret).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5, seed=7,
        extra_body={"logit_bias": {"50256": -100}, "nemo_cache": False, "tags": []},
    )

    sent = fake.requests[0].json
    assert sent["seed"] == 7 and sent["logit_bias"] == {"50256": -100}
    assert "nemo_cache" not in sent and "tags" not in sent


def test_a_failure_inside_the_gateway_is_a_500_in_the_openai_shape_and_still_logged(gateway, tenant, fake):
    import redis

    async def broken_admit(**_):
        raise redis.ConnectionError("Redis went away")

    gateway.app._state.store.admit = broken_admit
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {tenant.secret}"},
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})

    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"
    assert fake.count == 0
    row = RequestLog.objects.get(request_id=response.headers["x-nemo-request-id"])
    assert (row.status, row.cost) == (500, 0)


@pytest.mark.parametrize("model", ["x" * 500, "gpt-4o\x00"])
def test_a_model_name_no_column_could_hold_gets_its_404_and_its_log_row(gateway, tenant, fake, model):
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {tenant.secret}"},
                          json={"model": model, "messages": [{"role": "user", "content": "hi"}]})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    row = RequestLog.objects.get(request_id=response.headers["x-nemo-request-id"])
    assert (row.status, row.model) == (404, model.replace("\x00", "\ufffd")[:120])


def test_a_prompt_with_a_nul_character_is_answered_and_stored(gateway, make_tenant, fake):
    tenant = make_tenant()
    tenant.org.store_prompts = True
    tenant.org.save(update_fields=["store_prompts"])

    raw = gateway.client(tenant.secret).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi\x00there"}])

    assert raw.parse().choices[0].message.content == "Fake answer to: hi\x00there"
    row = RequestLog.objects.get(request_id=raw.headers["x-nemo-request-id"])
    assert row.request_body["messages"][0]["content"] == "hi\ufffdthere"
    assert row.response_body["choices"][0]["message"]["content"] == "Fake answer to: hi\ufffdthere"


def test_a_stored_request_body_keeps_its_clients_key_order(gateway, make_tenant, fake):
    """Written by the recorder's own INSERT and read back through the ORM: the keys in the order
    the client sent them, which PostgreSQL's jsonb would not keep (it sorts them by length)."""
    tenant = make_tenant()
    tenant.org.store_prompts = True
    tenant.org.save(update_fields=["store_prompts"])
    sent = '{"temperature": 0.2, "model": "gpt-4o", "messages": [{"content": "hi", "role": "user"}], "max_tokens": 9}'

    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=sent, headers={
        "Authorization": f"Bearer {tenant.secret}", "Content-Type": "application/json"})

    assert response.status_code == 200
    stored = RequestLog.objects.get(request_id=response.headers["x-nemo-request-id"]).request_body
    assert list(stored)[:4] == ["temperature", "model", "messages", "max_tokens"]
    assert list(stored["messages"][0]) == ["content", "role"]


def test_the_answers_last_events_reach_the_client_once_the_call_is_logged(gateway, tenant, fake):
    """The read that ends the answer is passed on with the stream's end, after the call's row is
    committed: a client that has the answer has its trail."""
    def event(choices, **extra) -> str:
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                 "choices": choices, **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    fake.script(Raw(content_type="text/event-stream", body="".join([
        event([{"index": 0, "delta": {"role": "assistant", "content": "All done"}, "finish_reason": None}]),
        event([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        event([], usage=usage),
        "data: [DONE]\n\n",
    ])))
    writer = gateway.app._state.recorder
    insert = writer._insert

    async def slow_insert(*args):
        await asyncio.sleep(0.3)
        return await insert(*args)

    writer._insert = slow_insert
    stream = gateway.client(tenant.secret).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)

    first = next(iter(stream))
    logged = list(RequestLog.objects.filter(org=tenant.org).values_list("status", "completion_tokens"))
    rest = list(stream)

    assert first.choices[0].delta.content == "All done"
    assert logged == [(200, 2)]
    assert rest[-1].choices[0].finish_reason == "stop"


CONTENT_CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                 "choices": [{"index": 0, "delta": {"content": "Olá"}, "finish_reason": None}], "usage": None,
                 "obfuscation": "x1"}
FINISH_CHUNK = {**CONTENT_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE_CHUNK = {**CONTENT_CHUNK, "choices": [],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def stream_events_through(gateway, tenant, fake, *, include_usage: bool) -> list[str]:
    """The events the client receives when the upstream sends OpenAI's chunks (``json.dumps``
    spacing, a ``"usage": null`` on each, a field of its own) as they are written here."""
    fake.script(Raw(content_type="text/event-stream", body="".join(
        f"data: {json.dumps(chunk)}\n\n" for chunk in (CONTENT_CHUNK, FINISH_CHUNK, USAGE_CHUNK)) + "data: [DONE]\n\n"))
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {tenant.secret}"},
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                                "stream_options": {"include_usage": include_usage}})
    return [event for event in response.text.split("\n\n") if event]


def test_a_streamed_chunk_reaches_the_client_as_the_upstream_sent_it(gateway, tenant, fake):
    """The upstream's own bytes go on, not its chunks encoded again: its spacing and its fields
    are kept, and for a client that asked for usage, the ``"usage": null`` on each chunk too, as
    OpenAI would have sent it."""
    events = stream_events_through(gateway, tenant, fake, include_usage=True)

    assert events == [f"data: {json.dumps(chunk)}" for chunk in (CONTENT_CHUNK, FINISH_CHUNK, USAGE_CHUNK)] + [
        "data: [DONE]"]
    assert RequestLog.objects.get().completion_tokens == 1


def test_a_client_that_did_not_ask_for_usage_gets_chunks_without_the_null_usage(gateway, tenant, fake):
    """The gateway asks every upstream for usage (it settles the bill); the ``"usage": null``
    that puts on each chunk is taken off for a client that did not ask, with the usage chunk."""
    events = stream_events_through(gateway, tenant, fake, include_usage=False)

    without_usage = [{k: v for k, v in chunk.items() if k != "usage"} for chunk in (CONTENT_CHUNK, FINISH_CHUNK)]
    assert [json.loads(event.removeprefix("data: ")) for event in events[:-1]] == without_usage
    assert events[-1] == "data: [DONE]"
    assert RequestLog.objects.get().completion_tokens == 1
