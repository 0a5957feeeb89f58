"""The outage tests run real gateways, as the gateway tests do: their fixtures are shared."""

from tests.gateway.conftest import (  # noqa: F401 - fixtures
    make_tenant,
    redis_prefix,
    start_gateway,
    start_gateway_process,
)
