"""The response cache: identical requests within an org are answered once; never across orgs."""

import pytest

from analytics.models import RequestLog
from keys.audit import Actor
from keys.services import organization_settings_update
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing

QUESTION = [{"role": "user", "content": "What is the capital of Portugal?"}]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture
def gateway(start_gateway, fake):
    return start_gateway(openai_routing(fake.base_url))


def caching_tenant(make_tenant, name="Cachers"):
    tenant = make_tenant(name)
    organization_settings_update(org=tenant.org, cache_enabled=True, actor=Actor.system("test"))
    return tenant


def ask(gateway, tenant, **options):
    return gateway.client(tenant.secret).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=QUESTION, max_tokens=30, **options)


def test_a_repeated_request_is_a_free_hit(gateway, make_tenant, fake):
    tenant = caching_tenant(make_tenant)
    first, second = ask(gateway, tenant), ask(gateway, tenant)

    assert (first.headers["x-nemo-cache"], second.headers["x-nemo-cache"]) == ("miss", "hit")
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.headers["x-nemo-cost"] == "0.000000"
    assert fake.count == 1
    rows = list(RequestLog.objects.order_by("id"))
    assert [(r.cache, r.cost > 0) for r in rows] == [("miss", True), ("hit", False)]


def test_a_request_can_opt_out_of_the_cache(gateway, make_tenant, fake):
    tenant = caching_tenant(make_tenant)
    ask(gateway, tenant)
    skipped = ask(gateway, tenant, extra_body={"nemo_cache": False})

    assert skipped.headers["x-nemo-cache"] == "skip"
    assert fake.count == 2


def test_an_org_without_the_cache_default_skips_it_unless_asked(gateway, make_tenant, fake):
    tenant = make_tenant()
    plain = ask(gateway, tenant)
    ask(gateway, tenant, extra_body={"nemo_cache": True})
    opted_in = ask(gateway, tenant, extra_body={"nemo_cache": True})

    assert plain.headers["x-nemo-cache"] == "skip"
    assert opted_in.headers["x-nemo-cache"] == "hit"
    assert fake.count == 2


def test_a_cached_answer_never_crosses_orgs(gateway, make_tenant, fake):
    first_org, second_org = caching_tenant(make_tenant, "First"), caching_tenant(make_tenant, "Second")
    ask(gateway, first_org)
    other = ask(gateway, second_org)

    assert other.headers["x-nemo-cache"] == "miss"
    assert fake.count == 2


def test_a_different_request_misses(gateway, make_tenant, fake):
    tenant = caching_tenant(make_tenant)
    ask(gateway, tenant)
    warmer = ask(gateway, tenant, temperature=1.5)

    assert warmer.headers["x-nemo-cache"] == "miss"


def test_a_streamed_request_is_served_from_the_cache_as_a_stream(gateway, make_tenant, fake):
    tenant = caching_tenant(make_tenant)
    first = ask(gateway, tenant, stream=True)
    first_text = "".join(c.choices[0].delta.content or "" for c in first.parse() if c.choices)
    again = ask(gateway, tenant, stream=True, stream_options={"include_usage": True})
    chunks = list(again.parse())

    assert again.headers["x-nemo-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first_text
    assert chunks[-1].usage.completion_tokens > 0
    assert fake.count == 1
