import pytest

from gateway.providers import build_provider
from gateway.providers.base import ProviderConfig
from gateway.providers.mock import MockProvider
from gateway.providers.openai import OpenAIProvider
from gateway.providers.vertex_anthropic import VertexAnthropicProvider
from gateway.providers.vertex_gemini import VertexGeminiProvider


@pytest.mark.parametrize(
    ("kind", "options", "expected"),
    [
        ("vertex_gemini", {"project": "p", "location": "us-east5"}, VertexGeminiProvider),
        ("vertex_anthropic", {"project": "p", "location": "us-east5"}, VertexAnthropicProvider),
        ("openai", {"base_url": "https://api.example.com/v1", "api_key_env": "KEY"}, OpenAIProvider),
        ("mock", {}, MockProvider),
    ],
)
def test_it_builds_a_provider_for_each_wire_format(kind: str, options: dict, expected: type) -> None:
    provider = build_provider(ProviderConfig(name="upstream", type=kind, options=options))

    assert type(provider) is expected
    assert provider.config.options == options


def test_it_rejects_an_unknown_type_by_name() -> None:
    with pytest.raises(ValueError, match="provider upstream: unknown type 'bedrock'"):
        build_provider(ProviderConfig(name="upstream", type="bedrock"))


def test_a_vertex_provider_needs_a_project() -> None:
    with pytest.raises(ValueError, match="'project' is required"):
        build_provider(ProviderConfig(name="vertex", type="vertex_gemini", options={"location": "us-east5"}))
