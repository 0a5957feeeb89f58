"""The routing file: what it maps, and a clear message when it is wrong."""

from decimal import Decimal

import pytest

from gateway.config import CatalogEntry, ConfigError, Price, build_config, default_raw_config

CATALOG = {
    "gemini-2.5-flash": CatalogEntry("gemini-2.5-flash", Price(Decimal("0.30"), Decimal("0.03"), Decimal("2.50")),
                                     65536, frozenset({"tools", "streaming"})),
    "claude-3-7-sonnet": CatalogEntry("claude-3-7-sonnet", Price(Decimal("3"), Decimal("0.3"), Decimal("15")),
                                      64000, frozenset({"tools", "streaming"})),
}


def routing(**overrides) -> dict:
    raw = {
        "providers": {"vertex": {"type": "vertex_gemini", "project": "p", "location": "us-central1"},
                      "claude": {"type": "vertex_anthropic", "project": "p", "location": "us-east5"}},
        "deployments": [
            {"id": "flash-vertex", "provider": "vertex", "model": "gemini-2.5-flash", "timeout_s": 30,
             "tags": ["function-calling"]},
            {"id": "sonnet", "provider": "claude", "model": "claude-3-7-sonnet@20250219"},
        ],
        "models": {"gemini-2.5-flash": {"chain": ["flash-vertex", "sonnet"], "routing": "ordered"}},
    }
    raw.update(overrides)
    return raw


def test_it_maps_client_model_names_to_ordered_chains():
    config = build_config(routing(), CATALOG)
    route = config.models["gemini-2.5-flash"]

    assert [d.id for d in route.chain] == ["flash-vertex", "sonnet"]
    assert route.chain[0].tags == frozenset({"function-calling"}) and route.chain[0].timeout_s == 30
    assert route.max_output_tokens == 65536


def test_a_versioned_provider_model_takes_its_catalog_price():
    assert build_config(routing(), CATALOG).deployments["sonnet"].price.output == Decimal("15")


def test_a_deployment_may_override_its_price():
    raw = routing()
    raw["deployments"][0]["price"] = {"input": "1", "output": "2"}
    price = build_config(raw, CATALOG).deployments["flash-vertex"].price

    assert (price.input, price.cached_input, price.output) == (Decimal("1"), Decimal("1"), Decimal("2"))


def test_a_deployment_may_price_its_cache_writes():
    raw = routing()
    raw["deployments"][0]["price"] = {"input": "1", "output": "2", "cache_write": "1.25"}
    assert build_config(raw, CATALOG).deployments["flash-vertex"].price.cache_write == Decimal("1.25")
    raw["deployments"][0]["price"] = {"input": "1", "output": "2"}
    assert build_config(raw, CATALOG).deployments["flash-vertex"].price.cache_write is None


def test_the_default_serves_every_catalog_model_with_the_mock():
    config = build_config(default_raw_config(CATALOG), CATALOG)

    assert sorted(config.models) == sorted(CATALOG)
    assert {d.provider.config.type for d in config.deployments.values()} == {"mock"}


@pytest.mark.parametrize("change, message", [
    ({"providers": {"vertex": {"type": "bedrock"}}}, "providers.vertex.type"),
    ({"deployments": [{"id": "x", "provider": "nowhere", "model": "gemini-2.5-flash"}]}, "unknown provider"),
    ({"deployments": [{"id": "x", "provider": "vertex", "model": "mystery-model"}]}, "not in the catalog"),
    ({"models": {"m": {"chain": ["ghost"]}}}, "unknown deployments: ghost"),
    ({"models": {"m": {"chain": []}}}, "at least one deployment"),
    ({"models": {"gemini-2.5-flash": {"chain": ["sonnet"], "routing": "random"}}}, "routing must be one of"),
    ({"deployments": "flash"}, "deployments must be a list"),
])
def test_a_wrong_routing_file_names_what_is_wrong(change, message):
    with pytest.raises(ConfigError, match=message):
        build_config(routing(**change), CATALOG)


def test_a_negative_timeout_is_refused():
    raw = routing()
    raw["deployments"][0]["timeout_s"] = -1

    with pytest.raises(ConfigError, match="timeout_s must be positive"):
        build_config(raw, CATALOG)


def test_a_catalog_price_change_reaches_a_running_gateway(start_gateway, make_tenant, monkeypatch, admin_client):
    import time

    from billing.models import CatalogModel
    from tests.fakes.openai import FakeOpenAI
    from tests.gateway.conftest import openai_routing

    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as fake:
        gateway = start_gateway(openai_routing(fake.base_url))
        client = gateway.client(make_tenant().secret)
        entry = CatalogModel.objects.get(name="gpt-4o")
        admin_client.post(f"/admin/billing/catalogmodel/{entry.pk}/change/", {
            "name": entry.name, "vendor": entry.vendor, "input_price": "250", "cached_input_price": "125",
            "output_price": "1000", "context_window": entry.context_window,
            "max_output_tokens": entry.max_output_tokens, "capabilities": '["tools", "streaming"]',
        })
        deadline = time.monotonic() + 5
        while gateway.app._state.config.deployments["gpt4o-primary"].price.output != Decimal("1000"):
            assert time.monotonic() < deadline, "the gateway kept the old price"
            time.sleep(0.05)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        usage = raw.parse().usage

    expected = (Decimal(usage.prompt_tokens) * 250 + Decimal(usage.completion_tokens) * 1000) / 1_000_000
    assert Decimal(raw.headers["x-nemo-cost"]) == expected.quantize(Decimal("0.000001"))
