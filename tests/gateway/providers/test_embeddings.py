"""Each provider's embeddings: the request it sends and what it makes of the answer, the fakes'
servers standing for the upstreams."""

import math

import aiohttp
import pytest

from gateway.providers import build_provider
from gateway.providers.base import Provider, ProviderConfig, UpstreamError
from tests.fakes.behaviours import Hang, Raw, Status
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import fake_vector


def _provider(kind: str, **options: object) -> Provider:
    return build_provider(ProviderConfig(name=kind, type=kind, options=options))


async def _embed(provider: Provider, body: dict, *, model: str = "text-embedding-3-small",
                 timeout_s: float = 5) -> dict:
    async with aiohttp.ClientSession() as session:
        return await provider.embed(session, body=body, model=model, timeout_s=timeout_s)


async def test_the_mock_makes_deterministic_unit_vectors_of_each_models_size():
    mock = _provider("mock")
    small = await _embed(mock, {"input": ["a", "b"]})
    again = await _embed(mock, {"input": "a"})
    sized = await _embed(mock, {"input": "a", "dimensions": 10}, model="text-embedding-005")

    assert [len(item["embedding"]) for item in small["data"]] == [1536, 1536]
    assert again["data"][0]["embedding"] == small["data"][0]["embedding"] != small["data"][1]["embedding"]
    assert len(sized["data"][0]["embedding"]) == 10
    assert math.isclose(sum(v * v for v in sized["data"][0]["embedding"]), 1.0)
    assert small["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


async def test_the_mock_fails_and_times_out_as_configured():
    with pytest.raises(UpstreamError) as failed:
        await _embed(_provider("mock", fail_rate=1, fail_status=503), {"input": "a"})
    with pytest.raises(UpstreamError) as slow:
        await _embed(_provider("mock", latency_ms=200), {"input": "a"}, timeout_s=0.05)

    assert (failed.value.outcome, slow.value.outcome) == ("503", "timeout")


async def test_openai_sends_the_body_with_the_links_model_and_asks_for_floats():
    async with FakeOpenAI() as fake:
        answer = await _embed(_provider("openai", base_url=fake.base_url),
                              {"model": "client-name", "input": "hi", "dimensions": 8})

    assert fake.requests[0].json == {"model": "text-embedding-3-small", "input": "hi", "dimensions": 8,
                                     "encoding_format": "float"}
    assert answer["data"] == [{"object": "embedding", "index": 0, "embedding": fake_vector("hi", 8)}]


async def test_openai_decodes_a_base64_answer_it_did_not_ask_for_and_estimates_missing_usage():
    async with FakeOpenAI() as fake:
        fake.script(Raw('{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPwAAAEA="}],'
                        '"model":"m"}'))
        answer = await _embed(_provider("openai", base_url=fake.base_url), {"input": "12345678"})

    assert answer["data"][0]["embedding"] == [1.0, 2.0]
    assert answer["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


@pytest.mark.parametrize("behaviour, outcome", [
    (Hang(), "timeout"),
    (Status(500), "500"),
    (Status(429, retry_after="3"), "429"),
    (Raw('{"object": "list", "data": "nope"}'), "500"),
    (Raw("not json"), "500"),
])
async def test_openai_failures_are_classified_for_the_router(behaviour, outcome):
    async with FakeOpenAI() as fake:
        fake.script(behaviour)
        with pytest.raises(UpstreamError) as caught:
            await _embed(_provider("openai", base_url=fake.base_url), {"input": "hi"}, timeout_s=0.3)

    assert caught.value.outcome == outcome and caught.value.retryable


async def test_a_provider_that_cannot_embed_is_a_failure_of_the_link_not_of_the_request():
    provider = _provider("vertex_anthropic", project="p", base_url="http://127.0.0.1:9")
    with pytest.raises(UpstreamError) as caught:
        await _embed(provider, {"input": "hi"})

    assert caught.value.retryable and caught.value.status == 501
