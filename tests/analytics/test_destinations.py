"""Where a sink may send an org's rows: public addresses only, over HTTPS in production, unless
the operator allows private ones (NEMO_SINK_ALLOW_PRIVATE). Checked when a sink is created, and
again at each connection after DNS resolution: the rows of an org must never reach an internal
service because a tenant typed its address, or a name that points at it."""

from io import StringIO

import boto3
import httpcore
import pytest
from django.core.management import CommandError, call_command
from moto.server import ThreadedMotoServer

from analytics.exporters import destinations
from analytics.models import ExportSink
from analytics.services import sink_create, sink_export_batch
from tests.analytics.factories import make_log
from tests.analytics.fakes import FakeDatadog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_lag")]

# A public address (nothing here connects to it) and a name to stand for it.
PUBLIC_ADDRESS = "93.184.215.14"
SINK_HOST = "intake.sink.example"


@pytest.fixture
def datadog():
    with FakeDatadog() as fake:
        yield fake


@pytest.fixture
def development(settings):
    """DEBUG on: plain http is allowed, private addresses are not."""
    settings.DEBUG = True
    settings.NEMO_SINK_ALLOW_PRIVATE = False


@pytest.fixture
def resolving(monkeypatch):
    """``resolving({name: [address, ...]})``: DNS answers for these names; each lookup is recorded."""
    lookups: list[str] = []

    def answer(table: dict[str, list[str]]) -> list[str]:
        real = destinations.addresses_of

        def addresses_of(host: str, port: int) -> list[str]:
            lookups.append(host)
            return table[host] if host in table else real(host, port)

        monkeypatch.setattr(destinations, "addresses_of", addresses_of)
        return lookups

    return answer


@pytest.fixture
def connections(monkeypatch):
    """The addresses the exporter connects to; every connection fails (no network here)."""
    connected: list[str] = []

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        connected.append(host)
        raise httpcore.ConnectError("no network in tests")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    return connected


def stored_sink(org, url: str, api_key: str = FakeDatadog.api_key) -> ExportSink:
    """A sink as stored before these rules (or whose name has pointed elsewhere since)."""
    return ExportSink.objects.create(org=org, type="datadog", config={"url": url, "api_key": api_key})


def export_once(sink: ExportSink) -> tuple[int, str]:
    sent = sink_export_batch(sink)
    sink.refresh_from_db()
    return sent, sink.last_error


@pytest.mark.usefixtures("development")
def test_a_fake_on_127_0_0_1_gets_no_rows_when_private_addresses_are_not_allowed(org, key, datadog):
    make_log(org, key)

    sent, error = export_once(stored_sink(org, datadog.url))

    assert (sent, datadog.requests) == (0, 0)
    assert error == "ExportError: 127.0.0.1 is not a public address; a sink may only send to public addresses"


def test_a_fake_on_127_0_0_1_gets_the_rows_when_the_operator_allows_private_addresses(org, key, datadog, settings):
    settings.NEMO_SINK_ALLOW_PRIVATE = True
    make_log(org, key)

    sent, error = export_once(stored_sink(org, datadog.url))

    assert (sent, error, len(datadog.entries)) == (1, "", 1)


@pytest.mark.usefixtures("development")
def test_localhost_is_refused_at_send_time_once_resolved(org, key, datadog):
    make_log(org, key)
    port = datadog.url.rsplit(":", 1)[1]

    sent, error = export_once(stored_sink(org, f"http://localhost:{port}"))

    assert (sent, datadog.requests) == (0, 0)
    assert "localhost resolves to an address that is not public" in error


@pytest.mark.usefixtures("development")
def test_a_name_with_any_private_address_among_its_answers_is_refused(org, key, datadog, resolving):
    resolving({SINK_HOST: [PUBLIC_ADDRESS, "127.0.0.1"]})
    make_log(org, key)
    port = datadog.url.rsplit(":", 1)[1]

    sent, error = export_once(stored_sink(org, f"http://{SINK_HOST}:{port}"))

    assert (sent, datadog.requests) == (0, 0)
    assert f"{SINK_HOST} resolves to an address that is not public" in error


def test_the_connection_goes_to_the_address_that_was_checked_not_to_a_second_lookup(
    org, key, monkeypatch, connections
):
    # DNS rebinding: the first answer is public, every later one 127.0.0.1.
    answers = iter([[PUBLIC_ADDRESS]])
    monkeypatch.setattr(destinations, "addresses_of", lambda host, port: next(answers, ["127.0.0.1"]))
    make_log(org, key)

    export_once(stored_sink(org, f"https://{SINK_HOST}"))

    assert connections == [PUBLIC_ADDRESS]


def test_over_https_the_certificate_is_checked_against_the_name_not_the_address(org, key, resolving, monkeypatch):
    resolving({SINK_HOST: [PUBLIC_ADDRESS]})
    handshakes: list[str] = []

    class Stream:
        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            handshakes.append(server_hostname)
            raise httpcore.ConnectError("no TLS in tests")

        def close(self):
            pass

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", lambda self, host, port, **options: Stream())
    make_log(org, key)

    export_once(stored_sink(org, f"https://{SINK_HOST}"))

    assert handshakes == [SINK_HOST]


