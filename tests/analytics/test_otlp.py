"""The ``otlp`` sink: OTLP/HTTP traces in the GenAI conventions, through the outbox. The collector
is a fake that decodes the protobuf with opentelemetry-proto."""

import base64
import json
from collections import Counter
from io import StringIO

import pytest
from django.core.management import call_command

from analytics.exporters import redacted_config
from analytics.exporters.otlp import traces_url
from analytics.models import ExportSink
from analytics.services import sink_create, sink_export_batch
from analytics.tasks import export_all_sinks
from tests.analytics.factories import make_log
from tests.analytics.fakes import FakeOtlpCollector

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_sinks", "no_lag")]

STEPS = 24
RUN = "run-research-42"
AUTHORIZATION = "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-1").decode()


def attributes_of(span) -> dict:
    def value(any_value):
        kind = any_value.WhichOneof("value")
        if kind == "array_value":
            return [value(item) for item in any_value.array_value.values]
        return getattr(any_value, kind)

    return {attribute.key: value(attribute.value) for attribute in span.attributes}


def run_of_24_steps(org, key) -> list:
    """An agent's run: 23 calls that ask for a tool, then an answer; step 5 fell back."""
    rows = []
    for step in range(1, STEPS + 1):
        fields = {"run_id": RUN, "model": "gpt-4o", "deployment": "gpt4o-primary", "provider": "openai",
                  "prompt_tokens": 100 + step, "completion_tokens": 10 + step}
        if step < STEPS:
            fields |= {"finish_reason": "tool_calls",
                       "tool_calls": [{"name": "search", "arguments": json.dumps({"query": f"q{step}"})}]}
        if step == 5:
            fields["attempts"] = [{"deployment": "gpt4o-primary", "outcome": "http_500", "latency_ms": 40},
                                  {"deployment": "gpt4o-backup", "outcome": "ok", "latency_ms": 150}]
            fields["deployment"] = "gpt4o-backup"
        rows.append(make_log(org, key, **fields))
    return rows


def test_a_24_step_run_reaches_the_collector_as_one_trace_exactly_once_after_three_failures(org, key,
                                                                                            system_actor):
    rows = run_of_24_steps(org, key)
    with FakeOtlpCollector("/api/public/otel", headers={"Authorization": AUTHORIZATION}) as collector:
        sink = sink_create(org=org, type="otlp", actor=system_actor,
                           config={"url": collector.url + "/api/public/otel",
                                   "headers": {"Authorization": AUTHORIZATION}})
        collector.fail_next = 3
        sent = []
        for _ in range(3):
            sent.append(sink_export_batch(sink))
            sink.refresh_from_db()
        failing = (sink.consecutive_failures, sink.healthy, sink.last_error)
        sent.append(sink_export_batch(sink))
        # Nothing more goes out, however often the export runs again.
        sent.append(sink_export_batch(sink))
        export_all_sinks()
        sink.refresh_from_db()

    assert collector.problems == []
    assert sent == [0, 0, 0, STEPS, 0]
    assert failing[:2] == (3, False) and "503" in failing[2]
    assert (sink.healthy, sink.last_exported_id) == (True, rows[-1].pk)
    assert collector.requests == 4

    spans = collector.spans
    assert len({span.span_id for span in spans}) == len(spans)
    assert {span.trace_id for span in spans} == {spans[0].trace_id}
    operations = Counter(attributes_of(span)["gen_ai.operation.name"] for span in spans)
    assert operations == {"invoke_agent": 1, "chat": STEPS, "execute_tool": STEPS - 1}
    (root,) = [span for span in spans if span.name == "invoke_agent"]
    assert root.parent_span_id == b""
    assert attributes_of(root)["gen_ai.conversation.id"] == RUN
    chats = [span for span in spans if span.name.startswith("chat")]
    assert {span.parent_span_id for span in chats} == {root.span_id}
    assert root.start_time_unix_nano <= min(span.start_time_unix_nano for span in chats)
    assert root.end_time_unix_nano == max(span.end_time_unix_nano for span in chats)
    by_request = {attributes_of(span)["nemo.request_id"]: span for span in chats}
    assert set(by_request) == {row.request_id for row in rows}
    for step, row in enumerate(rows, start=1):
        span = by_request[row.request_id]
        attributes = attributes_of(span)
        assert span.name == "chat gpt-4o"
        assert {name: attributes[name] for name in (
            "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons", "gen_ai.conversation.id",
            "nemo.cost_usd")} == {
            "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100 + step, "gen_ai.usage.output_tokens": 10 + step,
            "gen_ai.response.finish_reasons": ["tool_calls" if step < STEPS else "stop"],
            "gen_ai.conversation.id": RUN, "nemo.cost_usd": 0.00015}
        assert [(event.name, attributes_of(event)["nemo.outcome"]) for event in span.events] == [
            ("attempt", attempt["outcome"]) for attempt in row.attempts]
    assert len(by_request[rows[4].request_id].events) == 2
    tools = [span for span in spans if span.name.startswith("execute_tool")]
    assert {span.name for span in tools} == {"execute_tool search"}
    assert {span.parent_span_id for span in tools} == {root.span_id}
    assert all(attributes_of(span)["gen_ai.tool.name"] == "search" for span in tools)
    assert {attribute.key: attribute.value.string_value
            for attribute in collector.resources[0].attributes} == {"service.name": "nemo-router"}


