"""Idempotency-Key on the proxy's POSTs, through the openai package on real PostgreSQL and Redis:
sent upstream and charged once, however many times and however concurrently it is sent."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
import pytest

from analytics.models import RequestLog
from tests.fakes.behaviours import Reply, Status
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing
from tests.gateway.test_embeddings import openai_embedding_routing

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

MESSAGES = [{"role": "user", "content": "Book the flight."}]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def client(start_gateway, make_tenant, fake) -> openai.OpenAI:
    gateway = start_gateway(openai_routing(fake.base_url))
    return gateway.client(make_tenant().secret)


def create(client: openai.OpenAI, key: str, content: str = "Book the flight.", **options):
    """The raw answer (headers and body) of a call with this Idempotency-Key, or its error."""
    try:
        return client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": content}], max_tokens=100,
            extra_headers={"Idempotency-Key": key}, **options)
    except openai.APIStatusError as error:
        return error


def test_the_same_key_sent_25_times_is_sent_upstream_and_charged_once(client, fake):
    fake.script(Reply(text="Booked: seat 14C.", delay_s=0.5))

    with ThreadPoolExecutor(max_workers=20) as pool:
        concurrent = list(pool.map(lambda _: create(client, "book-flight-1"), range(20)))
    after = [create(client, "book-flight-1") for _ in range(5)]

    answers = [raw.parse().model_dump() for raw in concurrent + after]
    assert fake.count == 1
    assert all(answer == answers[0] for answer in answers) and len(answers) == 25
    assert answers[0]["choices"][0]["message"]["content"] == "Booked: seat 14C."
    replays = [raw.headers.get("x-nemo-idempotent-replay") for raw in concurrent + after]
    assert sorted(replays, key=str) == [None] + ["true"] * 24
    rows = list(RequestLog.objects.all())
    assert len(rows) == 25
    charged = [row for row in rows if row.cost > 0]
    assert len(charged) == 1 and sum(row.cost for row in rows) == charged[0].cost


def test_a_stream_is_replayed_as_a_stream(client, fake):
    def stream(key: str) -> tuple[list[dict], str, str | None]:
        with client.chat.completions.with_streaming_response.create(
                model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"Idempotency-Key": key}) as response:
            chunks = [chunk.model_dump() for chunk in response.parse()]
            return chunks, response.headers["content-type"], response.headers.get("x-nemo-idempotent-replay")

    first, again = stream("stream-1"), stream("stream-1")

    assert fake.count == 1
    assert len(first[0]) > 2 and again[0] == first[0]
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in again[0] if c["choices"])
    assert first[1].startswith("text/event-stream") and again[1] == first[1]
    assert (first[2], again[2]) == (None, "true")


def test_the_same_key_with_another_body_is_a_422(client, fake):
    first = create(client, "key-1")
    other = create(client, "key-1", content="Cancel the flight.")

    assert first.parse().choices
    assert (other.status_code, other.body["code"], other.body["param"]) == (422, "idempotency_key_reused",
                                                                            "Idempotency-Key")
    assert fake.count == 1


def test_a_first_call_that_failed_is_not_kept_and_its_retry_runs(client, fake):
    fake.script(Status(500))

    failed = create(client, "retry-me")
    retried = create(client, "retry-me")

    assert failed.status_code == 502
    assert retried.parse().choices[0].message.content
    assert retried.headers.get("x-nemo-idempotent-replay") is None
    assert fake.count == 2


def test_keys_are_per_virtual_key(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    one, two = gateway.client(make_tenant("One").secret), gateway.client(make_tenant("Two").secret)

    create(one, "shared-name")
    theirs = create(two, "shared-name", content="Something else entirely.")

    assert theirs.parse().choices
    assert fake.count == 2


def test_embeddings_take_an_idempotency_key_too(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_embedding_routing(fake))
    client = gateway.client(make_tenant().secret)

    answers = [client.embeddings.with_raw_response.create(model="embedder", input=["a lead"], encoding_format="float",
                                                          extra_headers={"Idempotency-Key": "embed-1"})
               for _ in range(2)]

    assert fake.count == 1
    assert answers[0].parse().data[0].embedding == answers[1].parse().data[0].embedding
    assert answers[1].headers["x-nemo-idempotent-replay"] == "true"
    assert sum(row.cost for row in RequestLog.objects.all()) == RequestLog.objects.get(cost__gt=Decimal(0)).cost


def test_duplicates_sent_to_two_workers_wait_for_the_one_first_call(start_gateway, make_tenant, fake):
    routing = openai_routing(fake.base_url)
    workers = [start_gateway(routing), start_gateway(routing)]
    secret = make_tenant().secret
    clients = [worker.client(secret) for worker in workers]
    fake.script(Reply(text="Booked once.", delay_s=0.5))

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda n: create(clients[n % 2], "two-workers"), range(20)))

    assert fake.count == 1
    assert {raw.parse().choices[0].message.content for raw in answers} == {"Booked once."}


def test_the_responses_api_takes_an_idempotency_key_too(client, fake):
    answers = [client.responses.with_raw_response.create(model="gpt-4o", input="Book the flight.",
                                                         extra_headers={"Idempotency-Key": "responses-1"})
               for _ in range(2)]

    assert fake.count == 1
    assert answers[0].parse().id == answers[1].parse().id
    assert answers[1].headers["x-nemo-idempotent-replay"] == "true"


def test_an_answer_over_the_size_limit_is_not_kept_and_its_retry_runs(client, fake, monkeypatch):
    monkeypatch.setattr("gateway.idempotency.MAX_KEPT_BYTES", 64)

    answers = [create(client, "too-big") for _ in range(2)]

    assert [raw.headers.get("x-nemo-idempotent-replay") for raw in answers] == [None, None]
    assert fake.count == 2
