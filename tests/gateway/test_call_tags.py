"""A call's tags (body ``tags``, ``X-Nemo-Tags``) and metadata land on its log row, whichever
client API served it, through the real ``openai`` and ``anthropic`` packages; a flood of them is
cut to the row's bounds."""

import anthropic
import openai
import pytest

from analytics.models import RequestLog
from analytics.records import MAX_TAG_LENGTH, MAX_TAGS

# The built-in mock serves every model; its deployments carry the tags the calls route by.
ROUTING = {
    "providers": {"builtin": {"type": "mock"}},
    "deployments": [{"id": "flash-mock", "provider": "builtin", "model": "gemini-2.5-flash", "tags": ["eu", "batch"]},
                    {"id": "claude-mock", "provider": "builtin", "model": "claude-sonnet-4", "tags": ["eu"]},
                    {"id": "embed-mock", "provider": "builtin", "model": "text-embedding-005", "tags": ["eu"]}],
    "models": {"gemini-2.5-flash": {"chain": ["flash-mock"]}, "claude-sonnet-4": {"chain": ["claude-mock"]},
               "text-embedding-005": {"chain": ["embed-mock"]}},
}
HELLO = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
def gateway(start_gateway):
    return start_gateway(ROUTING)


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def _row(response_headers) -> RequestLog:
    return RequestLog.objects.get(request_id=response_headers["x-nemo-request-id"])


def test_a_chat_calls_tags_header_and_metadata_are_on_its_row(gateway, tenant):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.secret, max_retries=0)

    raw = client.chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", messages=HELLO, metadata={"customer": "acme", "ticket": "1042"},
        extra_body={"tags": ["eu"]}, extra_headers={"X-Nemo-Tags": "batch, eu"})

    assert _row(raw.headers).tags == ["batch", "eu", "customer:acme", "ticket:1042"]


def test_a_responses_calls_metadata_is_on_its_row(gateway, tenant):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.secret, max_retries=0)

    raw = client.responses.with_raw_response.create(model="gemini-2.5-flash", input="Say hi",
                                                    metadata={"customer": "acme"},
                                                    extra_headers={"X-Nemo-Tags": "eu"})

    assert _row(raw.headers).tags == ["eu", "customer:acme"]


def test_a_messages_calls_user_id_and_tags_are_on_its_row(gateway, tenant):
    client = anthropic.Anthropic(base_url=gateway.url, api_key=tenant.secret, max_retries=0)

    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4", max_tokens=50, messages=HELLO, metadata={"user_id": "user_42"},
        extra_body={"tags": "eu"})

    assert _row(raw.headers).tags == ["eu", "user_id:user_42"]


def test_an_embeddings_calls_tags_are_on_its_row(gateway, tenant):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.secret, max_retries=0)

    raw = client.embeddings.with_raw_response.create(model="text-embedding-005", input="hi",
                                                     extra_headers={"X-Nemo-Tags": "eu"})

    assert _row(raw.headers).tags == ["eu"]


def test_a_call_without_tags_or_metadata_has_none(gateway, tenant):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.secret, max_retries=0)

    raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=HELLO)

    assert _row(raw.headers).tags is None


def test_a_flood_of_tags_is_cut_to_the_rows_bounds_and_the_refused_call_still_logged(gateway, tenant):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.secret, max_retries=0)
    flood = [f"tag-{number:03d}-" + "x" * 500 for number in range(100)]

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gemini-2.5-flash", messages=HELLO, extra_body={"tags": flood})

    tags = _row(refused.value.response.headers).tags
    assert len(tags) == MAX_TAGS and tags[0] == flood[0][:MAX_TAG_LENGTH]
    assert all(len(tag) == MAX_TAG_LENGTH for tag in tags)
