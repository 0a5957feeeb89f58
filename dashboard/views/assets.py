"""Files browsers ask for at fixed paths, outside /static/."""

from functools import cache

from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

FAVICON = "img/favicon.ico"


@cache
def _favicon() -> bytes:
    with open(finders.find(FAVICON), "rb") as file:
        return file.read()


@require_safe
@cache_control(public=True, max_age=86_400)
def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``, which every browser asks for on every site (the admin's pages too)."""
    return HttpResponse(_favicon(), content_type="image/x-icon")
