"""`manage.py addsink`, as the contract describes it."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from analytics.models import ExportSink

pytestmark = pytest.mark.django_db


def addsink(*args) -> str:
    out = StringIO()
    call_command("addsink", *args, stdout=out)
    return out.getvalue().strip()


def test_it_adds_a_langfuse_sink_and_prints_its_id(org):
    printed = addsink("--org", org.slug, "--type", "langfuse", "--url", "https://lf.example.com",
                      "--public-key", "pk-1", "--secret-key", "sk-1")

    sink = ExportSink.objects.get(pk=int(printed))
    assert (sink.org, sink.type, sink.config) == (
        org, "langfuse", {"url": "https://lf.example.com", "public_key": "pk-1", "secret_key": "sk-1"})


def test_it_adds_an_s3_sink(org):
    printed = addsink("--org", org.slug, "--type", "s3", "--bucket", "trail", "--prefix", "logs",
                      "--region", "eu-west-1")

    assert ExportSink.objects.get(pk=int(printed)).config == {
        "bucket": "trail", "prefix": "logs", "region": "eu-west-1"}


def test_it_adds_a_datadog_sink_for_a_datadog_site(org):
    printed = addsink("--org", org.slug, "--type", "datadog", "--api-key", "dd-1",
                      "--url", "https://http-intake.logs.datadoghq.eu")

    assert ExportSink.objects.get(pk=int(printed)).config == {
        "api_key": "dd-1", "url": "https://http-intake.logs.datadoghq.eu"}


@pytest.mark.parametrize("args, complaint", [
    (["--type", "langfuse", "--public-key", "pk"], "needs --secret-key"),
    (["--type", "datadog"], "needs --api-key"),
    (["--type", "s3", "--bucket", "b"], "needs --region"),
    (["--type", "datadog", "--api-key", "k", "--bucket", "b"], "does not take --bucket"),
    (["--type", "datadog", "--api-key", "k", "--url", "intake.example.com"], "url must be an http"),
])
def test_it_names_what_a_sink_type_needs(org, args, complaint):
    with pytest.raises(CommandError, match=complaint):
        addsink("--org", org.slug, *args)
    assert ExportSink.objects.count() == 0


def test_it_refuses_an_unknown_org():
    with pytest.raises(CommandError, match="no organization"):
        addsink("--org", "nope", "--type", "datadog", "--api-key", "k")
