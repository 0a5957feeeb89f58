"""The recorder's PostgreSQL client: a server that stops answering breaks the connection."""

import asyncio

import psycopg
import pytest

from gateway import pgpipeline
from gateway.log_rows import connection_params
from gateway.pgpipeline import PipelinedPostgres

SLEEP = {b"sleep": "SELECT pg_sleep($1::float8)"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_batch_left_unanswered_breaks_its_connection_and_answered_ones_never_do(monkeypatch):
    monkeypatch.setattr(pgpipeline, "EXCHANGE_TIMEOUT_S", 0.4)

    async def exchange() -> None:
        postgres = await PipelinedPostgres.connect(connection_params(), SLEEP)
        try:
            # Batches answered in time, together far longer than the timeout: the one check of
            # the batch in flight moves on with each batch and never breaks a live connection.
            for _ in range(8):
                await postgres.execute([(b"sleep", [b"0.1"])])
            assert not postgres.closed
            with pytest.raises(psycopg.OperationalError, match="did not answer in 0.4 s"):
                await asyncio.wait_for(postgres.execute([(b"sleep", [b"3"])]), timeout=2)
            assert postgres.closed
        finally:
            await postgres.close()

    asyncio.run(exchange())
