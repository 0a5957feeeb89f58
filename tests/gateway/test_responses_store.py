"""Stored responses are written as group commits: the responses answered while one batch is
written go in the next, a failed write does not leave its readers waiting, and what a worker
has still to write is waited for by its reads."""

import asyncio
from types import SimpleNamespace

import pytest

from analytics.models import StoredResponse
from gateway import responses_store
from gateway.responses_store import StoredResponses

pytestmark = pytest.mark.django_db(transaction=True)


def request_of(org_id: int, text: str):
    return SimpleNamespace(store=True, org_id=org_id, history=[], input_items=[{"role": "user", "content": text}],
                           conversation=[{"role": "user", "content": text}])


def response(number: int) -> dict:
    return {"id": f"resp_{number:04d}", "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": f"answer {number}"}]}]}


def counting_upserts(monkeypatch, *, fail_first: bool = False) -> list[int]:
    sizes: list[int] = []
    upsert = responses_store._upsert

    async def counted(responses):
        sizes.append(len(responses))
        if fail_first and len(sizes) == 1:
            raise RuntimeError("the database refused the batch")
        await upsert(responses)

    monkeypatch.setattr(responses_store, "_upsert", counted)
    return sizes


def test_responses_answered_together_are_written_in_few_upserts_and_all_land(org, monkeypatch):
    sizes = counting_upserts(monkeypatch)

    async def main():
        writes = StoredResponses()
        for number in range(60):
            writes.remember(request_of(org.id, f"q{number}"), response(number))
            if number % 7 == 0:
                await asyncio.sleep(0)
        await writes.settled(org.id, "resp_0059")
        await writes.close()

    asyncio.run(main())
    assert sum(sizes) == 60
    assert len(sizes) < 60 / 2
    stored = StoredResponse.objects.filter(org=org)
    assert stored.count() == 60
    assert stored.get(response_id="resp_0042").conversation[-1] == {"role": "assistant", "content": "answer 42"}


def test_a_failed_write_leaves_no_reader_waiting_and_the_next_writes_land(org, monkeypatch):
    sizes = counting_upserts(monkeypatch, fail_first=True)

    async def main():
        writes = StoredResponses()
        writes.remember(request_of(org.id, "lost"), response(1))
        await asyncio.wait_for(writes.settled(org.id, "resp_0001"), timeout=30)
        writes.remember(request_of(org.id, "kept"), response(2))
        await asyncio.wait_for(writes.settled(org.id, "resp_0002"), timeout=30)

    asyncio.run(main())
    assert len(sizes) == 2
    assert list(StoredResponse.objects.filter(org=org).values_list("response_id", flat=True)) == ["resp_0002"]


def test_a_response_written_twice_keeps_its_last_version(org):
    async def main():
        writes = StoredResponses()
        writes.remember(request_of(org.id, "first"), response(3))
        changed = {**response(3), "status": "incomplete"}
        writes.remember(request_of(org.id, "again"), changed)
        await writes.close()

    asyncio.run(main())
    assert StoredResponse.objects.get(org=org, response_id="resp_0003").response["status"] == "incomplete"


def test_a_request_that_says_store_false_is_not_written(org):
    async def main():
        writes = StoredResponses()
        writes.remember(SimpleNamespace(**{**vars(request_of(org.id, "x")), "store": False}), response(4))
        await writes.close()

    asyncio.run(main())
    assert not StoredResponse.objects.filter(org=org).exists()
