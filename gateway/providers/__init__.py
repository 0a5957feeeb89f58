"""Upstream providers, one module per wire format; the rest of the gateway only sees OpenAI shapes."""

from __future__ import annotations

from gateway.providers.base import Provider, ProviderConfig
from gateway.providers.mock import MockProvider
from gateway.providers.openai import OpenAIProvider
from gateway.providers.vertex_anthropic import VertexAnthropicProvider
from gateway.providers.vertex_gemini import VertexGeminiProvider

PROVIDER_TYPES: dict[str, type[Provider]] = {
    "vertex_gemini": VertexGeminiProvider,
    "vertex_anthropic": VertexAnthropicProvider,
    "openai": OpenAIProvider,
    "mock": MockProvider,
}


def build_provider(config: ProviderConfig) -> Provider:
    provider_type = PROVIDER_TYPES.get(config.type)
    if provider_type is None:
        known = ", ".join(PROVIDER_TYPES)
        raise ValueError(f"provider {config.name}: unknown type {config.type!r} (known: {known})")
    return provider_type(config)
