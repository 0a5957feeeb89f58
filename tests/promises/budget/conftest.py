"""The budget tests run real gateways, as the gateway tests do: their fixtures are shared."""

from tests.gateway.conftest import make_tenant, redis_prefix, start_gateway  # noqa: F401 - fixtures
