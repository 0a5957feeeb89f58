"""``POST /v1/embeddings`` through the real ``openai`` package: against a fake OpenAI-compatible
``/v1/embeddings``, a fake Vertex ``:predict`` and the built-in mock, with the same key, chain,
reservation and log row as a chat call."""

import base64
import math
import struct
from decimal import Decimal

import httpx
import openai
import pytest

from analytics.models import RequestLog
from tests.fakes.behaviours import Hang, Status
from tests.fakes.oauth import FakeTokenServer, write_service_account
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import fake_vector
from tests.fakes.vertex_embeddings import FakeVertex

# USD per million tokens: a token costs a thousandth of a dollar, so a row's cost is easy to reckon.
PRICE = {"input": "1000", "output": "0"}


@pytest.fixture
def primary(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def backup():
    with FakeOpenAI() as fake:
        yield fake


def openai_embedding_routing(primary, backup=None) -> dict:
    providers = {"first": {"type": "openai", "base_url": primary.base_url, "api_key_env": "FAKE_OPENAI_KEY"}}
    deployments = [{"id": "emb-primary", "provider": "first", "model": "text-embedding-3-small",
                    "timeout_s": 0.5, "price": PRICE, "capabilities": ["embeddings"]}]
    if backup is not None:
        providers["second"] = {"type": "openai", "base_url": backup.base_url, "api_key_env": "FAKE_OPENAI_KEY"}
        deployments.append({"id": "emb-backup", "provider": "second", "model": "text-embedding-3-small",
                            "price": PRICE})
    return {
        "providers": providers,
        "deployments": [*deployments, {"id": "chat", "provider": "first", "model": "gpt-4o"}],
        "models": {"embedder": {"chain": [d["id"] for d in deployments]}, "gpt-4o": {"chain": ["chat"]}},
    }


@pytest.fixture
def gateway(start_gateway, primary, backup):
    return start_gateway(openai_embedding_routing(primary, backup))


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def test_it_answers_floats_and_logs_the_call_with_its_tokens_and_cost(gateway, tenant, primary):
    tenant.org.store_prompts = True
    tenant.org.save(update_fields=["store_prompts"])
    raw = gateway.client(tenant.secret).embeddings.with_raw_response.create(
        model="embedder", input="The quick brown fox", encoding_format="float")
    answer = raw.parse()

    assert answer.object == "list" and answer.model == "text-embedding-3-small"
    assert [(item.object, item.index) for item in answer.data] == [("embedding", 0)]
    assert answer.data[0].embedding == fake_vector("The quick brown fox", 1536)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 0
    sent = primary.requests[0]
    assert (sent.path, sent.json["model"], sent.json["encoding_format"]) == (
        "/v1/embeddings", "text-embedding-3-small", "float")
    row = RequestLog.objects.get(request_id=raw.headers["x-nemo-request-id"])
    assert (row.endpoint, row.status, row.deployment) == ("embeddings", 200, "emb-primary")
    assert (row.prompt_tokens, row.completion_tokens) == (answer.usage.prompt_tokens, 0)
    assert row.cost == Decimal(answer.usage.prompt_tokens) * Decimal("0.001")
    assert str(row.cost) == raw.headers["x-nemo-cost"]
    assert row.request_body == {"model": "embedder", "input": "The quick brown fox"}
    assert row.response_body["data"] == [{"object": "embedding", "index": 0, "dimensions": 1536}]


def test_the_sdks_default_base64_answer_decodes_to_the_same_vector(gateway, tenant):
    answer = gateway.client(tenant.secret).embeddings.create(model="embedder", input="hello")

    expected = fake_vector("hello", 1536)
    assert len(answer.data[0].embedding) == 1536
    assert max(abs(a - b) for a, b in zip(answer.data[0].embedding, expected, strict=True)) < 1e-6


def test_base64_is_little_endian_float32_as_openai_sends_it(gateway, tenant):
    response = httpx.post(f"{gateway.url}/v1/embeddings", headers={"Authorization": f"Bearer {tenant.secret}"},
                          json={"model": "embedder", "input": "hello", "encoding_format": "base64"})

    encoded = response.json()["data"][0]["embedding"]
    decoded = struct.unpack("<1536f", base64.b64decode(encoded))
    assert max(abs(a - b) for a, b in zip(decoded, fake_vector("hello", 1536), strict=True)) < 1e-6


def test_a_list_input_gets_one_vector_each_of_the_dimensions_asked(gateway, tenant, primary):
    answer = gateway.client(tenant.secret).embeddings.create(
        model="embedder", input=["one", "two", "three"], dimensions=256, user="user-7")

    assert [item.index for item in answer.data] == [0, 1, 2]
    assert [len(item.embedding) for item in answer.data] == [256, 256, 256]
    assert (primary.requests[0].json["dimensions"], primary.requests[0].json["user"]) == (256, "user-7")
    assert RequestLog.objects.get().prompt_meta["messages"] == 3


def test_a_token_array_input_goes_to_an_openai_upstream_as_it_came(gateway, tenant, primary):
    answer = gateway.client(tenant.secret).embeddings.create(model="embedder", input=[[1, 2, 3], [4, 5]],
                                                             encoding_format="float")

    assert len(answer.data) == 2
    assert primary.requests[0].json["input"] == [[1, 2, 3], [4, 5]]
    assert answer.usage.prompt_tokens == 5


def test_a_primary_that_times_out_falls_back_and_the_row_has_both_attempts(gateway, tenant, primary, backup):
    primary.script(Hang())
    raw = gateway.client(tenant.secret).embeddings.with_raw_response.create(model="embedder", input="hello")

    assert len(raw.parse().data[0].embedding) == 1536
    assert raw.headers["x-nemo-attempts"] == "emb-primary:timeout, emb-backup:ok"
    assert (primary.count, backup.count) == (1, 1)
    row = RequestLog.objects.get()
    assert [(a["deployment"], a["outcome"]) for a in row.attempts] == [("emb-primary", "timeout"),
                                                                       ("emb-backup", "ok")]
    assert (row.status, row.deployment, row.endpoint) == (200, "emb-backup", "embeddings")


def test_a_call_the_credits_cannot_pay_for_gets_402_before_anything_is_sent(gateway, make_tenant, primary):
    # The reservation is the request's bytes as tokens: some hundred, at a thousandth of a dollar.
    tenant = make_tenant(credits=Decimal("0.01"))
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.client(tenant.secret).embeddings.create(model="embedder", input="x" * 200)

    assert caught.value.status_code == 402
    assert (caught.value.body["type"], caught.value.body["param"]) == ("budget_exceeded", "credits")
    assert primary.count == 0
    row = RequestLog.objects.get()
    assert (row.status, row.endpoint, row.cost) == (402, "embeddings", Decimal("0"))


def test_only_the_prompt_is_reserved_an_embedding_has_no_output(start_gateway, make_tenant, primary):
    # An output price no embedding pays: reserving any output at all would cost dollars.
    routing = openai_embedding_routing(primary)
    routing["deployments"][0]["price"] = {"input": "1000", "output": "1000000"}
    gateway = start_gateway(routing)
    tenant = make_tenant(credits=Decimal("0.50"))

    answer = gateway.client(tenant.secret).embeddings.create(model="embedder", input="hello")

    assert answer.usage.prompt_tokens == 2
    assert RequestLog.objects.get().cost == Decimal("0.002")


def test_a_chat_model_does_not_embed_and_an_embedding_model_does_not_chat(gateway, tenant, primary):
    client = gateway.client(tenant.secret)
    with pytest.raises(openai.BadRequestError) as not_embedding:
        client.embeddings.create(model="gpt-4o", input="hello")
    with pytest.raises(openai.BadRequestError) as not_chat:
        client.chat.completions.create(model="embedder", messages=[{"role": "user", "content": "hi"}])

    assert "is not an embedding model" in not_embedding.value.message
    assert "POST /v1/embeddings" in not_chat.value.message
    assert primary.count == 0


@pytest.mark.parametrize("body, param", [
    ({"model": "embedder"}, "input"),
    ({"model": "embedder", "input": ""}, "input"),
    ({"model": "embedder", "input": []}, "input"),
    ({"model": "embedder", "input": ["ok", 5]}, "input"),
    ({"model": "embedder", "input": "hi", "dimensions": 0}, "dimensions"),
    ({"model": "embedder", "input": "hi", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "hi"}, "model"),
    ({"model": "embedder", "input": "hi", "task_type": "RETRIEVAL_QUERY"}, "task_type"),
])
def test_malformed_requests_get_400_naming_the_field(gateway, tenant, primary, body, param):
    response = httpx.post(f"{gateway.url}/v1/embeddings", headers={"Authorization": f"Bearer {tenant.secret}"},
                          json=body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert primary.count == 0


# --- Vertex :predict -------------------------------------------------------------------------------


@pytest.fixture
def vertex(start_gateway, tmp_path):
    with FakeTokenServer() as token_server, FakeVertex() as fake:
        credentials = str(write_service_account(tmp_path, token_uri=token_server.token_uri))
        models = ("text-embedding-005", "gemini-embedding-001")
        gateway = start_gateway({
            "providers": {"vertex": {"type": "vertex_gemini", **fake.provider_options(credentials=credentials)}},
            "deployments": [{"id": f"{model}-dep", "provider": "vertex", "model": model} for model in models],
            "models": {model: {"chain": [f"{model}-dep"]} for model in models},
        })
        yield gateway, fake


def test_vertex_embeds_a_list_in_one_predict_call_with_its_token_counts(vertex, tenant):
    gateway, fake = vertex
    answer = gateway.client(tenant.secret).embeddings.create(
        model="text-embedding-005", input=["alpha", "beta gamma"], dimensions=128, encoding_format="float")

    assert [item.embedding for item in answer.data] == [fake_vector("alpha", 128), fake_vector("beta gamma", 128)]
    (sent,) = fake.predictions
    assert sent.path.endswith("/publishers/google/models/text-embedding-005:predict")
    assert sent.headers["Authorization"].startswith("Bearer fake-token")
    assert sent.json == {"instances": [{"content": "alpha"}, {"content": "beta gamma"}],
                         "parameters": {"outputDimensionality": 128}}
    row = RequestLog.objects.get()
    assert (row.endpoint, row.prompt_tokens) == ("embeddings", answer.usage.prompt_tokens)
    assert answer.usage.prompt_tokens == 2 + 3
    assert row.cost > 0


def test_gemini_embedding_gets_one_instance_a_request(vertex, tenant):
    gateway, fake = vertex
    answer = gateway.client(tenant.secret).embeddings.create(model="gemini-embedding-001", input=["a", "b", "c"])

    assert [len(item.embedding) for item in answer.data] == [3072, 3072, 3072]
    assert sorted(r.json["instances"][0]["content"] for r in fake.predictions) == ["a", "b", "c"]
    assert all(len(r.json["instances"]) == 1 for r in fake.predictions)


def test_a_token_array_cannot_go_to_vertex_and_says_so(vertex, tenant):
    gateway, fake = vertex
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client(tenant.secret).embeddings.create(model="text-embedding-005", input=[1, 2, 3])

    assert "token arrays" in caught.value.message
    assert fake.predictions == []


# --- the built-in mock (make run) ------------------------------------------------------------------


def test_the_default_mock_routing_embeds_unit_vectors_of_the_dimensions_asked(start_gateway, tenant):
    gateway = start_gateway()
    client = gateway.client(tenant.secret)
    first = client.embeddings.create(model="text-embedding-005", input=["same", "other"], dimensions=64)
    again = client.embeddings.create(model="text-embedding-005", input="same", dimensions=64)

    vector = first.data[0].embedding
    assert len(vector) == 64
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-5)
    assert again.data[0].embedding == vector != first.data[1].embedding
    assert {"text-embedding-005", "text-embedding-3-small"} <= {m.id for m in client.models.list().data}


def test_a_chain_crosses_wire_formats_vertex_failing_over_to_openai_within_a_run(start_gateway, tenant, tmp_path,
                                                                                   primary):
    with FakeTokenServer() as token_server, FakeVertex() as vertex_fake:
        credentials = str(write_service_account(tmp_path, token_uri=token_server.token_uri))
        vertex_fake.script(Status(503, retry_after="1"))
        gateway = start_gateway({
            "providers": {"vertex": {"type": "vertex_gemini", **vertex_fake.provider_options(credentials=credentials)},
                          "openai": {"type": "openai", "base_url": primary.base_url}},
            "deployments": [{"id": "vertex-005", "provider": "vertex", "model": "text-embedding-005"},
                            {"id": "openai-small", "provider": "openai", "model": "text-embedding-3-small"}],
            "models": {"embedder": {"chain": ["vertex-005", "openai-small"]}},
        })
        raw = gateway.client(tenant.secret).embeddings.with_raw_response.create(
            model="embedder", input="hello", dimensions=64, extra_headers={"X-Nemo-Run": "rag-1"})

    assert len(raw.parse().data[0].embedding) == 64
    assert raw.headers["x-nemo-attempts"] == "vertex-005:503, openai-small:ok"
    assert (len(vertex_fake.predictions), primary.count) == (1, 1)
    row = RequestLog.objects.get()
    assert (row.run_id, row.deployment, row.endpoint) == ("rag-1", "openai-small", "embeddings")
