"""The routing configuration: providers, deployments and the model names clients send.

Read once per worker from ``NEMO_ROUTER_CONFIG`` (YAML, see CONTRACT.md) or, when unset, the
shipped catalog with every model served by the built-in mock provider. Prices come from the
catalog unless a deployment overrides them. A deployment of an embedding model (capability
``embeddings``: the catalog's embedding models have it; any other model can be given it with
``capabilities: [embeddings]``) serves ``POST /v1/embeddings`` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

from gateway.providers import PROVIDER_TYPES, build_provider
from gateway.providers.base import Provider, ProviderConfig

ROUTING_MODES = ("ordered", "latency")
DEFAULT_TIMEOUT_S = 60.0


class ConfigError(ValueError):
    """The routing file is wrong; the message says where."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    # Prompt tokens written to the upstream's prompt cache (Claude's cache_creation_input_tokens);
    # None: at the input price.
    cache_write: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    provider_name: str
    provider: Provider = field(repr=False, compare=False)
    model: str
    timeout_s: float
    tags: frozenset[str]
    price: Price
    max_output_tokens: int
    capabilities: frozenset[str]
    # The most prompt tokens the model takes (None: not known): no prompt costs more than that.
    context_window: int | None = None

    @property
    def supports_tools(self) -> bool:
        return "tools" in self.capabilities

    @property
    def embeds(self) -> bool:
        """An embedding model's deployment: it serves embeddings, and nothing else."""
        return "embeddings" in self.capabilities


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str
    chain: tuple[Deployment, ...]
    routing: str

    @property
    def max_output_tokens(self) -> int:
        return max(d.max_output_tokens for d in self.chain)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    models: dict[str, ModelRoute]
    deployments: dict[str, Deployment]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    price: Price
    max_output_tokens: int
    capabilities: frozenset[str]
    context_window: int | None = None


def catalog_lookup(catalog: dict[str, CatalogEntry], model: str) -> CatalogEntry | None:
    """Provider model ids may carry a version (``claude-3-7-sonnet@20250219``)."""
    return catalog.get(model) or catalog.get(model.split("@", 1)[0])


def _decimal(value, where: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ConfigError(f"{where}: {value!r} is not a number") from exc
    if number < 0:
        raise ConfigError(f"{where}: a price cannot be negative")
    return number


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping")
    return value


def build_config(raw: dict, catalog: dict[str, CatalogEntry]) -> RoutingConfig:
    raw = _mapping(raw, "the routing file")
    providers: dict[str, Provider] = {}
    for name, options in _mapping(raw.get("providers") or {}, "providers").items():
        options = dict(_mapping(options, f"providers.{name}"))
        kind = options.pop("type", None)
        if kind not in PROVIDER_TYPES:
            raise ConfigError(f"providers.{name}.type must be one of {', '.join(PROVIDER_TYPES)}, not {kind!r}")
        providers[name] = build_provider(ProviderConfig(name=name, type=kind, options=options))

    deployments: dict[str, Deployment] = {}
    raw_deployments = raw.get("deployments") or []
    if not isinstance(raw_deployments, list):
        raise ConfigError("deployments must be a list")
    for index, item in enumerate(raw_deployments):
        where = f"deployments[{index}]"
        item = _mapping(item, where)
        dep_id, provider_name, model = item.get("id"), item.get("provider"), item.get("model")
        if not dep_id or not model:
            raise ConfigError(f"{where} needs an id and a model")
        if dep_id in deployments:
            raise ConfigError(f"{where}: deployment id {dep_id!r} is used twice")
        if provider_name not in providers:
            raise ConfigError(f"{where}: unknown provider {provider_name!r}")
        entry = catalog_lookup(catalog, model)
        override = item.get("price")
        if override is not None:
            override = _mapping(override, f"{where}.price")
            price = Price(
                input=_decimal(override.get("input", 0), f"{where}.price.input"),
                cached_input=_decimal(override.get("cached_input", override.get("input", 0)),
                                      f"{where}.price.cached_input"),
                output=_decimal(override.get("output", 0), f"{where}.price.output"),
                cache_write=(_decimal(override["cache_write"], f"{where}.price.cache_write")
                             if override.get("cache_write") is not None else None),
            )
        elif entry is not None:
            price = entry.price
        else:
            raise ConfigError(f"{where}: model {model!r} is not in the catalog; give it a price")
        try:
            timeout_s = float(item.get("timeout_s", DEFAULT_TIMEOUT_S))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.timeout_s must be a number of seconds") from exc
        if timeout_s <= 0:
            raise ConfigError(f"{where}.timeout_s must be positive")
        capabilities = item.get("capabilities")
        deployments[dep_id] = Deployment(
            id=dep_id,
            provider_name=provider_name,
            provider=providers[provider_name],
            model=model,
            timeout_s=timeout_s,
            tags=frozenset(item.get("tags") or ()),
            price=price,
            max_output_tokens=int(item.get("max_output_tokens") or (entry.max_output_tokens if entry else 8192)),
            capabilities=frozenset(capabilities) if capabilities is not None else (
                entry.capabilities if entry else frozenset({"tools", "streaming"})
            ),
            context_window=int(item["context_window"]) if item.get("context_window") else (
                entry.context_window if entry else None),
        )

    models: dict[str, ModelRoute] = {}
    for name, item in _mapping(raw.get("models") or {}, "models").items():
        item = _mapping(item, f"models.{name}")
        chain = item.get("chain") or []
        if not isinstance(chain, list) or not chain:
            raise ConfigError(f"models.{name}.chain must list at least one deployment")
        unknown = [d for d in chain if d not in deployments]
        if unknown:
            raise ConfigError(f"models.{name}.chain names unknown deployments: {', '.join(map(str, unknown))}")
        routing = item.get("routing", "ordered")
        if routing not in ROUTING_MODES:
            raise ConfigError(f"models.{name}.routing must be one of {', '.join(ROUTING_MODES)}")
        models[name] = ModelRoute(name=name, chain=tuple(deployments[d] for d in chain), routing=routing)
    return RoutingConfig(models=models, deployments=deployments)


def default_raw_config(catalog: dict[str, CatalogEntry]) -> dict:
    """Every catalog model, served by the built-in mock provider."""
    return {
        "providers": {"mock": {"type": "mock"}},
        "deployments": [{"id": f"{name}-mock", "provider": "mock", "model": name} for name in catalog],
        "models": {name: {"chain": [f"{name}-mock"]} for name in catalog},
    }


def load_catalog() -> dict[str, CatalogEntry]:
    """Reads the catalog from the database (synchronous: call it off the event loop)."""
    from billing.models import CatalogModel

    return {
        row.name: CatalogEntry(
            name=row.name,
            price=Price(input=row.input_price, cached_input=row.cached_input_price, output=row.output_price,
                        cache_write=row.cache_write_price),
            max_output_tokens=row.max_output_tokens,
            capabilities=frozenset(row.capabilities),
            context_window=row.context_window,
        )
        for row in CatalogModel.objects.all()
    }


def load_config(path: str | None) -> RoutingConfig:
    """The worker's routing config (synchronous: call it off the event loop)."""
    catalog = load_catalog()
    if not path:
        return build_config(default_raw_config(catalog), catalog)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the routing file {path}: {exc}") from exc
    return build_config(raw or {}, catalog)
