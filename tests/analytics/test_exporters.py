"""Each exporter against a fake of its service that checks the real payload format."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import boto3
import pytest
from moto.server import ThreadedMotoServer

from analytics.exporters.langfuse import trace_id_of
from analytics.models import ExportSink
from analytics.services import sink_create, sink_export_batch
from tests.analytics.factories import make_log
from tests.analytics.fakes import FakeDatadog, FakeLangfuse

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_lag", "private_sinks")]

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def langfuse():
    with FakeLangfuse() as fake:
        yield fake


@pytest.fixture
def datadog():
    with FakeDatadog() as fake:
        yield fake


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(url):
    return boto3.client("s3", endpoint_url=url, region_name="eu-west-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def langfuse_sink(org, fake, system_actor) -> ExportSink:
    return sink_create(org=org, type="langfuse", actor=system_actor,
                       config={"url": fake.url, "public_key": fake.public_key, "secret_key": fake.secret_key})


def datadog_sink(org, fake, system_actor) -> ExportSink:
    return sink_create(org=org, type="datadog", actor=system_actor, config={"url": fake.url, "api_key": fake.api_key})


def test_langfuse_gets_a_run_as_one_trace_with_a_generation_per_call(org, key, langfuse, system_actor):
    first = make_log(org, key, run_id="run-1", created=NOON, request_body={"messages": [{"role": "user",
                                                                                          "content": "hi"}]},
                     response_body={"choices": [{"message": {"role": "assistant", "content": "hello"}}]})
    second = make_log(org, key, run_id="run-1", created=NOON + timedelta(seconds=2), status=502,
                      error="every link failed", attempts=[{"deployment": "a", "outcome": "timeout", "latency_ms": 1},
                                                           {"deployment": "b", "outcome": "5xx", "latency_ms": 1}])
    alone = make_log(org, key, created=NOON + timedelta(seconds=3), cached_tokens=100, cost=Decimal("0.001250"))
    sink = langfuse_sink(org, langfuse, system_actor)

    sent = sink_export_batch(sink)

    assert langfuse.problems == []
    assert sent == 3
    assert set(langfuse.traces) == {trace_id_of(first), trace_id_of(alone)}
    assert trace_id_of(first) == trace_id_of(second)
    assert langfuse.traces[trace_id_of(first)]["name"] == "run-1"
    by_request = {generation["metadata"]["request_id"]: generation for generation in langfuse.generations}
    assert by_request[first.request_id]["input"] == [{"role": "user", "content": "hi"}]
    assert by_request[first.request_id]["output"] == {"role": "assistant", "content": "hello"}
    assert by_request[first.request_id]["traceId"] == trace_id_of(first)
    assert (by_request[second.request_id]["level"], by_request[second.request_id]["statusMessage"]) == (
        "ERROR", "every link failed")
    assert by_request[second.request_id]["metadata"]["attempts"][0]["outcome"] == "timeout"
    assert by_request[alone.request_id]["usageDetails"] == {
        "input": 20, "input_cached_tokens": 100, "output": 30, "total": 150}
    assert by_request[alone.request_id]["costDetails"] == {"total": 0.00125}
    assert by_request[alone.request_id]["endTime"] == "2026-03-10T12:00:03.200000Z"


def test_the_same_run_is_the_same_trace_in_every_batch_but_not_in_another_org(org, key, other_org, other_key):
    assert trace_id_of(make_log(org, key, run_id="r")) == trace_id_of(make_log(org, key, run_id="r"))
    assert trace_id_of(make_log(org, key, run_id="r")) != trace_id_of(make_log(other_org, other_key, run_id="r"))


def test_a_langfuse_event_rejected_in_a_207_fails_the_batch_and_its_retry_sends_each_call_once(
    org, key, langfuse, system_actor
):
    rows = [make_log(org, key, run_id="run-2") for _ in range(4)]
    langfuse.reject_next = {rows[2].request_id}
    sink = langfuse_sink(org, langfuse, system_actor)

    first_try = sink_export_batch(sink)
    sink.refresh_from_db()
    failures, error, cursor = sink.consecutive_failures, sink.last_error, sink.last_exported_id
    second_try = sink_export_batch(sink)

    assert (first_try, failures, cursor) == (0, 1, 0)
    assert "rejected 1 of 5 events" in error
    assert second_try == 4
    assert langfuse.generations_by_request() == {row.request_id: 1 for row in rows}
    assert langfuse.problems == []


def test_datadog_gets_one_log_entry_per_call_with_the_api_key(org, key, datadog, system_actor):
    ok = make_log(org, key, created=NOON, cost=Decimal("0.002"))
    failed = make_log(org, key, created=NOON, status=502)
    sink = datadog_sink(org, datadog, system_actor)

    sent = sink_export_batch(sink)

    assert datadog.problems == []
    assert sent == 2
    by_request = {entry["nemo"]["request_id"]: entry for entry in datadog.entries}
    assert by_request[ok.request_id]["ddsource"] == "nemo-router"
    assert by_request[ok.request_id]["status"] == "info"
    assert by_request[failed.request_id]["status"] == "error"
    assert by_request[failed.request_id]["http"] == {"status_code": 502}
    assert by_request[ok.request_id]["nemo"]["cost"] == "0.002000"
    assert f"org:{org.slug}" in by_request[ok.request_id]["ddtags"].split(",")
    assert by_request[ok.request_id]["timestamp"] == int(NOON.timestamp() * 1000)


def test_a_wrong_datadog_key_fails_the_batch_and_keeps_the_cursor(org, key, datadog, system_actor):
    make_log(org, key)
    sink = sink_create(org=org, type="datadog", actor=system_actor, config={"url": datadog.url, "api_key": "nope"})

    sink_export_batch(sink)
    sink.refresh_from_db()

    assert (sink.last_exported_id, sink.consecutive_failures) == (0, 1)
    assert "Datadog answered 401" in sink.last_error


def test_s3_gets_one_json_lines_object_per_batch(org, key, moto_url, system_actor):
    s3_client(moto_url).create_bucket(Bucket="trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    rows = [make_log(org, key, created=NOON, request_body={"messages": []}) for _ in range(3)]
    sink = sink_create(org=org, type="s3", actor=system_actor, config={
        "url": moto_url, "bucket": "trail", "prefix": "nemo/logs/", "region": "eu-west-1",
        "access_key_id": "testing", "secret_access_key": "testing"})

    sink_export_batch(sink)

    key_name = f"nemo/logs/2026/03/10/{rows[0].pk}-{rows[-1].pk}.jsonl"
    listed = s3_client(moto_url).list_objects_v2(Bucket="trail")["Contents"]
    body = s3_client(moto_url).get_object(Bucket="trail", Key=key_name)["Body"].read().decode()
    lines = [json.loads(line) for line in body.splitlines()]
    assert [item["Key"] for item in listed] == [key_name]
    assert [line["request_id"] for line in lines] == [row.request_id for row in rows]
    assert lines[0]["request_body"] == {"messages": []}
    assert lines[0]["cost"] == "0.000150"


def test_a_retried_s3_batch_overwrites_its_own_object_even_when_more_rows_came_meanwhile(
    org, key, moto_url, system_actor
):
    first = [make_log(org, key, created=NOON) for _ in range(2)]
    sink = sink_create(org=org, type="s3", actor=system_actor, config={
        "url": moto_url, "bucket": "late-bucket", "region": "eu-west-1",
        "access_key_id": "testing", "secret_access_key": "testing"})
    sink_export_batch(sink)
    later = [make_log(org, key, created=NOON) for _ in range(2)]
    s3_client(moto_url).create_bucket(Bucket="late-bucket",
                                      CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    sink_export_batch(sink)
    sink_export_batch(sink)

    listed = s3_client(moto_url).list_objects_v2(Bucket="late-bucket")["Contents"]
    assert sorted(item["Key"] for item in listed) == sorted([
        f"2026/03/10/{first[0].pk}-{first[1].pk}.jsonl", f"2026/03/10/{later[0].pk}-{later[1].pk}.jsonl"])


def test_langfuse_sends_basic_auth_of_the_public_and_secret_key(org, key, langfuse, system_actor):
    make_log(org, key)
    sink = sink_create(org=org, type="langfuse", actor=system_actor,
                       config={"url": langfuse.url, "public_key": "pk-lf-test", "secret_key": "wrong"})

    sink_export_batch(sink)
    sink.refresh_from_db()

    assert langfuse.problems == ["bad credentials"]
    assert (sink.last_exported_id, sink.consecutive_failures) == (0, 1)
