import asyncio
from pathlib import Path

import pytest

from gateway.providers.base import UpstreamError
from gateway.providers.google_auth import AccessTokenSource, token_source
from tests.fakes import FakeTokenServer, Status, write_service_account


async def test_it_gets_a_token_from_the_token_uri_named_in_the_file(
    token_server: FakeTokenServer, service_account: str
) -> None:
    token = await AccessTokenSource(service_account).token()

    assert token == "fake-token-1"
    (request,) = token_server.requests
    assert request.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert request.form["assertion"].count(".") == 2


async def test_it_reuses_a_token_that_is_far_from_expiry(token_server: FakeTokenServer, service_account: str) -> None:
    token_server.expires_in = 6 * 60
    source = AccessTokenSource(service_account)

    tokens = [await source.token(), await source.token()]

    assert tokens == ["fake-token-1", "fake-token-1"]
    assert token_server.count == 1


async def test_it_refreshes_a_token_within_five_minutes_of_expiry(
    token_server: FakeTokenServer, service_account: str
) -> None:
    token_server.expires_in = 4 * 60
    source = AccessTokenSource(service_account)

    tokens = [await source.token(), await source.token()]

    assert tokens == ["fake-token-1", "fake-token-2"]
    assert token_server.count == 2


async def test_concurrent_callers_share_one_refresh(token_server: FakeTokenServer, service_account: str) -> None:
    source = AccessTokenSource(service_account)

    tokens = await asyncio.gather(*(source.token() for _ in range(10)))

    assert set(tokens) == {"fake-token-1"}
    assert token_server.count == 1


def test_providers_using_one_file_share_one_source(service_account: str) -> None:
    assert token_source(service_account) is token_source(service_account)


async def test_a_refused_grant_is_an_upstream_error(token_server: FakeTokenServer, service_account: str) -> None:
    token_server.script(Status(400, message="Invalid JWT signature"))

    with pytest.raises(UpstreamError) as raised:
        await AccessTokenSource(service_account).token()

    assert raised.value.kind == "server"
    assert "Invalid JWT signature" in raised.value.message


async def test_an_unreachable_token_endpoint_is_a_connection_error(tmp_path: Path) -> None:
    path = write_service_account(tmp_path, token_uri="http://127.0.0.1:9/token")

    with pytest.raises(UpstreamError) as raised:
        await AccessTokenSource(str(path)).token()

    assert raised.value.kind == "connect"


async def test_a_missing_credentials_file_is_an_upstream_error(tmp_path: Path) -> None:
    with pytest.raises(UpstreamError) as raised:
        await AccessTokenSource(str(tmp_path / "absent.json")).token()

    assert raised.value.kind == "server"
