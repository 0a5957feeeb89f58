"""The group-committed request log: every row of a burst lands whole, whatever the batch size."""

import asyncio
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.models import RequestLog
from gateway.logwriter import LogWriter


def row(tenant, n: int) -> dict:
    return {
        "request_id": f"req_burst_{n}",
        "created": timezone.now(),
        "org_id": tenant.org.pk,
        "team_id": None,
        "key_id": tenant.key.pk,
        "key_prefix": tenant.key.prefix,
        "run_id": "burst",
        "model": "gpt-4o",
        "deployment": "primary",
        "provider": "first",
        "status": 200,
        "attempts": [{"deployment": "primary", "outcome": "ok", "latency_ms": n}],
        "prompt_tokens": n,
        "completion_tokens": 2 * n,
        "cost": Decimal("0.000123") * n,
        "tool_calls": [{"name": "search", "arguments": f'{{"page": {n}}}'}],
        "prompt_meta": {"messages": 1, "roles": ["user"], "sizes": [n]},
        "request_body": None,
    }


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_rows_is_committed_whole(make_tenant):
    tenant = make_tenant()

    async def burst() -> None:
        writer = LogWriter()
        # One row alone, then a burst that lands in multi-row batches.
        await writer.write(row(tenant, 0))
        await asyncio.gather(*(writer.write(row(tenant, n)) for n in range(1, 40)))
        await writer.close()

    asyncio.run(burst())
    rows = {r.request_id: r for r in RequestLog.objects.filter(run_id="burst")}

    assert len(rows) == 40
    seventh = rows["req_burst_7"]
    assert seventh.cost == Decimal("0.000861")
    assert seventh.attempts == [{"deployment": "primary", "outcome": "ok", "latency_ms": 7}]
    assert seventh.tool_calls == [{"name": "search", "arguments": '{"page": 7}'}]
    assert (seventh.completion_tokens, seventh.request_body, seventh.cache) == (14, None, "skip")
    assert seventh.inserted is not None
