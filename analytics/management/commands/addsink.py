from django.core.management.base import BaseCommand, CommandError

from analytics.exporters import EXPORTERS
from analytics.exporters.otlp import parse_headers
from analytics.models import ExportSink
from analytics.services import sink_create
from keys.audit import Actor
from keys.selectors import organization_by_slug

# Each option sets the config key of the same name.
CONFIG_OPTIONS = (
    "url", "public_key", "secret_key", "api_key", "bucket", "prefix", "region", "access_key_id", "secret_access_key",
)


def _flag(option: str) -> str:
    return "--header" if option == "headers" else "--" + option.replace("_", "-")


class Command(BaseCommand):
    help = "Adds an export sink (Langfuse, Datadog, S3 or an OTLP collector) to an org and prints its id."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", required=True, help="The org's slug.")
        parser.add_argument("--type", required=True, choices=ExportSink.Type.values)
        parser.add_argument("--url", help="The service's endpoint (self-hosted Langfuse, a Datadog site, "
                                          "an S3-compatible store).")
        parser.add_argument("--public-key", help="Langfuse public key.")
        parser.add_argument("--secret-key", help="Langfuse secret key.")
        parser.add_argument("--api-key", help="Datadog API key.")
        parser.add_argument("--bucket", help="S3 bucket.")
        parser.add_argument("--prefix", help="S3 key prefix.")
        parser.add_argument("--region", help="S3 region.")
        parser.add_argument("--access-key-id", help="S3 access key id (default: boto3's credential chain).")
        parser.add_argument("--secret-access-key", help="S3 secret access key.")
        parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                            help="A header the OTLP sink sends with every request (repeatable).")

    def handle(self, *args, **opts) -> None:
        org = organization_by_slug(opts["org"])
        if org is None:
            raise CommandError(f"no organization with slug {opts['org']!r}")
        sink_type = opts["type"]
        exporter = EXPORTERS[sink_type]
        config = {option: opts[option] for option in CONFIG_OPTIONS if opts.get(option) not in (None, "")}
        if opts["header"]:
            try:
                config["headers"] = parse_headers(opts["header"])
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        foreign = [option for option in config if option not in (*exporter.required, *exporter.optional)]
        if foreign:
            raise CommandError(f"a {sink_type} sink does not take {', '.join(map(_flag, foreign))}")
        missing = [option for option in exporter.required if option not in config]
        if missing:
            raise CommandError(f"a {sink_type} sink needs {', '.join(map(_flag, missing))}")
        try:
            sink = sink_create(org=org, type=sink_type, config=config, actor=Actor.system("command:addsink"))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(sink.pk))