def test_a_failed_call_is_an_error_span_and_a_call_outside_a_run_a_trace_of_its_own(org, key, system_actor):
    failed = make_log(org, key, status=502, error="every deployment failed", deployment="", finish_reason="",
                      attempts=[{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 500}])
    served = make_log(org, key)
    with FakeOtlpCollector() as collector:
        sink = sink_create(org=org, type="otlp", actor=system_actor, config={"url": collector.url})
        assert sink_export_batch(sink) == 2

    assert collector.problems == []
    spans = {attributes_of(span)["nemo.request_id"]: span for span in collector.spans}
    assert set(spans) == {failed.request_id, served.request_id}
    assert spans[failed.request_id].trace_id != spans[served.request_id].trace_id
    assert all(span.parent_span_id == b"" for span in spans.values())
    error = spans[failed.request_id]
    assert (error.status.code, error.status.message) == (2, "every deployment failed")
    assert attributes_of(error)["error.type"] == "502"
    assert "gen_ai.response.model" not in attributes_of(error)
    assert spans[served.request_id].status.code == 1


def test_the_traces_endpoint_is_appended_unless_given():
    assert traces_url("https://cloud.langfuse.com/api/public/otel") == \
        "https://cloud.langfuse.com/api/public/otel/v1/traces"
    assert traces_url("http://phoenix:6006/v1/traces") == "http://phoenix:6006/v1/traces"
    assert traces_url("https://collector.example.com/") == "https://collector.example.com/v1/traces"


def test_addsink_takes_headers_and_they_are_redacted(org):
    out = StringIO()
    call_command("addsink", "--org", org.slug, "--type", "otlp", "--url", "https://otlp.example.com/api/public/otel",
                 "--header", f"Authorization={AUTHORIZATION}", "--header", "dd-otlp-source=llmobs", stdout=out)

    sink = ExportSink.objects.get(pk=int(out.getvalue().strip()))
    assert sink.config == {"url": "https://otlp.example.com/api/public/otel",
                           "headers": {"Authorization": AUTHORIZATION, "dd-otlp-source": "llmobs"}}
    assert redacted_config(sink)["headers"] == {"Authorization": f"…{AUTHORIZATION[-4:]}", "dd-otlp-source": "…mobs"}


@pytest.mark.parametrize("header, complaint", [
    ("no-equals-sign", "NAME=VALUE"),
    ("Content-Type=text/plain", "not a header"),
    ("bad name=x", "not a header"),
])
def test_addsink_refuses_a_malformed_header(org, header, complaint):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match=complaint):
        call_command("addsink", "--org", org.slug, "--type", "otlp", "--url", "https://otlp.example.com",
                     "--header", header, stdout=StringIO())
    assert ExportSink.objects.count() == 0
