"""``GET /v1/models/{id}`` through the real ``openai`` package, and what becomes of a request for
a ``/v1/...`` route the gateway does not serve: a 404 in OpenAI's shape, logged and counted."""


import httpx
import openai
import pytest

from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing


@pytest.fixture
def gateway(start_gateway, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with FakeOpenAI() as fake:
        routing = openai_routing(fake.base_url)
        routing["deployments"].append({"id": "small", "provider": "primary", "model": "text-embedding-3-small"})
        routing["models"]["text-embedding-3-small"] = {"chain": ["small"]}
        yield start_gateway(routing)


def test_a_model_is_retrieved_in_openais_shape(gateway, make_tenant):
    model = gateway.client(make_tenant().secret).models.retrieve("gpt-4o")

    assert (model.id, model.object, model.owned_by) == ("gpt-4o", "model", "nemo-router")
    assert model.created > 0


def test_embedding_models_are_listed_and_retrieved_like_any_other(gateway, make_tenant):
    client = gateway.client(make_tenant().secret)

    assert [m.id for m in client.models.list().data] == ["gpt-4o", "text-embedding-3-small"]
    assert client.models.retrieve("text-embedding-3-small").id == "text-embedding-3-small"


def test_an_unknown_model_and_a_model_the_key_may_not_use_get_the_same_404(gateway, make_tenant):
    client = gateway.client(make_tenant(allowed_models=["gpt-4o"]).secret)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.retrieve("gpt-9")
    with pytest.raises(openai.NotFoundError) as forbidden:
        client.models.retrieve("text-embedding-3-small")

    assert unknown.value.body == {"message": "The model 'gpt-9' does not exist.", "type": "not_found_error",
                                  "param": "model", "code": "model_not_found"}
    assert forbidden.value.body["code"] == "model_not_found"
    assert "does not exist" in forbidden.value.body["message"]


def test_retrieving_a_model_needs_a_key(gateway):
    with pytest.raises(openai.AuthenticationError):
        gateway.client("sk-nemo-not-a-real-key").models.retrieve("gpt-4o")


def test_an_unknown_route_is_a_404_logged_with_the_keys_prefix_and_counted(gateway, make_tenant, gateway_events):
    secret = make_tenant().secret
    for _ in range(2):
        response = httpx.post(f"{gateway.url}/v1/audio/speech", headers={"Authorization": f"Bearer {secret}"},
                              json={"model": "tts-1"})
    files = httpx.get(f"{gateway.url}/v1/files")

    assert response.status_code == 404
    assert response.json() == {"error": {"message": "No route POST /v1/audio/speech.", "type": "not_found_error",
                                         "param": None, "code": "unknown_url"}}
    prefix = secret[len("sk-nemo-"):][:12]
    lines = [{name: line[name] for name in ("event", "method", "path", "key")} for line in gateway_events]
    assert lines == [{"event": "unknown_route", "method": "POST", "path": "/v1/audio/speech", "key": prefix}] * 2 + [
        {"event": "unknown_route", "method": "GET", "path": "/v1/files", "key": None}]
    assert gateway_events[-1]["request_id"] == files.headers["x-nemo-request-id"]
    assert secret not in repr(gateway_events)
    assert gateway.app.unknown_routes.counts == {("POST", "/v1/audio/speech"): 2, ("GET", "/v1/files"): 1}


def test_a_foreign_credential_is_not_logged(gateway, gateway_events):
    httpx.get(f"{gateway.url}/v1/assistants", headers={"Authorization": "Bearer sk-proj-real-openai-key"})

    assert "sk-proj" not in repr(gateway_events)
    assert [(line["event"], line["path"], line["key"]) for line in gateway_events] == [
        ("unknown_route", "/v1/assistants", None)]
