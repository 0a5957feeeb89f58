"""Per-org export sinks: which exporter serves which sink type."""

from analytics.exporters.base import Exporter, ExportError
from analytics.exporters.datadog import DatadogExporter
from analytics.exporters.langfuse import LangfuseExporter
from analytics.exporters.otlp import OtlpExporter
from analytics.exporters.s3 import S3Exporter
from analytics.models import ExportSink

EXPORTERS: dict[str, type[Exporter]] = {
    ExportSink.Type.LANGFUSE: LangfuseExporter,
    ExportSink.Type.DATADOG: DatadogExporter,
    ExportSink.Type.S3: S3Exporter,
    ExportSink.Type.OTLP: OtlpExporter,
}

__all__ = ["EXPORTERS", "ExportError", "Exporter", "clean_config", "exporter_for", "redacted_config"]


def _exporter_class(sink_type: str) -> type[Exporter]:
    try:
        return EXPORTERS[sink_type]
    except KeyError as exc:
        raise ValueError(f"unknown sink type {sink_type!r}; use one of {', '.join(EXPORTERS)}") from exc


def clean_config(sink_type: str, config: dict) -> dict:
    """The config a sink of this type keeps, or ValueError naming what is wrong."""
    return _exporter_class(sink_type).clean_config(config)


def redacted_config(sink: ExportSink) -> dict:
    return _exporter_class(sink.type).redact(sink.config)


def exporter_for(sink: ExportSink) -> Exporter:
    return _exporter_class(sink.type)(sink)
