from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.providers import build_provider
from gateway.providers.base import Provider, ProviderConfig
from tests.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeTokenServer, write_service_account

OPENAI_KEY_ENV = "NEMO_TEST_UPSTREAM_KEY"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def token_server() -> AsyncIterator[FakeTokenServer]:
    async with FakeTokenServer() as server:
        yield server


@pytest.fixture
def service_account(tmp_path: Path, token_server: FakeTokenServer) -> str:
    return str(write_service_account(tmp_path, token_uri=token_server.token_uri))


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def fake_gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(require_thought_signatures=True) as fake:
        yield fake


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def openai_provider(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Provider:
    monkeypatch.setenv(OPENAI_KEY_ENV, "sk-upstream-test")
    options = fake_openai.provider_options(api_key_env=OPENAI_KEY_ENV)
    return build_provider(ProviderConfig(name="backup", type="openai", options=options))


@pytest.fixture
def gemini_provider(fake_gemini: FakeGemini, service_account: str) -> Provider:
    options = fake_gemini.provider_options(credentials=service_account)
    return build_provider(ProviderConfig(name="vertex", type="vertex_gemini", options=options))


@pytest.fixture
def anthropic_provider(fake_anthropic: FakeAnthropic, service_account: str) -> Provider:
    options = fake_anthropic.provider_options(credentials=service_account)
    return build_provider(ProviderConfig(name="claude", type="vertex_anthropic", options=options))
