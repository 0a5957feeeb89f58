"""The Celery app. Without a broker (the embedded default) tasks run eagerly in-process."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nemo.settings")

app = Celery("nemo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
