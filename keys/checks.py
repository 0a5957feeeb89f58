"""Deployment checks of our own (``manage.py check --deploy``)."""

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def check_secret_key_is_not_the_development_key(app_configs, **kwargs) -> list[Error]:
    # Django's own check (security.W009) passes it: it is long and varied, only public.
    if settings.SECRET_KEY != settings.NEMO_DEVELOPMENT_SECRET_KEY:
        return []
    return [
        Error(
            "SECRET_KEY is the public development key: anyone who reads the source can compute the "
            "stored hash of any API key.",
            hint="Set SECRET_KEY to a long random value before issuing keys; keys and tokens issued "
            "under another key stop working when it changes.",
            id="nemo.E001",
        )
    ]
