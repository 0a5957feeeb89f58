"""S3 (or any S3-compatible store): one JSON Lines object per batch, through boto3.

The object key is made of the batch's first and last row ids, so a retried batch (the service
pins its range) overwrites its own object instead of adding a second copy.
"""

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from analytics.exporters import destinations
from analytics.exporters.base import Exporter, ExportError, dumps
from analytics.models import RequestLog
from analytics.serializers import log_row_dict


def object_key(prefix: str, rows: list[RequestLog]) -> str:
    first = rows[0]
    path = f"{first.created:%Y/%m/%d}/{first.pk}-{rows[-1].pk}.jsonl"
    prefix = prefix.strip("/")
    return f"{prefix}/{path}" if prefix else path


def _check_destination(request, **kwargs) -> None:
    """botocore's before-send: a custom endpoint is checked right before each request, retries too
    (botocore resolves the name itself, so this cannot pin the address it connects to)."""
    try:
        destinations.check_url(request.url)
    except destinations.DestinationRefused as exc:
        raise ExportError(str(exc)) from exc
    except OSError as exc:
        raise ExportError(f"could not resolve the S3 endpoint: {exc}") from exc


class S3Exporter(Exporter):
    type = "s3"
    required = ("bucket", "region")
    optional = ("prefix", "url", "access_key_id", "secret_access_key")
    secrets = ("secret_access_key",)

    def send(self, rows: list[RequestLog]) -> None:
        body = b"".join(dumps(log_row_dict(row, bodies=True)) + b"\n" for row in rows)
        key = object_key(self.config.get("prefix", ""), rows)
        try:
            self.client().put_object(
                Bucket=self.config["bucket"], Key=key, Body=body, ContentType="application/x-ndjson"
            )
        except (BotoCoreError, ClientError) as exc:
            raise ExportError(f"S3 put_object of {key}: {exc}") from exc

    def client(self):
        # Without access keys, boto3's own chain applies (environment, instance role).
        options = {
            "region_name": self.config["region"],
            "config": Config(
                connect_timeout=10, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                # S3-compatible stores behind a custom URL usually only speak path-style.
                s3={"addressing_style": "path"} if self.config.get("url") else None,
            ),
        }
        if self.config.get("url"):
            options["endpoint_url"] = self.config["url"]
        if self.config.get("access_key_id"):
            options["aws_access_key_id"] = self.config["access_key_id"]
            options["aws_secret_access_key"] = self.config.get("secret_access_key")
        client = boto3.client("s3", **options)
        if self.config.get("url"):
            client.meta.events.register("before-send.s3", _check_destination)
        return client
