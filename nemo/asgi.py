"""The ASGI entry point: ``/v1/*`` goes to the gateway's own app, everything else to Django.

The gateway uses Django's models and settings but never Django's request cycle, which costs
more than the whole proxy step (see DESIGN.md, "The hot path").
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nemo.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

from gateway.app import GatewayApp  # noqa: E402

application = GatewayApp(fallback=django_application)
