"""The output cap of a call that names none reaches each upstream in its wire format's own field,
and a limit the client named is never overridden."""

import orjson
import pytest

from gateway.providers.base import ProviderConfig
from gateway.providers.openai import OpenAIProvider
from gateway.providers.vertex_anthropic import translate_request as to_claude
from gateway.providers.vertex_gemini import translate_request as to_gemini

ASKED = {"messages": [{"role": "user", "content": "hello"}]}
NAMED = {**ASKED, "max_tokens": 50}


def test_gemini_gets_the_cap_as_max_output_tokens():
    assert to_gemini(ASKED, output_cap=1234, model="gemini-2.5-flash")["generationConfig"]["maxOutputTokens"] == 1234
    assert to_gemini(NAMED, output_cap=None, model="gemini-2.5-flash")["generationConfig"]["maxOutputTokens"] == 50


def test_claude_gets_the_cap_as_max_tokens():
    assert to_claude(ASKED, output_cap=1234, model="claude-sonnet-4")["max_tokens"] == 1234
    assert to_claude(NAMED, output_cap=None, model="claude-sonnet-4")["max_tokens"] == 50


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
async def test_an_openai_compatible_server_gets_the_cap_in_the_field_its_routing_names(field, monkeypatch):
    options = {"base_url": "http://upstream.invalid/v1"} | ({} if field == "max_completion_tokens" else
                                                          {"max_tokens_field": field})
    provider = OpenAIProvider(ProviderConfig(name="up", type="openai", options=options))

    capped = orjson.loads((await provider.prepare(body=ASKED, model="m", stream=False, output_cap=1234)).body)
    named = orjson.loads((await provider.prepare(body=NAMED, model="m", stream=False, output_cap=None)).body)

    assert (capped[field], named["max_tokens"]) == (1234, 50)
    assert field == "max_tokens" or "max_tokens" not in capped