def test_plain_http_is_refused_at_send_time_when_debug_is_off(org, key, resolving, connections):
    resolving({SINK_HOST: [PUBLIC_ADDRESS]})
    make_log(org, key)

    sent, error = export_once(stored_sink(org, f"http://{SINK_HOST}"))

    assert (sent, connections) == (0, [])
    assert error == "ExportError: a sink must use https, not http"


@pytest.mark.usefixtures("development")
def test_the_cloud_metadata_address_is_refused(org, key, connections):
    make_log(org, key)

    sent, error = export_once(stored_sink(org, "http://169.254.169.254"))

    assert (sent, connections) == (0, [])
    assert "169.254.169.254 is not a public address" in error


def test_an_internal_services_answer_is_never_stored_on_the_sink(org, key, datadog, settings):
    settings.NEMO_SINK_ALLOW_PRIVATE = True
    make_log(org, key)

    sent, error = export_once(stored_sink(org, datadog.url, api_key="not-the-key"))

    assert sent == 0
    assert error == "ExportError: Datadog answered 401 Unauthorized"


@pytest.fixture
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.mark.usefixtures("development")
def test_an_s3_compatible_endpoint_on_127_0_0_1_gets_no_object(org, key, moto_url):
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="eu-west-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket="refused-trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    make_log(org, key)
    sink = ExportSink.objects.create(org=org, type="s3", config={
        "url": moto_url, "bucket": "refused-trail", "region": "eu-west-1", "access_key_id": "testing",
        "secret_access_key": "testing"})

    sent, error = export_once(sink)

    assert sent == 0
    assert s3.list_objects_v2(Bucket="refused-trail").get("Contents", []) == []
    assert error == "ExportError: 127.0.0.1 is not a public address; a sink may only send to public addresses"


REFUSED_URLS = [
    ("https://127.0.0.1", "not a public address"),
    ("https://127.1:8443", "not a public address"),
    ("https://2130706433", "not a public address"),
    ("https://10.1.2.3", "not a public address"),
    ("https://192.168.0.10", "not a public address"),
    ("https://169.254.169.254/latest", "not a public address"),
    ("https://0.0.0.0", "not a public address"),
    ("https://[::1]", "not a public address"),
    ("https://[::ffff:127.0.0.1]", "not a public address"),
    ("https://[fd00::1]", "not a public address"),
    ("https://[fec0::1]", "not a public address"),
    ("https://[64:ff9b::a00:1]", "not a public address"),
    ("https://[2002:7f00:1::1]", "not a public address"),
    ("https://100.64.0.1", "not a public address"),
    ("https://224.0.0.1", "not a public address"),
    ("https://localhost:3000", "not a public address"),
    ("https://api.localhost", "not a public address"),
    ("https://metadata.google.internal", "not a public address"),
    ("http://langfuse.example.com", "must use https"),
]


@pytest.mark.parametrize(("url", "complaint"), REFUSED_URLS)
def test_a_sink_on_an_address_it_may_not_reach_is_refused_when_created(org, system_actor, url, complaint):
    with pytest.raises(ValueError, match=complaint):
        sink_create(org=org, type="langfuse", actor=system_actor,
                    config={"url": url, "public_key": "pk", "secret_key": "sk"})
    assert not ExportSink.objects.exists()


def test_addsink_names_why_it_refuses_a_private_address(org):
    with pytest.raises(CommandError, match="10.0.0.8 is not a public address"):
        call_command("addsink", "--org", org.slug, "--type", "datadog", "--api-key", "k",
                     "--url", "https://10.0.0.8", stdout=StringIO())
    assert not ExportSink.objects.exists()


def test_the_dashboard_names_why_it_refuses_plain_http(org, owner, client):
    client.force_login(owner)

    response = client.post("/settings/sinks/new/", {"type": "datadog", "api_key": "k",
                                                    "url": "http://intake.example.com"})

    assert response.status_code == 400
    assert "url must use https" in response.content.decode()
    assert not ExportSink.objects.exists()


def test_a_private_address_is_accepted_when_the_operator_allows_it(org, system_actor, settings):
    settings.NEMO_SINK_ALLOW_PRIVATE = True

    sink = sink_create(org=org, type="datadog", actor=system_actor,
                       config={"url": "http://10.0.0.8:8126", "api_key": "k"})

    assert sink.config["url"] == "http://10.0.0.8:8126"


def test_a_public_name_over_https_is_accepted_without_resolving_it(org, system_actor, resolving):
    lookups = resolving({})

    sink = sink_create(org=org, type="datadog", actor=system_actor,
                       config={"url": "https://http-intake.logs.datadoghq.eu", "api_key": "k"})

    assert (sink.config["url"], lookups) == ("https://http-intake.logs.datadoghq.eu", [])
