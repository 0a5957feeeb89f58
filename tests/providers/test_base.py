import asyncio

import aiohttp
import pytest

from gateway.providers.base import (
    Provider,
    ProviderConfig,
    StreamDecoder,
    UpstreamError,
    UpstreamRequest,
    classify_status,
)


class SlowToPrepare(Provider):
    """A provider whose credentials take forever, as behind a stuck token endpoint."""

    async def prepare(self, *, body: dict, model: str, stream: bool) -> UpstreamRequest:
        await asyncio.sleep(10)
        raise AssertionError("the deadline should have passed")

    def stream_decoder(self, *, model: str) -> StreamDecoder:
        return StreamDecoder()


async def test_the_deadline_covers_preparing_the_request() -> None:
    provider = SlowToPrepare(ProviderConfig(name="slow", type="test"))

    async with aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamError) as plain:
            await provider.complete(session, body={}, model="m", timeout_s=0.05)
        with pytest.raises(UpstreamError) as streamed:
            await provider.stream(session, body={}, model="m", timeout_s=0.05)

    assert (plain.value.kind, streamed.value.kind) == ("timeout", "timeout")


@pytest.mark.parametrize(
    ("status", "kind", "retryable", "outcome"),
    [
        (401, "server", True, "401"),
        (403, "server", True, "403"),
        (404, "server", True, "404"),
        (400, "client", False, "400"),
        (422, "client", False, "422"),
        (408, "timeout", True, "timeout"),
    ],
)
def test_only_a_problem_with_the_request_itself_stops_the_chain(
    status: int, kind: str, retryable: bool, outcome: str
) -> None:
    error = classify_status(status, {}, "upstream said no")

    assert (error.kind, error.retryable, error.outcome) == (kind, retryable, outcome)
