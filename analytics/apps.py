from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _partitions_ahead(**kwargs) -> None:
    from analytics.partitions import partitions_ensure

    partitions_ensure()


class AnalyticsConfig(AppConfig):
    name = "analytics"
    verbose_name = "Request log and exports"

    def ready(self) -> None:
        # Each migrate makes the request log's months ahead too, should its beat task not run.
        post_migrate.connect(_partitions_ahead, sender=self)
